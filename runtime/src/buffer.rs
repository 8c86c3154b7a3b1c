//! Device buffers: host -> device from an [`hlo::Literal`], device -> host back into one.
//!
//! The plugin does not check element types when byte sizes match, so every element type is
//! mapped explicitly here and anything else is refused.

use crate::api::pjrt_call;
use crate::client::{Client, ClientInner};
use crate::error::{Error, Result};
use crate::ffi::{self, PjrtStruct};
use hlo::{DType, Literal, Shape};
use std::sync::Arc;

/// The PJRT element type of a [`DType`].
pub fn to_pjrt_type(d: DType) -> ffi::PJRT_Buffer_Type {
    match d {
        DType::Pred => ffi::PJRT_Buffer_Type_PRED,
        DType::S32 => ffi::PJRT_Buffer_Type_S32,
        DType::S64 => ffi::PJRT_Buffer_Type_S64,
        DType::U32 => ffi::PJRT_Buffer_Type_U32,
        DType::U64 => ffi::PJRT_Buffer_Type_U64,
        DType::F16 => ffi::PJRT_Buffer_Type_F16,
        DType::Bf16 => ffi::PJRT_Buffer_Type_BF16,
        DType::F32 => ffi::PJRT_Buffer_Type_F32,
        DType::F64 => ffi::PJRT_Buffer_Type_F64,
    }
}

/// The [`DType`] of a PJRT element type, if we model it.
pub fn from_pjrt_type(t: ffi::PJRT_Buffer_Type) -> Result<DType> {
    DType::ALL
        .into_iter()
        .find(|d| to_pjrt_type(*d) == t)
        .ok_or(Error::UnsupportedElementType(t))
}

/// An array on one device. Dropping it frees the device memory.
pub struct Buffer {
    pub(crate) client: Arc<ClientInner>,
    pub(crate) raw: *mut ffi::PJRT_Buffer,
}

// SAFETY: PJRT buffers may be used from any thread.
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

impl Drop for Buffer {
    fn drop(&mut self) {
        let mut a = ffi::PJRT_Buffer_Destroy_Args::new();
        a.buffer = self.raw;
        if let Err(e) = pjrt_call!(self.client.api, PJRT_Buffer_Destroy, &mut a) {
            tracing::warn!("{e}");
        }
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.is_deleted(), self.shape()) {
            (Ok(false), Ok(shape)) => {
                write!(f, "Buffer({shape} on device {:?})", self.device_id().ok())
            }
            _ => write!(f, "Buffer(deleted)"),
        }
    }
}

impl Client {
    /// Copies `literal` to the addressable device with index `device` (see
    /// [`Client::addressable_devices`]) and waits until the host data is no longer needed.
    pub fn upload(&self, literal: &Literal, device: usize) -> Result<Buffer> {
        let inner = &self.inner;
        let dev = inner.addressable.get(device).ok_or_else(|| {
            Error::invalid(format!(
                "device index {device} out of range: the client has {} addressable devices",
                inner.addressable.len()
            ))
        })?;
        let shape = literal.shape();
        if shape.dims.iter().any(|&d| d < 0) {
            return Err(Error::invalid(format!("negative dimension in {shape}")));
        }
        if literal.bytes().len() != shape.size_in_bytes() {
            return Err(Error::invalid(format!(
                "literal {shape} holds {} bytes, expected {}",
                literal.bytes().len(),
                shape.size_in_bytes()
            )));
        }
        let mut a = ffi::PJRT_Client_BufferFromHostBuffer_Args::new();
        a.client = inner.raw;
        a.data = literal.bytes().as_ptr() as *const _;
        a.type_ = to_pjrt_type(shape.dtype);
        a.dims = shape.dims.as_ptr();
        a.num_dims = shape.dims.len();
        a.host_buffer_semantics = ffi::PJRT_HostBufferSemantics_kImmutableUntilTransferCompletes;
        a.device = dev.raw;
        pjrt_call!(inner.api, PJRT_Client_BufferFromHostBuffer, &mut a)?;
        let buffer = Buffer {
            client: inner.clone(),
            raw: a.buffer,
        };
        // `literal` must stay untouched until the plugin is done reading it.
        inner.api.await_event(a.done_with_host_buffer)?;
        Ok(buffer)
    }

    /// Copies a device buffer back to the host.
    pub fn download(&self, buffer: &Buffer) -> Result<Literal> {
        buffer.to_literal()
    }
}

