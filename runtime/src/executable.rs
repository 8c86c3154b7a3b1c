//! Compiling StableHLO text and running the result on one or many devices.

use crate::api::{pjrt_call, Api};
use crate::buffer::Buffer;
use crate::client::{Client, ClientInner, Device};
use crate::error::{Error, Result};
use crate::ffi::{self, PjrtStruct};
use crate::options::CompileOptions;
use hlo::DType;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A compiled program loaded on its devices.
pub struct Executable {
    client: Arc<ClientInner>,
    raw: *mut ffi::PJRT_LoadedExecutable,
    name: String,
    num_outputs: usize,
    num_replicas: usize,
    num_partitions: usize,
    /// Devices in `PJRT_LoadedExecutable_AddressableDevices` order: the order of the
    /// argument lists of [`Executable::execute`].
    devices: Vec<Device>,
    /// `@main`'s parameter element types when known (compiled from text).
    param_dtypes: Option<Vec<DType>>,
    /// What the watchdog calls this program ("program train_step on mesh model=2").
    label: Option<String>,
    /// The slowest completed multi-device execution, in microseconds (for the watchdog).
    slowest_us: AtomicU64,
}

// SAFETY: loaded executables may be executed concurrently from several threads.
unsafe impl Send for Executable {}
unsafe impl Sync for Executable {}

impl Drop for Executable {
    fn drop(&mut self) {
        let mut a = ffi::PJRT_LoadedExecutable_Destroy_Args::new();
        a.executable = self.raw;
        if let Err(e) = pjrt_call!(self.client.api, PJRT_LoadedExecutable_Destroy, &mut a) {
            tracing::warn!("{e}");
        }
    }
}

impl std::fmt::Debug for Executable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executable")
            .field("name", &self.name)
            .field("num_outputs", &self.num_outputs)
            .field("devices", &self.device_ids())
            .finish()
    }
}

/// Per-execution options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecuteOptions {
    /// Parameters that must not be donated even if the program aliases them to an output.
    pub non_donatable_input_indices: Vec<i64>,
}

impl Client {
    /// Compiles StableHLO (MLIR text or bytecode) for this client's devices. A parse or
    /// compile error comes back as [`Error::Pjrt`] with the compiler's message.
    pub fn compile(&self, mlir: &str, options: &CompileOptions) -> Result<Executable> {
        let encoded = options.for_platform(self.platform_name()).encode()?;
        self.compile_encoded(mlir, &encoded)
    }

    pub(crate) fn compile_encoded(&self, mlir: &str, options: &[u8]) -> Result<Executable> {
        let started = std::time::Instant::now();
        let format = "mlir";
        let mut program = ffi::PJRT_Program::new();
        // The plugin only reads `code` during the call.
        program.code = mlir.as_ptr() as *mut _;
        program.code_size = mlir.len();
        program.format = format.as_ptr() as *const _;
        program.format_size = format.len();
        let mut a = ffi::PJRT_Client_Compile_Args::new();
        a.client = self.inner.raw;
        a.program = &program;
        a.compile_options = options.as_ptr() as *const _;
        a.compile_options_size = options.len();
        pjrt_call!(self.inner.api, PJRT_Client_Compile, &mut a)?;
        let exe = Executable::wrap(
            self.inner.clone(),
            a.executable,
            crate::signature::main_param_dtypes(mlir),
        )?;
        tracing::debug!(
            name = %exe.name,
            ms = started.elapsed().as_millis() as u64,
            "compiled"
        );
        Ok(exe)
    }

    /// Loads an executable produced by [`Executable::serialize`] with the same plugin build.
    pub fn deserialize_executable(&self, bytes: &[u8]) -> Result<Executable> {
        let mut a = ffi::PJRT_Executable_DeserializeAndLoad_Args::new();
        a.client = self.inner.raw;
        a.serialized_executable = bytes.as_ptr() as *const _;
        a.serialized_executable_size = bytes.len();
        pjrt_call!(self.inner.api, PJRT_Executable_DeserializeAndLoad, &mut a)?;
        Executable::wrap(self.inner.clone(), a.loaded_executable, None)
    }

