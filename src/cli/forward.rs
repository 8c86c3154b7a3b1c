//! `gptsan forward`: run a checkpoint on explicit token ids and write logits, per-layer
//! hidden states, router choices, the loss and (with `--grads`) every gradient to a
//! safetensors file. The research "look inside" tool; fixtures are checked the same way.

use crate::device::Device;
use crate::model::checkpoint::{read_safetensors, tensors_for_save, write_safetensors};
use crate::model::inputs::{int_rows, HostBatch, PositionRule};
use crate::model::programs::{forward_args, forward_program, on_mesh, ForwardShape};
use crate::train::checkpoint::load_model_or_run;
use crate::train::run::{check_mesh, parse_mesh};
use anyhow::{bail, Context, Result};
use hlo::Literal;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model folder (ours, or a Hugging Face one with config.json + model.safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// safetensors with `input_ids` [B,T] (i32/i64) and optionally `attention_mask`,
    /// `token_type_ids`, `labels` (-100 = ignore) and `spout` [B,S] f32.
    #[arg(long)]
    pub inputs: PathBuf,
    /// Where to write the outputs (safetensors).
    #[arg(long)]
    pub output: PathBuf,
    /// Also write `grad.<name>` for every parameter and `grad_global_norm`.
    #[arg(long)]
    pub grads: bool,
    /// PJRT plugin (path or cpu|cuda|tpu).
    #[arg(long)]
    pub plugin: Option<String>,
    /// Run SPMD over a device mesh, e.g. model=2 (experts and heads split) or
    /// data=2,model=2 (rows split too). The results equal one device's.
    #[arg(long)]
    pub mesh: Option<String>,
    /// Number of (CPU) devices to open (default: the mesh's size).
    #[arg(long)]
    pub devices: Option<i64>,
}

pub fn run(args: Args) -> Result<()> {
    let (cfg, params) = load_model_or_run(&args.model)?;
    let mut inputs = read_safetensors(&args.inputs)?;
    let where_ = args.inputs.display().to_string();
    let ids = inputs
        .remove("input_ids")
        .with_context(|| format!("{where_}: no input_ids tensor"))?;
    let (b, t) = match ids.dims() {
        [b, t] => (*b as usize, *t as usize),
        d => bail!("{where_}: input_ids must be [batch, tokens], got {d:?}"),
    };
    let rows = |lit: Option<Literal>, name: &str, default: i32| -> Result<Vec<i32>> {
        match lit {
            Some(l) if l.dims() != ids.dims() => {
                bail!(
                    "{where_}: {name} has shape {:?}, input_ids has {:?}",
                    l.dims(),
                    ids.dims()
                )
            }
            Some(l) => int_rows(&l, name).with_context(|| where_.clone()),
            None => Ok(vec![default; b * t]),
        }
    };
    let input_ids = int_rows(&ids, "input_ids").with_context(|| where_.clone())?;
    let attention_mask = rows(inputs.remove("attention_mask"), "attention_mask", 1)?;
    let token_type_ids = rows(inputs.remove("token_type_ids"), "token_type_ids", 0)?;
    let has_labels = inputs.contains_key("labels");
    let labels = rows(inputs.remove("labels"), "labels", -100)?;
    let spout = match inputs.remove("spout") {
        Some(s) => Some(crate::model::checkpoint::convert_f32(&s).to_vec::<f32>()?),
        None => None,
    };
    let batch = HostBatch {
        batch: b,
        len: t,
        input_ids,
        attention_mask,
        token_type_ids,
        spout,
    };
    let width = if cfg.has_spout() { cfg.spout_width } else { 0 };
    batch
        .validate(cfg.vocab_size, cfg.context, width)
        .with_context(|| where_.clone())?;
    if let Some(bad) = labels
        .iter()
        .find(|&&l| l != -100 && (l < 0 || l as i64 >= cfg.vocab_size))
    {
        bail!(
            "{where_}: label {bad} is out of range for a vocabulary of {}",
            cfg.vocab_size
        );
    }

    let mesh = args.mesh.as_deref().map(parse_mesh).transpose()?;
    let mesh = mesh.filter(|m| m.device_count() > 1);
    let wanted = args.devices.or(mesh.as_ref().map(|m| m.device_count()));
    let device = Device::open(args.plugin.as_deref(), wanted)?;
    let shape = ForwardShape {
        batch: b as i64,
        len: t as i64,
        spout: batch.spout.is_some(),
        grads: args.grads,
        loss: has_labels,
        weights: hlo::DType::F32,
    };
    let mut f = forward_program(&cfg, shape)?;
    if let Some(m) = &mesh {
        check_mesh(m, device.device_count(), &cfg, b as i64)?;
        f = on_mesh(f, &cfg, m);
    }
    let program = device.compile(&f)?;
    let positions = batch.positions(cfg.context, PositionRule::Reference);
    let _awake = device.keep_cores_awake();
    let out = program.run_literals(&forward_args(&params, &batch, &positions, &labels)?)?;

    let mut named: Vec<(String, Literal)> = Vec::new();
    let mut grads = Vec::new();
    for (name, lit) in program.output_names().into_iter().zip(out) {
        if name.starts_with("grad.") && name != "grad_global_norm" {
            grads.push(lit);
        } else {
            named.push((name, lit));
        }
    }
    if args.grads {
        // Gradients in the port's names (per-expert tensors).
        for (name, g) in tensors_for_save(&cfg, &grads) {
            named.push((format!("grad.{name}"), g));
        }
    }
    let refs: Vec<(String, &Literal)> = named.iter().map(|(n, l)| (n.clone(), l)).collect();
    write_safetensors(&args.output, &refs, None)?;
    let loss = named
        .iter()
        .find(|(n, _)| n == "loss")
        .map(|(_, l)| l.to_f64_vec()[0]);
    eprintln!(
        "wrote {} tensors to {}{}",
        named.len(),
        args.output.display(),
        loss.map(|l| format!(" (loss {l:.6})")).unwrap_or_default()
    );
    Ok(())
}
