//! Compile options, encoded as the `xla.CompileOptionsProto` the plugin expects.
//!
//! The proto messages below are hand-written `prost` derives of the few fields we set (field
//! numbers from `xla/pjrt/proto/compile_options.proto` and `xla/xla.proto`), so no protoc is
//! needed at build time. Maps are `BTreeMap`s so the encoding is deterministic, which the
//! executable cache relies on.

use crate::error::{Error, Result};
use prost::Message;
use std::collections::BTreeMap;

/// How long the CPU plugin lets a collective wait before it aborts the process (one day:
/// the watchdog stops a stuck run long before, with a readable message).
pub const COLLECTIVE_ABORT_SECONDS: i64 = 86_400;

/// How to compile a program.
#[derive(Clone, Debug, PartialEq)]
pub struct CompileOptions {
    pub num_replicas: i64,
    pub num_partitions: i64,
    /// Partition the program with SPMD from its sharding annotations.
    pub use_spmd_partitioning: bool,
    /// Use Shardy (`sdy.mesh` / `sdy.sharding`) rather than GSPMD (`mhlo.sharding`).
    pub use_shardy_partitioner: bool,
    /// `device_assignment[replica][partition]` = device id. `None`: the plugin's default.
    pub device_assignment: Option<Vec<Vec<i64>>>,
    /// XLA debug options by name (e.g. `xla_cpu_enable_fast_math`).
    pub env_option_overrides: BTreeMap<String, OptionOverride>,
}

/// Whether this machine's CPU has AVX-512 (foundation instructions).
fn host_has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The value of one `env_option_overrides` entry.
#[derive(Clone, Debug, PartialEq)]
pub enum OptionOverride {
    String(String),
    Bool(bool),
    Int(i64),
    Double(f64),
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            num_replicas: 1,
            num_partitions: 1,
            use_spmd_partitioning: false,
            use_shardy_partitioner: false,
            device_assignment: None,
            env_option_overrides: BTreeMap::new(),
        }
    }
}

impl CompileOptions {
    /// One replica, `num_partitions` SPMD partitions, Shardy annotations.
    pub fn spmd(num_partitions: i64) -> CompileOptions {
        CompileOptions {
            num_partitions,
            use_spmd_partitioning: num_partitions > 1,
            use_shardy_partitioner: true,
            ..CompileOptions::default()
        }
    }

    /// These options plus the debug options XLA needs on `platform` for a program of this
    /// many devices (options the caller set explicitly are kept). Applied by every compile,
    /// so they are part of the executable cache key.
    ///
    /// CPU programs over several devices compile without XNNPACK: an XNNPACK fusion
    /// rebuilding its thread pool on one Eigen worker while another worker waits in a
    /// collective's rendezvous deadlocks when there are as many CPU devices as cores (seen
    /// on 2 cores with model=2). The plugin's own collective timeout is raised so that our
    /// watchdog ([`crate::watchdog`]) reports a stuck collective before the plugin aborts.
    /// Single-device programs have no collectives and keep XNNPACK.
    ///
    /// On CPUs with AVX-512, XLA's own kernels are asked for 512-bit vectors (LLVM's
    /// default prefers 256). Measured 2026-12-01 on `small`, three alternating runs each:
    /// the forward pass at 4x512 went from 5,765-6,031 to 6,147-6,229 tokens/s (mean
    /// step 0.370 -> 0.352 s); the train step, generation and compile time did not move.
    ///
    /// CPU kernels are compiled at LLVM optimization level 1 (XLA's default is 3): XLA's
    /// fusion emitters vectorize before LLVM sees the code, and the dots are library
    /// calls, so the heavier pipeline bought nothing measurable. Measured 2026-12-01 on
    /// `small`: the train step compiles in 1.83-1.89 s instead of 2.01-2.09 s, its best
    /// step 0.877-0.907 s against 0.868-0.897 s in four alternating pairs; the forward pass
    /// (three pairs) and generation (five) did not move. Level 0 halves the step's speed. Results
    /// differ from level 3's in the last bits (parity holds at 1e-4), so a long training
    /// run follows other routings; `XLA_FLAGS=--xla_backend_optimization_level=3` gives
    /// level 3's results back.
    ///
    /// A debug option the user names in `XLA_FLAGS` is left to them (these overrides
    /// would otherwise replace it).
    pub fn for_platform(&self, platform: &str) -> CompileOptions {
        self.for_platform_with_flags(platform, &std::env::var("XLA_FLAGS").unwrap_or_default())
    }

