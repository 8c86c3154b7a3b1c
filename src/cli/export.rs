//! `gptsan export`: the StableHLO text of every program (train step, forward, prefill,
//! decode), their serialized executables, and a JSON manifest describing each argument and
//! result (order, shape, dtype, sharding, donation) with the configs.

use crate::device::Device;
use crate::generate::{decode_program, prefill_program};
use crate::model::checkpoint::write_atomic;
use crate::model::programs::{forward_program, ForwardShape};
use crate::train::run::{load_configs, parse_mesh};
use crate::train::step::{train_step_program, LossKind, StepSpec};
use anyhow::{Context, Result};
use hlo::{DType, Function, PartitionSpec};
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model + training config.
    #[arg(long, default_value = "configs/tiny.toml")]
    pub config: PathBuf,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Prompt length the prefill program is compiled for.
    #[arg(long, default_value_t = 32)]
    pub prompt_len: i64,
    /// Batch of the generation programs.
    #[arg(long, default_value_t = 1)]
    pub gen_batch: i64,
    /// SPMD mesh of the train step, e.g. data=2,model=2.
    #[arg(long)]
    pub mesh: Option<String>,
    #[arg(long)]
    pub plugin: Option<String>,
    /// Only write the StableHLO text and manifest (no compilation).
    #[arg(long)]
    pub no_executables: bool,
}

fn spec_json(spec: &Option<PartitionSpec>) -> Value {
    match spec {
        Some(s) => json!(s.dims),
        None => Value::Null,
    }
}

/// The manifest entry of one program.
pub fn describe(f: &Function) -> Value {
    let params: Vec<Value> = f
        .params
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "dtype": p.shape.dtype.name(),
                "shape": p.shape.dims,
                "sharding": spec_json(&p.sharding),
                "donated_to_output": p.alias_output,
            })
        })
        .collect();
    let outputs: Vec<Value> = f
        .outputs
        .iter()
        .map(|o| {
            let s = f.value_shape(o.value);
            json!({ "name": o.name, "dtype": s.dtype.name(), "shape": s.dims, "sharding": spec_json(&o.sharding) })
        })
        .collect();
    let mesh = f.mesh.as_ref().map(|m| json!(m.axes));
    json!({ "name": f.name, "mesh": mesh, "params": params, "outputs": outputs })
}

/// The collectives of a compiled program (kind, count, bytes per device), as listed in
/// the manifest and printed for people.
fn collectives_json(program: &crate::device::Program, name: &str) -> Result<Value> {
    let optimized = program.executable().optimized_program()?;
    let stats = runtime::collectives(&optimized)?;
    let text: Vec<String> = stats
        .iter()
        .map(|s| format!("{} {} ({:.2} MB)", s.count, s.kind, s.bytes as f64 / 1e6))
        .collect();
    eprintln!("{name}: collectives per device: {}", text.join(", "));
    Ok(json!(stats
        .iter()
        .map(|s| json!({ "kind": s.kind, "count": s.count, "bytes": s.bytes }))
        .collect::<Vec<_>>()))
}

pub fn run(args: Args) -> Result<()> {
    let (cfg, train) = load_configs(&args.config)?;
    let mesh = args.mesh.as_deref().map(parse_mesh).transpose()?;
    let step = StepSpec {
        batch: train.batch_size,
        len: train.seq_len,
        spout: train.spout != crate::train::config::SpoutMode::None,
        optimizer: train.optimizer.clone(),
        loss: LossKind::Original,
        clip_norm: train.clip_norm,
        decay_all: false,
        training: true,
        frozen: Vec::new(),
        mesh: mesh.clone().filter(|m| m.device_count() > 1),
        compute: hlo::DType::F32,
        loss_scale: Default::default(),
    };
    let slots = cfg.context;
    let programs: Vec<Function> = vec![
        train_step_program(&cfg, &step)?,
        forward_program(
            &cfg,
            ForwardShape {
                batch: train.batch_size,
                len: train.seq_len,
                spout: false,
                grads: false,
                loss: true,
                weights: hlo::DType::F32,
            },
        )?,
        prefill_program(
            &cfg,
            args.gen_batch,
            args.prompt_len,
            false,
            slots,
            DType::F32,
        )?,
        decode_program(&cfg, args.gen_batch, slots, DType::F32)?,
    ];
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let device = if args.no_executables {
        None
    } else {
        let n = mesh.as_ref().map(|m| m.device_count()).filter(|&n| n > 1);
        Some(Device::open(args.plugin.as_deref(), n)?)
    };
    let mut entries = Vec::new();
    for f in &programs {
        let text = hlo::emit::to_stablehlo(f, &hlo::emit::EmitOptions::default())?;
        let mlir_file = format!("{}.mlir", f.name);
        write_atomic(&args.out.join(&mlir_file), text.as_bytes())?;
        let mut entry = describe(f);
        entry["stablehlo"] = json!(mlir_file);
        if let Some(dev) = &device {
            let program = dev.compile_text(f, text, true)?;
            if f.mesh.is_some() {
                entry["collectives"] = collectives_json(&program, &f.name)?;
            }
            match program.executable().serialize() {
                Ok(bytes) => {
                    let exe_file = format!("{}.executable", f.name);
                    write_atomic(&args.out.join(&exe_file), &bytes)?;
                    entry["executable"] = json!(exe_file);
                }
                Err(e) => {
                    tracing::warn!("{}: the plugin cannot serialize executables: {e}", f.name)
                }
            }
        }
        entries.push(entry);
        eprintln!("exported {}", f.name);
    }
    let manifest = json!({
        "format": "gptsan-export-1",
        "model": cfg,
        "train": train,
        "plugin": device.as_ref().map(|d| d.describe()),
        "programs": entries,
    });
    write_atomic(
        &args.out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    println!(
        "wrote {} programs and manifest.json to {}",
        programs.len(),
        args.out.display()
    );
    Ok(())
}