    /// Runs `executable`; see [`Executable::execute`].
    pub fn execute(
        &self,
        executable: &Executable,
        args: &[Vec<&Buffer>],
    ) -> Result<Vec<Vec<Buffer>>> {
        executable.execute(args)
    }
}

/// A `PJRT_Executable` (the unloaded view of a loaded executable), freed on drop.
struct ExecutableView<'a> {
    api: &'a Api,
    raw: *mut ffi::PJRT_Executable,
}

impl Drop for ExecutableView<'_> {
    fn drop(&mut self) {
        let mut a = ffi::PJRT_Executable_Destroy_Args::new();
        a.executable = self.raw;
        if let Err(e) = pjrt_call!(self.api, PJRT_Executable_Destroy, &mut a) {
            tracing::warn!("{e}");
        }
    }
}

impl Executable {
    fn wrap(
        client: Arc<ClientInner>,
        raw: *mut ffi::PJRT_LoadedExecutable,
        param_dtypes: Option<Vec<DType>>,
    ) -> Result<Executable> {
        if raw.is_null() {
            return Err(Error::invalid("the plugin returned no executable"));
        }
        let mut exe = Executable {
            client,
            raw,
            name: String::new(),
            num_outputs: 0,
            num_replicas: 1,
            num_partitions: 1,
            devices: Vec::new(),
            param_dtypes,
            label: None,
            slowest_us: AtomicU64::new(0),
        };
        let api = exe.client.api;
        {
            let view = exe.view()?;
            let mut n = ffi::PJRT_Executable_Name_Args::new();
            n.executable = view.raw;
            pjrt_call!(api, PJRT_Executable_Name, &mut n)?;
            exe.name = unsafe { crate::api::lossy(n.executable_name, n.executable_name_size) };
            let mut o = ffi::PJRT_Executable_NumOutputs_Args::new();
            o.executable = view.raw;
            pjrt_call!(api, PJRT_Executable_NumOutputs, &mut o)?;
            exe.num_outputs = o.num_outputs;
            let mut r = ffi::PJRT_Executable_NumReplicas_Args::new();
            r.executable = view.raw;
            pjrt_call!(api, PJRT_Executable_NumReplicas, &mut r)?;
            exe.num_replicas = r.num_replicas;
            let mut p = ffi::PJRT_Executable_NumPartitions_Args::new();
            p.executable = view.raw;
            pjrt_call!(api, PJRT_Executable_NumPartitions, &mut p)?;
            exe.num_partitions = p.num_partitions;
        }
        let mut d = ffi::PJRT_LoadedExecutable_AddressableDevices_Args::new();
        d.executable = raw;
        pjrt_call!(api, PJRT_LoadedExecutable_AddressableDevices, &mut d)?;
        let raws =
            unsafe { crate::client::raw_slice(d.addressable_devices, d.num_addressable_devices) };
        exe.devices = raws
            .into_iter()
            .map(|r| {
                exe.client.device_by_raw(r).cloned().ok_or_else(|| {
                    Error::invalid("executable placed on a device unknown to its client")
                })
            })
            .collect::<Result<_>>()?;
        Ok(exe)
    }

