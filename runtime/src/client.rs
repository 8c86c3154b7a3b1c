//! A PJRT client: one plugin instance with its devices. Cheap to clone (shared handle);
//! buffers and executables keep it alive.

use crate::api::{lossy, pjrt_call, Api};
use crate::error::{Error, Result};
use crate::ffi::{self, PjrtStruct};
use crate::plugin::{self, Discovery, PluginRequest, SearchEnv};
use std::ffi::CString;
use std::path::Path;
use std::sync::Arc;

/// A typed value of a client-creation option.
#[derive(Clone, Debug, PartialEq)]
pub enum OptionValue {
    Str(String),
    Int(i64),
    IntList(Vec<i64>),
    Float(f32),
    Bool(bool),
}

impl OptionValue {
    fn type_name(&self) -> &'static str {
        match self {
            OptionValue::Str(_) => "string",
            OptionValue::Int(_) => "int64",
            OptionValue::IntList(_) => "int64 list",
            OptionValue::Float(_) => "float",
            OptionValue::Bool(_) => "bool",
        }
    }
}

/// Options known to the plugins and the type each must have. A wrong type is not an error
/// the plugin reports: it aborts the process, so we check here first.
const KNOWN_OPTION_TYPES: &[(&str, &str)] = &[
    ("cpu_device_count", "int64"),
    ("allocator", "string"),
    ("memory_fraction", "float"),
    ("preallocate", "bool"),
    ("visible_devices", "int64 list"),
    ("node_id", "int64"),
    ("num_nodes", "int64"),
];

/// Options for creating a client.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientOptions {
    /// Number of virtual CPU devices (CPU plugin only; the plugin's default is 4).
    pub cpu_device_count: Option<i64>,
    /// Any other named create option, type-checked against the options we know.
    pub extra: Vec<(String, OptionValue)>,
}

impl ClientOptions {
    pub fn cpu_devices(n: i64) -> ClientOptions {
        ClientOptions {
            cpu_device_count: Some(n),
            ..ClientOptions::default()
        }
    }

    fn all(&self) -> Result<Vec<(String, OptionValue)>> {
        let mut all = Vec::new();
        if let Some(n) = self.cpu_device_count {
            if n < 1 {
                return Err(Error::invalid(format!(
                    "cpu_device_count must be >= 1, got {n}"
                )));
            }
            all.push(("cpu_device_count".to_string(), OptionValue::Int(n)));
        }
        for (name, value) in &self.extra {
            if let Some((_, want)) = KNOWN_OPTION_TYPES.iter().find(|(k, _)| k == name) {
                if *want != value.type_name() {
                    return Err(Error::invalid(format!(
                        "client option {name} must be {want}, got {}",
                        value.type_name()
                    )));
                }
            }
            all.push((name.clone(), value.clone()));
        }
        Ok(all)
    }
}

/// What one device is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Global device id (used in device assignments).
    pub id: i32,
    /// e.g. "cpu".
    pub kind: String,
    /// The plugin's debug description, e.g. "TFRT_CPU_0".
    pub description: String,
    pub local_hardware_id: i32,
    pub addressable: bool,
}

/// A raw device handle plus what we know about it.
#[derive(Clone, Debug)]
pub(crate) struct Device {
    pub raw: *mut ffi::PJRT_Device,
    pub info: DeviceInfo,
}

pub(crate) struct ClientInner {
    pub api: &'static Api,
    pub raw: *mut ffi::PJRT_Client,
    pub platform_name: String,
    pub platform_version: String,
    pub devices: Vec<Device>,
    pub addressable: Vec<Device>,
}

// SAFETY: PJRT clients, devices, buffers and executables are thread-safe objects; the raw
// pointers are only handed to the plugin.
unsafe impl Send for ClientInner {}
unsafe impl Sync for ClientInner {}

impl Drop for ClientInner {
    fn drop(&mut self) {
        let mut a = ffi::PJRT_Client_Destroy_Args::new();
        a.client = self.raw;
        if let Err(e) = pjrt_call!(self.api, PJRT_Client_Destroy, &mut a) {
            tracing::warn!("{e}");
        }
    }
}

impl ClientInner {
    pub fn device_by_raw(&self, raw: *mut ffi::PJRT_Device) -> Option<&Device> {
        self.devices.iter().find(|d| d.raw == raw)
    }
}

/// A PJRT client. `Clone` shares the same plugin client.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
    pub(crate) cache: Option<Arc<crate::cache::ExecutableCache>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("plugin", &self.inner.api.path())
            .field("platform", &self.inner.platform_name)
            .field("devices", &self.inner.addressable.len())
            .finish()
    }
}

