//! `runtime`: our own thin layer over the PJRT C API. It loads official OpenXLA plugins,
//! compiles StableHLO text, moves buffers and runs executables on one or many devices.
//!
//! Start with [`Client::open`] (plugin discovery + client), or [`Client::from_plugin_path`].
//! The rest of gptsan should only need the [`Backend`] trait. Module map:
//!
//! - [`plugin`]: finding (and installing) a plugin file, with the reasons for the choice.
//! - [`ffi`]: `#[repr(C)]` declarations of the C API subset we call; `api` calls them safely.
//! - [`client`]: client creation, options, devices.
//! - [`buffer`]: host <-> device transfers.
//! - [`options`]: compile options encoded as `xla.CompileOptionsProto`.
//! - [`executable`]: compile, execute (single and multi-device, donation), serialize.
//! - [`cache`]: the on-disk executable cache.
//! - [`collectives`]: what an optimized program communicates (kind, count, bytes) and its
//!   instructions' shapes.
//! - [`backend`]: the small trait the model code uses.
//! - [`watchdog`]: a clear stop instead of a hang when a collective never completes.
//! - [`cores_awake`]: idle-priority spinning that keeps the CPU's cores awake while the
//!   model runs.

pub mod amx;
mod api;
pub mod backend;
pub mod buffer;
pub mod cache;
pub mod chosen_expert;
pub mod client;
pub mod collectives;
pub mod cores_awake;
pub mod custom_calls;
pub mod error;
pub mod executable;
pub mod expert_mlp;
pub mod ffi;
pub mod gemm;
pub mod head_logsumexp;
pub mod helpers;
pub mod logsumexp;
pub mod masked_attention;
#[cfg(target_arch = "x86_64")]
mod matvec;
pub mod options;
pub mod plugin;
mod signature;
#[cfg(target_arch = "x86_64")]
mod simd;
pub mod watchdog;

pub use backend::Backend;
pub use buffer::Buffer;
pub use cache::{CacheStatus, ExecutableCache};
pub use client::{Client, ClientOptions, DeviceInfo, OptionValue};
pub use collectives::{collectives, instructions, CollectiveStat, InstructionShape};
pub use cores_awake::{CoresAwake, WaitPolicy};
pub use error::{Error, Result};
pub use executable::{Executable, ExecuteOptions};
pub use options::{CompileOptions, OptionOverride};
pub use plugin::{Discovery, PluginKind, PluginRequest, SearchEnv};
pub use signature::main_param_dtypes;

/// jemalloc options (its `malloc_conf`) under which XLA's per-execution temporaries stay
/// mapped: large blocks stay in the ordinary arenas and freed pages are kept for reuse,
/// never purged. glibc, and jemalloc's defaults for blocks over 8 MB, hand them back to
/// the kernel at once, so each train step faulted and zeroed about 1.3 GB again. The
/// `gptsan` binary and the `dot_rates` example export it as `malloc_conf`.
pub const JEMALLOC_CONF: &[u8] = b"oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1\0";

/// Loads the plugin at `path` (once per process) and returns its PJRT C API version.
pub fn plugin_api_version(path: &std::path::Path) -> Result<(i32, i32)> {
    Ok(api::Api::load(path)?.version())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        assert_send_sync::<Client>();
        assert_send_sync::<Buffer>();
        assert_send_sync::<Executable>();
        assert_send_sync::<ExecutableCache>();
        assert_send_sync::<Box<dyn Backend>>();
    }
}