impl Buffer {
    fn api(&self) -> &'static crate::api::Api {
        self.client.api
    }

    /// True once the buffer was deleted or donated to an execution.
    pub fn is_deleted(&self) -> Result<bool> {
        let mut a = ffi::PJRT_Buffer_IsDeleted_Args::new();
        a.buffer = self.raw;
        pjrt_call!(self.api(), PJRT_Buffer_IsDeleted, &mut a)?;
        Ok(a.is_deleted)
    }

    /// Fails with [`Error::BufferDeleted`] if the buffer can no longer be used.
    pub(crate) fn ensure_live(&self, what: &str) -> Result<()> {
        if self.is_deleted()? {
            Err(Error::BufferDeleted(what.to_string()))
        } else {
            Ok(())
        }
    }

    pub fn dtype(&self) -> Result<DType> {
        self.ensure_live("queried for its element type")?;
        let mut a = ffi::PJRT_Buffer_ElementType_Args::new();
        a.buffer = self.raw;
        pjrt_call!(self.api(), PJRT_Buffer_ElementType, &mut a)?;
        from_pjrt_type(a.type_)
    }

    pub fn dims(&self) -> Result<Vec<i64>> {
        self.ensure_live("queried for its dimensions")?;
        let mut a = ffi::PJRT_Buffer_Dimensions_Args::new();
        a.buffer = self.raw;
        pjrt_call!(self.api(), PJRT_Buffer_Dimensions, &mut a)?;
        Ok(unsafe { crate::client::raw_slice(a.dims, a.num_dims) })
    }

    pub fn shape(&self) -> Result<Shape> {
        Ok(Shape::new(self.dtype()?, self.dims()?))
    }

    /// Global id of the device holding the buffer.
    pub fn device_id(&self) -> Result<i32> {
        let mut a = ffi::PJRT_Buffer_Device_Args::new();
        a.buffer = self.raw;
        pjrt_call!(self.api(), PJRT_Buffer_Device, &mut a)?;
        self.client
            .device_by_raw(a.device)
            .map(|d| d.info.id)
            .ok_or_else(|| Error::invalid("buffer lives on a device unknown to its client"))
    }

    /// Waits until the buffer's contents are computed; returns the computation's error if
    /// it failed.
    pub fn block_until_ready(&self) -> Result<()> {
        self.ensure_live("awaited")?;
        let mut a = ffi::PJRT_Buffer_ReadyEvent_Args::new();
        a.buffer = self.raw;
        pjrt_call!(self.api(), PJRT_Buffer_ReadyEvent, &mut a)?;
        self.api().await_event(a.event)
    }

    /// Copies the buffer to the host (waits for it to be computed first).
    pub fn to_literal(&self) -> Result<Literal> {
        self.ensure_live("read back to the host")?;
        let shape = self.shape()?;
        let mut bytes = vec![0u8; shape.size_in_bytes()];
        // Ask for the dense row-major layout explicitly: a device's own layout may be tiled.
        let minor_to_major: Vec<i64> = (0..shape.rank() as i64).rev().collect();
        let mut tiled = ffi::PJRT_Buffer_MemoryLayout_Tiled::new();
        tiled.minor_to_major = minor_to_major.as_ptr();
        tiled.minor_to_major_size = minor_to_major.len();
        let mut layout = ffi::PJRT_Buffer_MemoryLayout::new();
        layout.layout.tiled = tiled;
        layout.type_ = ffi::PJRT_Buffer_MemoryLayout_Type_Tiled;
        let mut a = ffi::PJRT_Buffer_ToHostBuffer_Args::new();
        a.src = self.raw;
        a.host_layout = &mut layout;
        a.dst = bytes.as_mut_ptr() as *mut _;
        a.dst_size = bytes.len();
        pjrt_call!(self.api(), PJRT_Buffer_ToHostBuffer, &mut a)?;
        self.api().await_event(a.event)?;
        Literal::from_bytes(shape, bytes).map_err(|e| Error::invalid(e.to_string()))
    }

    /// Frees the device memory now (the handle stays valid and reports deleted).
    pub fn delete(&self) -> Result<()> {
        let mut a = ffi::PJRT_Buffer_Delete_Args::new();
        a.buffer = self.raw;
        pjrt_call!(self.api(), PJRT_Buffer_Delete, &mut a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dtype_maps_both_ways() {
        for d in DType::ALL {
            assert_eq!(from_pjrt_type(to_pjrt_type(d)).unwrap(), d);
        }
        assert!(from_pjrt_type(ffi::PJRT_Buffer_Type_U16).is_err());
        assert_eq!(to_pjrt_type(DType::Bf16), 13);
    }
}
