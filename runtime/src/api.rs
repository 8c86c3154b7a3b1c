//! Loading a plugin and calling its function table safely.
//!
//! A plugin is `dlopen`ed once per path for the whole process and never unloaded (plugins
//! start threads and register globals; unloading them is not supported). [`Api`] wraps the
//! `PJRT_Api` table: [`pjrt_call!`] checks that the table reaches the entry before calling it
//! and turns a returned `PJRT_Error` into [`Error::Pjrt`] with the plugin's message.

use crate::error::{Error, Result};
use crate::ffi;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// A loaded, initialised plugin. Lives for the rest of the process (`&'static`).
pub struct Api {
    table: *const ffi::PJRT_Api,
    table_size: usize,
    path: PathBuf,
    major: i32,
    minor: i32,
}

// SAFETY: the table is immutable after load and PJRT entry points are thread-safe.
unsafe impl Send for Api {}
unsafe impl Sync for Api {}

/// Calls one PJRT entry point: `pjrt_call!(api, PJRT_Client_Create, &mut args)`.
/// Fails cleanly when the plugin's table is too short or the call returns an error.
macro_rules! pjrt_call {
    ($api:expr, $f:ident, $args:expr) => {{
        let api: &$crate::api::Api = $api;
        let offset = ::std::mem::offset_of!($crate::ffi::PJRT_Api, $f);
        api.ensure_entry(stringify!($f), offset).and_then(|()| {
            // SAFETY: `ensure_entry` checked that the plugin's table reaches this field;
            // the field is read through a raw pointer without referencing the rest.
            let f = unsafe { ::std::ptr::addr_of!((*api.table()).$f).read() };
            match f {
                None => Err(api.missing(stringify!($f))),
                // SAFETY: the args struct is laid out as in the 0.81 header (layout test).
                Some(f) => api.check(stringify!($f), unsafe { f($args) }),
            }
        })
    }};
}
pub(crate) use pjrt_call;