    fn view(&self) -> Result<ExecutableView<'static>> {
        let mut g = ffi::PJRT_LoadedExecutable_GetExecutable_Args::new();
        g.loaded_executable = self.raw;
        pjrt_call!(self.client.api, PJRT_LoadedExecutable_GetExecutable, &mut g)?;
        Ok(ExecutableView {
            api: self.client.api,
            raw: g.executable,
        })
    }

    pub(crate) fn with_param_dtypes(mut self, dtypes: Option<Vec<DType>>) -> Executable {
        self.param_dtypes = dtypes;
        self
    }

    /// Names the program in watchdog reports (e.g. "program train_step on mesh model=2").
    pub fn with_label(mut self, label: impl Into<String>) -> Executable {
        self.label = Some(label.into());
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of results per device.
    pub fn num_outputs(&self) -> usize {
        self.num_outputs
    }

    pub fn num_replicas(&self) -> usize {
        self.num_replicas
    }

    pub fn num_partitions(&self) -> usize {
        self.num_partitions
    }

    /// Global ids of the devices, in the order [`Executable::execute`] takes argument lists.
    pub fn device_ids(&self) -> Vec<i32> {
        self.devices.iter().map(|d| d.info.id).collect()
    }

    /// Index in [`Client::addressable_devices`] of each execution device (for uploads).
    pub fn device_indices(&self) -> Vec<usize> {
        self.devices
            .iter()
            .filter_map(|d| self.client.addressable.iter().position(|a| a.raw == d.raw))
            .collect()
    }

    /// `@main`'s parameter element types, when compiled from text.
    pub fn param_dtypes(&self) -> Option<&[DType]> {
        self.param_dtypes.as_deref()
    }

    /// Runs on every device of the executable: `args[i]` is the argument list for device
    /// `i` (in [`Executable::device_ids`] order); returns one result list per device.
    /// Arguments aliased to outputs (`tf.aliasing_output`) are donated: afterwards they
    /// report [`Buffer::is_deleted`] and further use is [`Error::BufferDeleted`].
    pub fn execute(&self, args: &[Vec<&Buffer>]) -> Result<Vec<Vec<Buffer>>> {
        self.execute_with(args, &ExecuteOptions::default())
    }

    pub fn execute_with(
        &self,
        args: &[Vec<&Buffer>],
        options: &ExecuteOptions,
    ) -> Result<Vec<Vec<Buffer>>> {
        self.check_args(args)?;
        let num_devices = args.len();
        let num_args = args.first().map_or(0, |a| a.len());
        let arg_ptrs: Vec<Vec<*mut ffi::PJRT_Buffer>> = args
            .iter()
            .map(|list| list.iter().map(|b| b.raw).collect())
            .collect();
        let arg_lists: Vec<*const *mut ffi::PJRT_Buffer> =
            arg_ptrs.iter().map(|l| l.as_ptr()).collect();
        let mut outputs: Vec<Vec<*mut ffi::PJRT_Buffer>> = (0..num_devices)
            .map(|_| vec![std::ptr::null_mut(); self.num_outputs])
            .collect();
        let output_lists: Vec<*mut *mut ffi::PJRT_Buffer> =
            outputs.iter_mut().map(|l| l.as_mut_ptr()).collect();
        let mut events: Vec<*mut ffi::PJRT_Event> = vec![std::ptr::null_mut(); num_devices];

        let mut opts = ffi::PJRT_ExecuteOptions::new();
        opts.non_donatable_input_indices = options.non_donatable_input_indices.as_ptr();
        opts.num_non_donatable_input_indices = options.non_donatable_input_indices.len();
        let mut a = ffi::PJRT_LoadedExecutable_Execute_Args::new();
        a.executable = self.raw;
        a.options = &mut opts;
        a.argument_lists = arg_lists.as_ptr();
        a.num_devices = num_devices;
        a.num_args = num_args;
        a.output_lists = output_lists.as_ptr();
        a.device_complete_events = events.as_mut_ptr();
        let api = self.client.api;
        // Several devices meet in collectives: watch for one that never arrives.
        let watch = (num_devices > 1).then(|| self.arm_watchdog());
        let started = Instant::now();
        pjrt_call!(api, PJRT_LoadedExecutable_Execute, &mut a)?;

        // Own every output first so nothing leaks if a device failed.
        let results: Vec<Vec<Buffer>> = outputs
            .into_iter()
            .map(|list| {
                list.into_iter()
                    .filter(|p| !p.is_null())
                    .map(|raw| Buffer {
                        client: self.client.clone(),
                        raw,
                    })
                    .collect()
            })
            .collect();
        let mut first_err = None;
        for ev in events {
            if let Err(e) = api.await_event(ev) {
                first_err.get_or_insert(e);
            }
        }
        if watch.is_some() {
            let us = started.elapsed().as_micros() as u64;
            self.slowest_us.fetch_max(us, Ordering::Relaxed);
        }
        drop(watch);
        match first_err {
            Some(e) => Err(e),
            None => Ok(results),
        }
    }

    fn arm_watchdog(&self) -> crate::watchdog::Guard {
        let slowest = Duration::from_micros(self.slowest_us.load(Ordering::Relaxed));
        let what = self
            .label
            .clone()
            .unwrap_or_else(|| format!("program {} on {} devices", self.name, self.devices.len()));
        crate::watchdog::arm(what, crate::watchdog::timeout_for(slowest))
    }

    /// Checks argument-list count, liveness, placement and element types in Rust.
    fn check_args(&self, args: &[Vec<&Buffer>]) -> Result<()> {
        if args.len() != self.devices.len() {
            return Err(Error::invalid(format!(
                "executable {} runs on {} devices {:?}; got {} argument lists",
                self.name,
                self.devices.len(),
                self.device_ids(),
                args.len()
            )));
        }
        for (d, list) in args.iter().enumerate() {
            if list.len() != args[0].len() {
                return Err(Error::invalid(
                    "every device needs the same number of arguments",
                ));
            }
            if let Some(want) = &self.param_dtypes {
                if want.len() != list.len() {
                    return Err(Error::invalid(format!(
                        "executable {} takes {} arguments, got {} for device {}",
                        self.name,
                        want.len(),
                        list.len(),
                        self.devices[d].info.id
                    )));
                }
            }
            for (i, b) in list.iter().enumerate() {
                if !Arc::ptr_eq(&b.client, &self.client) {
                    return Err(Error::invalid(format!(
                        "argument {i} belongs to another client"
                    )));
                }
                b.ensure_live(&format!("argument {i} of {}", self.name))?;
                let on = b.device_id()?;
                let want_dev = self.devices[d].info.id;
                if on != want_dev {
                    return Err(Error::invalid(format!(
                        "argument {i} for device {want_dev} of {} lives on device {on}; upload it to device index {:?}",
                        self.name,
                        self.client.addressable.iter().position(|a| a.info.id == want_dev)
                    )));
                }
                if let Some(want) = &self.param_dtypes {
                    let got = b.dtype()?;
                    if got != want[i] {
                        return Err(Error::invalid(format!(
                            "argument {i} of {} must be {}, got a {} buffer",
                            self.name, want[i], got
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Platform-specific bytes that [`Client::deserialize_executable`] loads again. Only
    /// valid for the same plugin build and host CPU features.
    pub fn serialize(&self) -> Result<Vec<u8>> {
        let view = self.view()?;
        let mut a = ffi::PJRT_Executable_Serialize_Args::new();
        a.executable = view.raw;
        pjrt_call!(self.client.api, PJRT_Executable_Serialize, &mut a)?;
        let bytes = if a.serialized_bytes.is_null() {
            Vec::new()
        } else {
            unsafe {
                std::slice::from_raw_parts(a.serialized_bytes as *const u8, a.serialized_bytes_size)
            }
            .to_vec()
        };
        if let Some(deleter) = a.serialized_executable_deleter {
            unsafe { deleter(a.serialized_executable) };
        }
        Ok(bytes)
    }

    /// The optimized program after XLA's passes (a serialized `HloModuleProto` on the CPU
    /// plugin); useful to check e.g. that SPMD partitioning inserted a collective.
    pub fn optimized_program(&self) -> Result<Vec<u8>> {
        let view = self.view()?;
        let api = self.client.api;
        let mut program = ffi::PJRT_Program::new();
        let mut a = ffi::PJRT_Executable_OptimizedProgram_Args::new();
        a.executable = view.raw;
        a.program = &mut program;
        // First call: size only.
        pjrt_call!(api, PJRT_Executable_OptimizedProgram, &mut a)?;
        let mut code = vec![0u8; program.code_size];
        program.code = code.as_mut_ptr() as *mut _;
        a.program = &mut program;
        pjrt_call!(api, PJRT_Executable_OptimizedProgram, &mut a)?;
        code.truncate(program.code_size);
        Ok(code)
    }
}