    fn for_platform_with_flags(&self, platform: &str, xla_flags: &str) -> CompileOptions {
        let mut o = self.clone();
        let cpu = platform.eq_ignore_ascii_case("cpu");
        let mut default = |name: &str, value: OptionOverride| {
            if !xla_flags.contains(&format!("--{name}=")) {
                o.env_option_overrides
                    .entry(name.to_string())
                    .or_insert(value);
            }
        };
        if cpu && host_has_avx512() {
            default("xla_cpu_prefer_vector_width", OptionOverride::Int(512));
        }
        if cpu {
            default("xla_backend_optimization_level", OptionOverride::Int(1));
        }
        if cpu && self.device_count() > 1 {
            for (name, value) in [
                ("xla_cpu_use_xnnpack", OptionOverride::Bool(false)),
                (
                    "xla_cpu_collective_call_terminate_timeout_seconds",
                    OptionOverride::Int(COLLECTIVE_ABORT_SECONDS),
                ),
            ] {
                o.env_option_overrides
                    .entry(name.to_string())
                    .or_insert(value);
            }
        }
        o
    }

    /// Number of devices an execution uses.
    pub fn device_count(&self) -> i64 {
        self.num_replicas * self.num_partitions
    }

    /// The serialized `xla.CompileOptionsProto`.
    pub fn encode(&self) -> Result<Vec<u8>> {
        if self.num_replicas < 1 || self.num_partitions < 1 {
            return Err(Error::invalid(format!(
                "num_replicas ({}) and num_partitions ({}) must be at least 1",
                self.num_replicas, self.num_partitions
            )));
        }
        let device_assignment = match &self.device_assignment {
            None => None,
            Some(rows) => {
                let shape_ok = rows.len() as i64 == self.num_replicas
                    && rows.iter().all(|r| r.len() as i64 == self.num_partitions);
                if !shape_ok {
                    return Err(Error::invalid(format!(
                        "device_assignment must be {} replica rows of {} partition ids",
                        self.num_replicas, self.num_partitions
                    )));
                }
                // The proto is partition-major: one ComputationDevice per partition.
                let computation_devices = (0..self.num_partitions as usize)
                    .map(|p| proto::ComputationDevice {
                        replica_device_ids: rows.iter().map(|r| r[p]).collect(),
                    })
                    .collect();
                Some(proto::DeviceAssignmentProto {
                    replica_count: self.num_replicas as i32,
                    computation_count: self.num_partitions as i32,
                    computation_devices,
                })
            }
        };
        let env_option_overrides = self
            .env_option_overrides
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    OptionOverride::String(s) => {
                        proto::option_override::Value::StringField(s.clone())
                    }
                    OptionOverride::Bool(b) => proto::option_override::Value::BoolField(*b),
                    OptionOverride::Int(i) => proto::option_override::Value::IntField(*i),
                    OptionOverride::Double(d) => proto::option_override::Value::DoubleField(*d),
                };
                (k.clone(), proto::OptionOverrideProto { value: Some(value) })
            })
            .collect();
        let msg = proto::CompileOptionsProto {
            executable_build_options: Some(proto::ExecutableBuildOptionsProto {
                device_ordinal: -1,
                num_replicas: self.num_replicas,
                num_partitions: self.num_partitions,
                use_spmd_partitioning: self.use_spmd_partitioning,
                device_assignment,
                use_shardy_partitioner: self.use_shardy_partitioner,
            }),
            env_option_overrides,
        };
        Ok(msg.encode_to_vec())
    }
}