impl Client {
    /// Finds a plugin for `request` (see [`crate::plugin`]) and creates a client on it.
    pub fn open(request: &PluginRequest, options: &ClientOptions) -> Result<(Client, Discovery)> {
        let discovery = plugin::discover(request, &SearchEnv::detect())?;
        let mut options = options.clone();
        if matches!(discovery.kind, Some(k) if k != plugin::PluginKind::Cpu)
            && options.cpu_device_count.take().is_some()
        {
            // Other plugins reject options they do not know.
            tracing::warn!("ignoring cpu_device_count: the chosen plugin is not the CPU plugin");
        }
        let client = Client::from_plugin_path(&discovery.path, &options)?;
        let (major, minor) = client.api_version();
        tracing::info!(
            "{} (PJRT API {major}.{minor}, {} devices)",
            discovery.explain(),
            client.device_count()
        );
        Ok((client, discovery))
    }

    /// Creates a client on the plugin file at `path` (loaded once per process).
    pub fn from_plugin_path(path: &Path, options: &ClientOptions) -> Result<Client> {
        let api = Api::load(path)?;
        Client::create(api, options)
    }

    fn create(api: &'static Api, options: &ClientOptions) -> Result<Client> {
        let opts = options.all()?;
        // Keep the option names and lists alive during the call.
        let names: Vec<CString> = opts
            .iter()
            .map(|(n, _)| CString::new(n.as_str()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::invalid("client option names must not contain NUL bytes"))?;
        let strings: Vec<Vec<u8>> = opts
            .iter()
            .map(|(_, v)| match v {
                OptionValue::Str(s) => s.as_bytes().to_vec(),
                _ => Vec::new(),
            })
            .collect();
        let named: Vec<ffi::PJRT_NamedValue> = opts
            .iter()
            .enumerate()
            .map(|(i, (name, value))| {
                let mut nv = ffi::PJRT_NamedValue::new();
                nv.name = names[i].as_ptr();
                nv.name_size = name.len();
                match value {
                    OptionValue::Str(_) => {
                        nv.type_ = ffi::PJRT_NamedValue_kString;
                        nv.value.string_value = strings[i].as_ptr() as *const _;
                        nv.value_size = strings[i].len();
                    }
                    OptionValue::Int(x) => {
                        nv.type_ = ffi::PJRT_NamedValue_kInt64;
                        nv.value.int64_value = *x;
                        nv.value_size = 1;
                    }
                    OptionValue::IntList(xs) => {
                        nv.type_ = ffi::PJRT_NamedValue_kInt64List;
                        nv.value.int64_array_value = xs.as_ptr();
                        nv.value_size = xs.len();
                    }
                    OptionValue::Float(x) => {
                        nv.type_ = ffi::PJRT_NamedValue_kFloat;
                        nv.value.float_value = *x;
                        nv.value_size = 1;
                    }
                    OptionValue::Bool(x) => {
                        nv.type_ = ffi::PJRT_NamedValue_kBool;
                        nv.value.bool_value = *x;
                        nv.value_size = 1;
                    }
                }
                nv
            })
            .collect();
        let mut a = ffi::PJRT_Client_Create_Args::new();
        a.create_options = named.as_ptr();
        a.num_options = named.len();
        pjrt_call!(api, PJRT_Client_Create, &mut a)?;
        let raw = a.client;
        if raw.is_null() {
            return Err(Error::invalid("PJRT_Client_Create returned no client"));
        }
        // From here on the client is owned by `inner` and destroyed by its Drop.
        let mut inner = ClientInner {
            api,
            raw,
            platform_name: String::new(),
            platform_version: String::new(),
            devices: Vec::new(),
            addressable: Vec::new(),
        };
        let mut pn = ffi::PJRT_Client_PlatformName_Args::new();
        pn.client = raw;
        pjrt_call!(api, PJRT_Client_PlatformName, &mut pn)?;
        inner.platform_name = unsafe { lossy(pn.platform_name, pn.platform_name_size) };
        let mut pv = ffi::PJRT_Client_PlatformVersion_Args::new();
        pv.client = raw;
        pjrt_call!(api, PJRT_Client_PlatformVersion, &mut pv)?;
        inner.platform_version = unsafe { lossy(pv.platform_version, pv.platform_version_size) };

        let mut d = ffi::PJRT_Client_Devices_Args::new();
        d.client = raw;
        pjrt_call!(api, PJRT_Client_Devices, &mut d)?;
        let raws = unsafe { raw_slice(d.devices, d.num_devices) };
        inner.devices = raws
            .iter()
            .map(|&r| describe_device(api, r).map(|info| Device { raw: r, info }))
            .collect::<Result<_>>()?;
        let mut ad = ffi::PJRT_Client_AddressableDevices_Args::new();
        ad.client = raw;
        pjrt_call!(api, PJRT_Client_AddressableDevices, &mut ad)?;
        let raws = unsafe { raw_slice(ad.addressable_devices, ad.num_addressable_devices) };
        inner.addressable = raws
            .iter()
            .map(|&r| describe_device(api, r).map(|info| Device { raw: r, info }))
            .collect::<Result<_>>()?;
        tracing::debug!(
            platform = %inner.platform_name,
            devices = inner.addressable.len(),
            "created PJRT client"
        );
        Ok(Client {
            inner: Arc::new(inner),
            cache: None,
        })
    }

    /// Uses `cache` for [`crate::Backend::compile`] from now on.
    pub fn with_cache(mut self, cache: crate::cache::ExecutableCache) -> Client {
        self.cache = Some(Arc::new(cache));
        self
    }

    pub fn cache(&self) -> Option<&crate::cache::ExecutableCache> {
        self.cache.as_deref()
    }

    /// The custom-call prefix for bf16 products on our AMX kernel
    /// ([`crate::custom_calls::BF16_DOT`]), when this is the CPU plugin on a CPU with AMX
    /// bf16 and `GPTSAN_BF16_DOTS` is not `xla`; None leaves them to XLA (which computes
    /// them in f32).
    pub fn bf16_dot_call(&self) -> Option<&'static str> {
        (self.kernel_wanted("GPTSAN_BF16_DOTS")
            && crate::custom_calls::bf16_dot_available(self.inner.api))
        .then_some(crate::custom_calls::BF16_DOT)
    }

