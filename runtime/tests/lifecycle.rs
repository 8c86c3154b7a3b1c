//! Buffer donation, the executable cache, serialization, client options and missing plugins.

mod common;

use common::client;
use hlo::Literal;
use runtime::{
    plugin, CacheStatus, Client, ClientOptions, CompileOptions, Error, ExecutableCache,
    ExecuteOptions, OptionValue, PluginRequest,
};

const DONATING_ADD: &str = r#"
func.func public @main(%acc: tensor<4xf32> {tf.aliasing_output = 0 : i32}, %x: tensor<4xf32>) -> tensor<4xf32> {
  %0 = stablehlo.add %acc, %x : tensor<4xf32>
  return %0 : tensor<4xf32>
}"#;

fn f32s(v: &[f32]) -> Literal {
    Literal::from_slice(&[v.len() as i64], v).unwrap()
}

#[test]
fn donated_input_is_consumed_and_reuse_is_a_clean_error() {
    let c = client();
    let exe = c.compile(DONATING_ADD, &CompileOptions::default()).unwrap();
    let acc = c.upload(&f32s(&[1.0, 2.0, 3.0, 4.0]), 0).unwrap();
    let x = c.upload(&f32s(&[10.0, 20.0, 30.0, 40.0]), 0).unwrap();
    let out = exe.execute(&[vec![&acc, &x]]).unwrap();
    assert_eq!(
        out[0][0].to_literal().unwrap(),
        f32s(&[11.0, 22.0, 33.0, 44.0])
    );
    assert!(
        acc.is_deleted().unwrap(),
        "the donated argument must be consumed"
    );
    assert!(!x.is_deleted().unwrap());
    let err = acc.to_literal().unwrap_err();
    assert!(matches!(err, Error::BufferDeleted(_)), "{err}");
    let err = exe.execute(&[vec![&acc, &x]]).unwrap_err();
    assert!(matches!(err, Error::BufferDeleted(_)), "{err}");
    assert!(err.to_string().contains("argument 0"), "{err}");
    // The result can be fed back as the next accumulator (the usual training-step pattern).
    let out2 = exe.execute(&[vec![&out[0][0], &x]]).unwrap();
    assert_eq!(
        out2[0][0].to_literal().unwrap(),
        f32s(&[21.0, 42.0, 63.0, 84.0])
    );
    assert!(out[0][0].is_deleted().unwrap());

    // Opting out of donation keeps the input alive.
    let keep = c.upload(&f32s(&[1.0; 4]), 0).unwrap();
    let opts = ExecuteOptions {
        non_donatable_input_indices: vec![0],
    };
    let out3 = exe.execute_with(&[vec![&keep, &x]], &opts).unwrap();
    assert!(!keep.is_deleted().unwrap());
    assert_eq!(
        out3[0][0].to_literal().unwrap(),
        f32s(&[11.0, 21.0, 31.0, 41.0])
    );
    assert_eq!(keep.to_literal().unwrap(), f32s(&[1.0; 4]));
}

#[test]
fn explicit_delete_is_reported() {
    let c = client();
    let b = c.upload(&Literal::scalar(3i64), 1).unwrap();
    assert_eq!(b.device_id().unwrap(), c.addressable_devices()[1].id);
    b.delete().unwrap();
    assert!(b.is_deleted().unwrap());
    assert!(matches!(b.shape().unwrap_err(), Error::BufferDeleted(_)));
}