/// The subset of XLA's protos we encode.
pub mod proto {
    use std::collections::BTreeMap;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CompileOptionsProto {
        #[prost(message, optional, tag = "3")]
        pub executable_build_options: Option<ExecutableBuildOptionsProto>,
        #[prost(btree_map = "string, message", tag = "7")]
        pub env_option_overrides: BTreeMap<String, OptionOverrideProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExecutableBuildOptionsProto {
        #[prost(int64, tag = "1")]
        pub device_ordinal: i64,
        #[prost(int64, tag = "4")]
        pub num_replicas: i64,
        #[prost(int64, tag = "5")]
        pub num_partitions: i64,
        #[prost(bool, tag = "6")]
        pub use_spmd_partitioning: bool,
        #[prost(message, optional, tag = "9")]
        pub device_assignment: Option<DeviceAssignmentProto>,
        #[prost(bool, tag = "19")]
        pub use_shardy_partitioner: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DeviceAssignmentProto {
        #[prost(int32, tag = "1")]
        pub replica_count: i32,
        #[prost(int32, tag = "2")]
        pub computation_count: i32,
        #[prost(message, repeated, tag = "3")]
        pub computation_devices: Vec<ComputationDevice>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ComputationDevice {
        #[prost(int64, repeated, tag = "1")]
        pub replica_device_ids: Vec<i64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OptionOverrideProto {
        #[prost(oneof = "option_override::Value", tags = "1, 2, 3, 4")]
        pub value: Option<option_override::Value>,
    }

    pub mod option_override {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(string, tag = "1")]
            StringField(String),
            #[prost(bool, tag = "2")]
            BoolField(bool),
            #[prost(int64, tag = "3")]
            IntField(i64),
            #[prost(double, tag = "4")]
            DoubleField(f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_known_bytes() {
        // executable_build_options { device_ordinal: -1 num_replicas: 1 num_partitions: 1 }
        let bytes = CompileOptions::default().encode().unwrap();
        let mut expected = vec![0x1a, 15, 0x08];
        expected.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        expected.extend([0x20, 1, 0x28, 1]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn multi_device_cpu_programs_compile_without_xnnpack() {
        let single = CompileOptions::default().for_platform("cpu");
        assert!(!single
            .env_option_overrides
            .contains_key("xla_cpu_use_xnnpack"));
        assert_eq!(
            single
                .env_option_overrides
                .get("xla_backend_optimization_level"),
            Some(&OptionOverride::Int(1))
        );
        let spmd = CompileOptions::spmd(2).for_platform("cpu");
        assert_eq!(
            spmd.env_option_overrides.get("xla_cpu_use_xnnpack"),
            Some(&OptionOverride::Bool(false))
        );
        assert!(CompileOptions::spmd(2)
            .for_platform("cuda")
            .env_option_overrides
            .is_empty());
        // An explicit choice wins.
        let mut mine = CompileOptions::spmd(2);
        mine.env_option_overrides
            .insert("xla_cpu_use_xnnpack".into(), OptionOverride::Bool(true));
        assert_eq!(
            mine.for_platform("cpu")
                .env_option_overrides
                .get("xla_cpu_use_xnnpack"),
            Some(&OptionOverride::Bool(true))
        );
        // Different options, different encodings: the cache key follows.
        assert_ne!(
            spmd.encode().unwrap(),
            CompileOptions::spmd(2).encode().unwrap()
        );
    }

    #[test]
    fn options_named_in_xla_flags_are_left_to_the_user() {
        let flags = "--xla_dump_to=/tmp/x --xla_backend_optimization_level=3";
        let o = CompileOptions::default().for_platform_with_flags("cpu", flags);
        assert!(!o
            .env_option_overrides
            .contains_key("xla_backend_optimization_level"));
        let o = CompileOptions::default().for_platform_with_flags("cpu", "");
        assert!(o
            .env_option_overrides
            .contains_key("xla_backend_optimization_level"));
    }

    #[test]
    fn device_assignment_is_partition_major() {
        let opts = CompileOptions {
            num_replicas: 1,
            device_assignment: Some(vec![vec![3, 2, 1, 0]]),
            ..CompileOptions::spmd(4)
        };
        let decoded =
            proto::CompileOptionsProto::decode(opts.encode().unwrap().as_slice()).unwrap();
        let da = decoded
            .executable_build_options
            .unwrap()
            .device_assignment
            .unwrap();
        assert_eq!((da.replica_count, da.computation_count), (1, 4));
        let ids: Vec<Vec<i64>> = da
            .computation_devices
            .into_iter()
            .map(|c| c.replica_device_ids)
            .collect();
        assert_eq!(ids, vec![vec![3], vec![2], vec![1], vec![0]]);
        let bad = CompileOptions {
            device_assignment: Some(vec![vec![0, 1]]),
            ..CompileOptions::spmd(4)
        };
        assert!(bad.encode().is_err());
    }

    #[test]
    fn avx512_hosts_ask_for_512_bit_vectors_on_cpu_only() {
        let cpu = CompileOptions::default().for_platform("cpu");
        let width = cpu.env_option_overrides.get("xla_cpu_prefer_vector_width");
        if host_has_avx512() {
            assert_eq!(width, Some(&OptionOverride::Int(512)));
        } else {
            assert_eq!(width, None);
        }
        assert!(CompileOptions::default()
            .for_platform("cuda")
            .env_option_overrides
            .is_empty());
    }
}