    /// The custom-call targets of our f32 masked attention kernels, forward and
    /// gradient ([`crate::custom_calls::MASKED_ATTENTION`] and `_GRAD`), when this is the
    /// CPU plugin on a CPU with AVX-512 and `GPTSAN_ATTENTION` is not `xla`; None leaves
    /// attention to XLA's ops.
    pub fn masked_attention_calls(&self) -> Option<[&'static str; 2]> {
        (self.kernel_wanted("GPTSAN_ATTENTION")
            && crate::custom_calls::masked_attention_available(self.inner.api))
        .then_some([
            crate::custom_calls::MASKED_ATTENTION,
            crate::custom_calls::MASKED_ATTENTION_GRAD,
        ])
    }

    /// The custom-call target of our chosen-expert MLP kernel for decode steps
    /// ([`crate::custom_calls::CHOSEN_EXPERT_MLP`]), when this is the CPU plugin on a CPU
    /// with AVX-512 and `GPTSAN_CHOSEN_EXPERT` is not `xla`.
    pub fn chosen_expert_call(&self) -> Option<&'static str> {
        (self.kernel_wanted("GPTSAN_CHOSEN_EXPERT")
            && crate::custom_calls::chosen_expert_available(self.inner.api))
        .then_some(crate::custom_calls::CHOSEN_EXPERT_MLP)
    }

    /// The custom-call targets of our f32 expert MLP kernels over filled slots, forward
    /// and gradient ([`crate::custom_calls::EXPERT_MLP`] and `_GRAD`), when this is the
    /// CPU plugin on a CPU with AVX-512 and `GPTSAN_EXPERTS` is not `xla`; None leaves
    /// the experts to XLA's products.
    pub fn expert_mlp_calls(&self) -> Option<[&'static str; 2]> {
        (self.kernel_wanted("GPTSAN_EXPERTS")
            && crate::custom_calls::expert_mlp_available(self.inner.api))
        .then_some([
            crate::custom_calls::EXPERT_MLP,
            crate::custom_calls::EXPERT_MLP_GRAD,
        ])
    }

    /// The custom-call target of our f32 product `a b^T`
    /// ([`crate::custom_calls::F32_MATMUL_NT`]), when this is the CPU plugin on a CPU with
    /// AVX-512 and `GPTSAN_F32_MATMUL` is not `xla`.
    pub fn f32_matmul_call(&self) -> Option<&'static str> {
        (self.kernel_wanted("GPTSAN_F32_MATMUL")
            && crate::custom_calls::f32_matmul_available(self.inner.api))
        .then_some(crate::custom_calls::F32_MATMUL_NT)
    }

    /// The custom-call targets of our tied-head log-sum-exp kernels, forward and gradient
    /// ([`crate::custom_calls::HEAD_LOGSUMEXP`] and `_GRAD`), when this is the CPU plugin
    /// on a CPU with AVX-512 and `GPTSAN_HEAD_LOSS` is not `xla`.
    pub fn head_logsumexp_calls(&self) -> Option<[&'static str; 2]> {
        (self.kernel_wanted("GPTSAN_HEAD_LOSS")
            && crate::custom_calls::head_logsumexp_available(self.inner.api))
        .then_some([
            crate::custom_calls::HEAD_LOGSUMEXP,
            crate::custom_calls::HEAD_LOGSUMEXP_GRAD,
        ])
    }

    /// The custom-call target of our decode-step f32 product `x w^T` for one row
    /// ([`crate::custom_calls::F32_MATVEC_NT`]), when this is the CPU plugin on a CPU
    /// with AVX-512 and `GPTSAN_F32_MATVEC` is not `xla`.
    pub fn f32_matvec_call(&self) -> Option<&'static str> {
        (self.kernel_wanted("GPTSAN_F32_MATVEC")
            && crate::custom_calls::f32_matvec_available(self.inner.api))
        .then_some(crate::custom_calls::F32_MATVEC_NT)
    }

    /// Whether our CPU kernels may be used: this is the CPU plugin and the environment
    /// variable `var` (one per kernel) is not `xla`.
    fn kernel_wanted(&self, var: &str) -> bool {
        std::env::var(var).map_or(true, |v| v != "xla") && self.platform_name() == "cpu"
    }

    pub fn plugin_path(&self) -> &Path {
        self.inner.api.path()
    }

    /// PJRT C API version of the plugin, `(major, minor)`.
    pub fn api_version(&self) -> (i32, i32) {
        self.inner.api.version()
    }

    /// Plugin attributes such as `xla_version` and `stablehlo_current_version`.
    pub fn plugin_attributes(&self) -> Result<Vec<(String, String)>> {
        self.inner.api.attributes()
    }

    /// e.g. "cpu", "cuda", "tpu".
    pub fn platform_name(&self) -> &str {
        &self.inner.platform_name
    }

    pub fn platform_version(&self) -> &str {
        &self.inner.platform_version
    }

    /// All devices of the client (across processes).
    pub fn devices(&self) -> Vec<DeviceInfo> {
        self.inner.devices.iter().map(|d| d.info.clone()).collect()
    }

    /// The devices this process can use, in the plugin's order. Indexes into this list are
    /// what [`Client::upload`] takes.
    pub fn addressable_devices(&self) -> Vec<DeviceInfo> {
        self.inner
            .addressable
            .iter()
            .map(|d| d.info.clone())
            .collect()
    }

    pub fn device_count(&self) -> usize {
        self.inner.addressable.len()
    }
}