fn registry() -> &'static Mutex<HashMap<PathBuf, &'static Api>> {
    static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, &'static Api>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Api {
    /// Loads (once per canonical path) and initialises the plugin at `path`.
    pub fn load(path: &Path) -> Result<&'static Api> {
        let canonical = path.canonicalize().map_err(|e| Error::PluginLoad {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut map = registry().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(api) = map.get(&canonical) {
            return Ok(api);
        }
        if std::env::var_os("TF_CPP_MIN_LOG_LEVEL").is_none() {
            // The plugins log every compilation at INFO level otherwise.
            std::env::set_var("TF_CPP_MIN_LOG_LEVEL", "2");
        }
        let started = std::time::Instant::now();
        let load_err = |reason: String| Error::PluginLoad {
            path: canonical.clone(),
            reason,
        };
        // SAFETY: loading a shared library runs its initialisers; PJRT plugins are built for
        // exactly this use.
        let lib =
            unsafe { libloading::Library::new(&canonical) }.map_err(|e| load_err(e.to_string()))?;
        let table = {
            // SAFETY: `GetPjrtApi` is the documented entry point of every PJRT plugin.
            let get: libloading::Symbol<unsafe extern "C" fn() -> *const ffi::PJRT_Api> = unsafe {
                lib.get(b"GetPjrtApi\0")
            }
            .map_err(|e| load_err(format!("not a PJRT plugin (no GetPjrtApi symbol): {e}")))?;
            unsafe { get() }
        };
        // Never unload: the table and the plugin's threads live as long as the process.
        std::mem::forget(lib);
        if table.is_null() {
            return Err(load_err("GetPjrtApi returned null".into()));
        }
        // SAFETY: every version of the table starts with struct_size, extension_start and
        // pjrt_api_version.
        let table_size = unsafe { std::ptr::addr_of!((*table).struct_size).read() };
        let version_end = std::mem::offset_of!(ffi::PJRT_Api, pjrt_api_version)
            + std::mem::size_of::<ffi::PJRT_Api_Version>();
        if table_size < version_end {
            return Err(load_err(format!(
                "function table is only {table_size} bytes"
            )));
        }
        let version = unsafe { std::ptr::addr_of!((*table).pjrt_api_version).read() };
        let api: &'static Api = Box::leak(Box::new(Api {
            table,
            table_size,
            path: canonical.clone(),
            major: version.major_version,
            minor: version.minor_version,
        }));
        if api.major != ffi::HEADER_API_MAJOR {
            return Err(load_err(format!(
                "PJRT C API {}.{} is incompatible with the {}.{} declarations of this build",
                api.major,
                api.minor,
                ffi::HEADER_API_MAJOR,
                ffi::HEADER_API_MINOR
            )));
        }
        api.ensure_all_entries()?;
        let mut args = <ffi::PJRT_Plugin_Initialize_Args as ffi::PjrtStruct>::new();
        pjrt_call!(api, PJRT_Plugin_Initialize, &mut args)?;
        tracing::info!(
            path = %canonical.display(),
            version = %format!("{}.{}", api.major, api.minor),
            ms = started.elapsed().as_millis() as u64,
            "loaded PJRT plugin"
        );
        map.insert(canonical, api);
        Ok(api)
    }

    pub(crate) fn table(&self) -> *const ffi::PJRT_Api {
        self.table
    }

    /// The plugin file (canonical path).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// PJRT C API version the plugin was built with, `(major, minor)`.
    pub fn version(&self) -> (i32, i32) {
        (self.major, self.minor)
    }

    /// Checks that the plugin's table is long enough to contain the entry at `offset`.
    pub(crate) fn ensure_entry(&self, name: &'static str, offset: usize) -> Result<()> {
        if offset + std::mem::size_of::<usize>() <= self.table_size {
            Ok(())
        } else {
            Err(self.missing(name))
        }
    }

    pub(crate) fn missing(&self, function: &'static str) -> Error {
        Error::MissingFunction {
            path: self.path.clone(),
            major: self.major,
            minor: self.minor,
            function,
        }
    }

    /// Verifies up front that every entry this crate calls is present, so a too-old plugin
    /// fails at load with one clear message rather than midway through a run.
    pub(crate) fn ensure_all_entries(&self) -> Result<()> {
        let last = std::mem::offset_of!(ffi::PJRT_Api, PJRT_Buffer_ReadyEvent);
        self.ensure_entry("PJRT_Buffer_ReadyEvent", last)
    }

    /// Turns a returned `PJRT_Error*` into a Rust error (and frees it).
    pub(crate) fn check(&self, function: &'static str, err: *mut ffi::PJRT_Error) -> Result<()> {
        if err.is_null() {
            return Ok(());
        }
        let (code, message) = self.read_error(err);
        Err(Error::Pjrt {
            function,
            code,
            message,
        })
    }

    fn read_error(&self, err: *mut ffi::PJRT_Error) -> (String, String) {
        // SAFETY: the three error entries are within every valid table (checked at load by
        // the version size check: they come right after pjrt_api_version).
        let table = unsafe { self.table.read() };
        let mut message = String::from("(no message)");
        if let Some(f) = table.PJRT_Error_Message {
            let mut a = <ffi::PJRT_Error_Message_Args as ffi::PjrtStruct>::new();
            a.error = err;
            unsafe { f(&mut a) };
            message = unsafe { lossy(a.message, a.message_size) };
        }
        let mut code = String::from("UNKNOWN");
        if let Some(f) = table.PJRT_Error_GetCode {
            let mut a = <ffi::PJRT_Error_GetCode_Args as ffi::PjrtStruct>::new();
            a.error = err;
            if unsafe { f(&mut a) }.is_null() {
                code = ffi::PJRT_ERROR_CODE_NAMES
                    .get(a.code as usize)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| format!("code {}", a.code));
            }
        }
        if let Some(f) = table.PJRT_Error_Destroy {
            let mut a = <ffi::PJRT_Error_Destroy_Args as ffi::PjrtStruct>::new();
            a.error = err;
            unsafe { f(&mut a) };
        }
        (code, message)
    }

    /// Blocks until `event` is ready, frees it and returns its status. Null is "done".
    pub(crate) fn await_event(&self, event: *mut ffi::PJRT_Event) -> Result<()> {
        if event.is_null() {
            return Ok(());
        }
        let mut a = <ffi::PJRT_Event_Await_Args as ffi::PjrtStruct>::new();
        a.event = event;
        let awaited = pjrt_call!(self, PJRT_Event_Await, &mut a);
        self.destroy_event(event);
        awaited
    }

    pub(crate) fn destroy_event(&self, event: *mut ffi::PJRT_Event) {
        if event.is_null() {
            return;
        }
        let mut d = <ffi::PJRT_Event_Destroy_Args as ffi::PjrtStruct>::new();
        d.event = event;
        if let Err(e) = pjrt_call!(self, PJRT_Event_Destroy, &mut d) {
            tracing::warn!("{e}");
        }
    }

    /// The plugin's attributes (`xla_version`, `stablehlo_current_version`, ...) as text.
    pub fn attributes(&self) -> Result<Vec<(String, String)>> {
        let mut a = <ffi::PJRT_Plugin_Attributes_Args as ffi::PjrtStruct>::new();
        pjrt_call!(self, PJRT_Plugin_Attributes, &mut a)?;
        let mut out = Vec::new();
        for i in 0..a.num_attributes {
            // SAFETY: the plugin returns `num_attributes` values living for the process.
            let nv = unsafe { a.attributes.add(i).read() };
            let name = unsafe { lossy(nv.name, nv.name_size) };
            let value = unsafe {
                match nv.type_ {
                    ffi::PJRT_NamedValue_kString => lossy(nv.value.string_value, nv.value_size),
                    ffi::PJRT_NamedValue_kInt64 => nv.value.int64_value.to_string(),
                    ffi::PJRT_NamedValue_kInt64List => {
                        let p = nv.value.int64_array_value;
                        let v: Vec<String> = if p.is_null() {
                            Vec::new()
                        } else {
                            std::slice::from_raw_parts(p, nv.value_size)
                                .iter()
                                .map(|x| x.to_string())
                                .collect()
                        };
                        v.join(".")
                    }
                    ffi::PJRT_NamedValue_kFloat => nv.value.float_value.to_string(),
                    ffi::PJRT_NamedValue_kBool => nv.value.bool_value.to_string(),
                    other => format!("(value of type {other})"),
                }
            };
            out.push((name, value));
        }
        Ok(out)
    }
}

/// Copies a (pointer, length) string returned by the plugin.
///
/// # Safety
/// `ptr` must be null or point to `len` readable bytes.
pub(crate) unsafe fn lossy(ptr: *const std::ffi::c_char, len: usize) -> String {
    if ptr.is_null() || len == 0 {
        return String::new();
    }
    let bytes = std::slice::from_raw_parts(ptr as *const u8, len);
    String::from_utf8_lossy(bytes).into_owned()
}