#[test]
fn second_compile_is_a_cache_hit_and_runs() {
    let c = client();
    let dir = tempfile::tempdir().unwrap();
    let cache = ExecutableCache::new(dir.path());
    let text = "func.func public @main(%x: tensor<3xi32>) -> tensor<3xi32> {\n  %0 = stablehlo.multiply %x, %x : tensor<3xi32>\n  return %0 : tensor<3xi32>\n}\n";
    let opts = CompileOptions::default();
    let (_, first) = c.compile_cached(&cache, text, &opts).unwrap();
    assert_eq!(first, CacheStatus::Miss);
    let names = || -> Vec<String> {
        let entries = std::fs::read_dir(dir.path().join("executables")).unwrap();
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let bins: Vec<String> = names()
        .into_iter()
        .filter(|n| n.ends_with(".bin"))
        .collect();
    assert_eq!(bins.len(), 1, "one cache file: {:?}", names());
    assert!(
        !names().iter().any(|n| n.ends_with(".tmp")),
        "temporary left behind: {:?}",
        names()
    );
    let (exe, second) = c.compile_cached(&cache, text, &opts).unwrap();
    assert_eq!(second, CacheStatus::Hit);
    assert_eq!((cache.hits(), cache.misses()), (1, 1));
    let x = c
        .upload(&Literal::from_slice(&[3], &[2i32, -3, 7]).unwrap(), 0)
        .unwrap();
    let out = exe.execute(&[vec![&x]]).unwrap();
    assert_eq!(
        out[0][0].to_literal().unwrap().to_vec::<i32>().unwrap(),
        vec![4, 9, 49]
    );
    // The parameter types are still checked for an executable loaded from the cache.
    let wrong = c
        .upload(&Literal::from_slice(&[3], &[1.0f32, 2.0, 3.0]).unwrap(), 0)
        .unwrap();
    assert!(exe.execute(&[vec![&wrong]]).is_err());

    // A client configured with the cache uses it behind the Backend trait.
    let cached: &dyn runtime::Backend = &c.clone().with_cache(ExecutableCache::new(dir.path()));
    let exe = cached.compile(text, &opts).unwrap();
    assert_eq!(exe.num_outputs(), 1);
    let backend_cache = cached_hits(c, dir.path(), text, &opts);
    assert_eq!(backend_cache, 1);

    // Different options are a different entry.
    let other = CompileOptions {
        env_option_overrides: [(
            "xla_cpu_enable_fast_math".to_string(),
            runtime::OptionOverride::Bool(false),
        )]
        .into_iter()
        .collect(),
        ..CompileOptions::default()
    };
    assert_eq!(
        c.compile_cached(&cache, text, &other).unwrap().1,
        CacheStatus::Miss
    );

    // A damaged file is ignored and replaced.
    let path = dir.path().join("executables").join(&bins[0]);
    std::fs::write(&path, b"GPTSANX1 not an executable").unwrap();
    assert_eq!(
        c.compile_cached(&cache, text, &opts).unwrap().1,
        CacheStatus::Miss
    );
    assert_eq!(
        c.compile_cached(&cache, text, &opts).unwrap().1,
        CacheStatus::Hit
    );
}

/// Hits of a fresh cache (same directory) attached to a client, after one Backend compile.
fn cached_hits(c: &Client, dir: &std::path::Path, text: &str, opts: &CompileOptions) -> u64 {
    let with = c.clone().with_cache(ExecutableCache::new(dir));
    runtime::Backend::compile(&with, text, opts).unwrap();
    with.cache().map(|c| c.hits()).unwrap_or(0)
}

#[test]
fn unknown_compile_option_is_a_pjrt_error() {
    let c = client();
    let opts = CompileOptions {
        env_option_overrides: [(
            "xla_no_such_option".to_string(),
            runtime::OptionOverride::Int(1),
        )]
        .into_iter()
        .collect(),
        ..CompileOptions::default()
    };
    let err = c.compile(DONATING_ADD, &opts).unwrap_err();
    assert!(err.to_string().contains("xla_no_such_option"), "{err}");
}

#[test]
fn serialize_and_deserialize_round_trip() {
    let c = client();
    let exe = c.compile(DONATING_ADD, &CompileOptions::default()).unwrap();
    let bytes = exe.serialize().unwrap();
    assert!(bytes.len() > 100, "{} bytes", bytes.len());
    let loaded = c.deserialize_executable(&bytes).unwrap();
    assert_eq!(loaded.num_outputs(), 1);
    let a = c.upload(&f32s(&[1.0, 1.0, 1.0, 1.0]), 0).unwrap();
    let b = c.upload(&f32s(&[0.5, 1.5, 2.5, 3.5]), 0).unwrap();
    let out = loaded.execute(&[vec![&a, &b]]).unwrap();
    assert_eq!(out[0][0].to_literal().unwrap(), f32s(&[1.5, 2.5, 3.5, 4.5]));
    // Donation survives serialization.
    assert!(a.is_deleted().unwrap());
    let err = c
        .deserialize_executable(b"definitely not an executable")
        .unwrap_err();
    assert!(matches!(err, Error::Pjrt { .. }), "{err}");
}

#[test]
fn client_options_are_type_checked_and_applied() {
    let path = common::plugin_path();
    let bad = ClientOptions {
        cpu_device_count: None,
        extra: vec![("cpu_device_count".into(), OptionValue::Bool(true))],
    };
    let err = Client::from_plugin_path(&path, &bad).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(
        err.to_string()
            .contains("cpu_device_count must be int64, got bool"),
        "{err}"
    );
    assert!(Client::from_plugin_path(&path, &ClientOptions::cpu_devices(0)).is_err());
    let two = Client::from_plugin_path(&path, &ClientOptions::cpu_devices(2)).unwrap();
    assert_eq!(two.device_count(), 2);
    assert_eq!(
        runtime::plugin_api_version(&path).unwrap(),
        two.api_version()
    );
    let attrs = two.plugin_attributes().unwrap();
    assert!(
        attrs.iter().any(|(k, _)| k.contains("stablehlo")),
        "{attrs:?}"
    );
}

#[test]
fn missing_plugin_gives_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no_such_plugin.so");
    let err = Client::open(
        &PluginRequest::Path(missing.clone()),
        &ClientOptions::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::PluginNotFound(_)), "{msg}");
    assert!(
        msg.contains(&missing.display().to_string()) && msg.contains("pip install"),
        "{msg}"
    );

    // Nothing installed anywhere and installation disabled.
    let env = plugin::SearchEnv {
        python_roots: vec![dir.path().join("site-packages")],
        cache_dir: dir.path().join("cache"),
        tpu: plugin::TpuProbe::None,
        nvidia: None,
        allow_install: false,
        python: "python3".into(),
    };
    let msg = plugin::discover(&PluginRequest::Auto, &env)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no CPU PJRT plugin found"), "{msg}");
    assert!(
        msg.contains("xla_cpu_pjrt.so") && msg.contains("GPTSAN_NO_PLUGIN_INSTALL"),
        "{msg}"
    );

    // A file that is not a plugin.
    let fake = dir.path().join("fake.so");
    std::fs::write(&fake, b"not a shared library").unwrap();
    let err = Client::from_plugin_path(&fake, &ClientOptions::default()).unwrap_err();
    assert!(matches!(err, Error::PluginLoad { .. }), "{err}");
    assert!(err.to_string().contains("fake.so"), "{err}");
}

#[test]
fn discovery_finds_the_installed_cpu_plugin() {
    let d = plugin::discover(
        &PluginRequest::Kind(runtime::PluginKind::Cpu),
        &plugin::SearchEnv::detect(),
    )
    .unwrap();
    assert!(
        d.path.ends_with("xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so"),
        "{}",
        d.path.display()
    );
    assert!(d.explain().contains("using CPU plugin"), "{}", d.explain());
}