/// Reads id, kind, description and hardware id of one device.
fn describe_device(api: &'static Api, raw: *mut ffi::PJRT_Device) -> Result<DeviceInfo> {
    let mut g = ffi::PJRT_Device_GetDescription_Args::new();
    g.device = raw;
    pjrt_call!(api, PJRT_Device_GetDescription, &mut g)?;
    let desc = g.device_description;
    let mut id = ffi::PJRT_DeviceDescription_Id_Args::new();
    id.device_description = desc;
    pjrt_call!(api, PJRT_DeviceDescription_Id, &mut id)?;
    let mut kind = ffi::PJRT_DeviceDescription_Kind_Args::new();
    kind.device_description = desc;
    pjrt_call!(api, PJRT_DeviceDescription_Kind, &mut kind)?;
    let mut dbg = ffi::PJRT_DeviceDescription_DebugString_Args::new();
    dbg.device_description = desc;
    pjrt_call!(api, PJRT_DeviceDescription_DebugString, &mut dbg)?;
    let mut addr = ffi::PJRT_Device_IsAddressable_Args::new();
    addr.device = raw;
    pjrt_call!(api, PJRT_Device_IsAddressable, &mut addr)?;
    let mut hw = ffi::PJRT_Device_LocalHardwareId_Args::new();
    hw.device = raw;
    pjrt_call!(api, PJRT_Device_LocalHardwareId, &mut hw)?;
    Ok(DeviceInfo {
        id: id.id,
        kind: unsafe { lossy(kind.device_kind, kind.device_kind_size) },
        description: unsafe { lossy(dbg.debug_string, dbg.debug_string_size) },
        local_hardware_id: hw.local_hardware_id,
        addressable: addr.is_addressable,
    })
}

/// Copies a plugin-owned `(pointer, count)` array.
///
/// # Safety
/// `ptr` must be null or point to `n` readable elements.
pub(crate) unsafe fn raw_slice<T: Copy>(ptr: *const T, n: usize) -> Vec<T> {
    if ptr.is_null() || n == 0 {
        Vec::new()
    } else {
        std::slice::from_raw_parts(ptr, n).to_vec()
    }
}
