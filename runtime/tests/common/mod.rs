//! Shared by the integration tests: one CPU client (4 virtual devices) per test process.
//!
//! The plugin is found like the binary finds it: `GPTSAN_PJRT_PLUGIN` if set, otherwise the
//! CPU plugin from the installed Python packages or the gptsan cache (installed there with
//! pip if missing, unless `GPTSAN_NO_PLUGIN_INSTALL=1`).

#![allow(dead_code)]

use runtime::{plugin, Client, ClientOptions, PluginKind, PluginRequest};
use std::path::PathBuf;
use std::sync::OnceLock;

pub fn plugin_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let request = match PluginRequest::from_arg_or_env(None) {
            PluginRequest::Auto => PluginRequest::Kind(PluginKind::Cpu),
            explicit => explicit,
        };
        match plugin::discover(&request, &plugin::SearchEnv::detect()) {
            Ok(d) => d.path,
            Err(e) => panic!("the runtime tests need the PJRT CPU plugin: {e}"),
        }
    })
    .clone()
}

/// The process-wide client with 4 CPU devices.
pub fn client() -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        Client::from_plugin_path(&plugin_path(), &ClientOptions::cpu_devices(4))
            .unwrap_or_else(|e| panic!("creating the PJRT client failed: {e}"))
    })
}

pub fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "element {i}: got {g}, want {w} (tol {tol})"
        );
    }
}

/// Each element within `tol` of the wanted one, relative to `1 + |want|`.
pub fn assert_near(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "element {i}: got {g}, want {w} (tol {tol})"
        );
    }
}

/// `n` reproducible values in [-1, 1) (a linear congruential generator from `seed`).
pub fn uniform(n: usize, seed: u64) -> Vec<f64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0
        })
        .collect()
}

/// `n` reproducible f32 values in [-1, 1) ([`uniform`]).
pub fn uniform_f32(n: usize, seed: u64) -> Vec<f32> {
    uniform(n, seed).iter().map(|v| *v as f32).collect()
}

/// `func` emitted twice: with the composites named in `calls` as custom calls to their
/// targets (asserting that `count` custom calls appear), and with every composite as its
/// ops.
pub fn with_and_without_calls(
    func: &hlo::Function,
    calls: &[(&str, &str)],
    count: usize,
) -> (String, String) {
    let mut ours = hlo::EmitOptions::default();
    for (name, target) in calls {
        ours.composite_calls
            .insert(name.to_string(), target.to_string());
    }
    let with_calls = hlo::to_stablehlo(func, &ours).unwrap();
    assert_eq!(with_calls.matches("stablehlo.custom_call").count(), count);
    let ops = hlo::to_stablehlo(func, &hlo::EmitOptions::default()).unwrap();
    (with_calls, ops)
}

/// Compiles StableHLO `text` on the shared client, runs it on device 0 with `inputs`, and
/// returns every output as f64 values.
pub fn run_on_device(text: &str, inputs: &[hlo::Literal]) -> Vec<Vec<f64>> {
    let client = client();
    let exe = client
        .compile(text, &runtime::CompileOptions::default())
        .unwrap();
    let bufs: Vec<_> = inputs
        .iter()
        .map(|l| client.upload(l, 0).unwrap())
        .collect();
    let out = exe.execute(&[bufs.iter().collect()]).unwrap();
    out[0]
        .iter()
        .map(|o| o.to_literal().unwrap().to_f64_vec())
        .collect()
}
