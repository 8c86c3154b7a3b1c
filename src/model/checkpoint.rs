//! Checkpoints as safetensors files with the reference port's parameter names.
//!
//! A model folder holds `model.safetensors` (per-expert tensors, as the port stores them),
//! `config.json` (the port's config) and `gptsan.json` (our config, with routing
//! semantics). A Hugging Face model folder (config.json + model.safetensors) loads as is.
//! Writes are atomic: a temporary file is written, fsynced and renamed into place.

use super::config::ModelConfig;
use super::params::{param_specs, ParamSpec};
use anyhow::{bail, Context, Result};
use hlo::{DType, Literal, Shape};
use safetensors::tensor::{Dtype as StDtype, TensorView};
use safetensors::SafeTensors;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const HF_CONFIG_FILE: &str = "config.json";
pub const CONFIG_FILE: &str = "gptsan.json";

fn to_dtype(d: StDtype) -> Option<DType> {
    Some(match d {
        StDtype::BOOL => DType::Pred,
        StDtype::I32 => DType::S32,
        StDtype::I64 => DType::S64,
        StDtype::U32 => DType::U32,
        StDtype::U64 => DType::U64,
        StDtype::F16 => DType::F16,
        StDtype::BF16 => DType::Bf16,
        StDtype::F32 => DType::F32,
        StDtype::F64 => DType::F64,
        _ => return None,
    })
}

fn from_dtype(d: DType) -> StDtype {
    match d {
        DType::Pred => StDtype::BOOL,
        DType::S32 => StDtype::I32,
        DType::S64 => StDtype::I64,
        DType::U32 => StDtype::U32,
        DType::U64 => StDtype::U64,
        DType::F16 => StDtype::F16,
        DType::Bf16 => StDtype::BF16,
        DType::F32 => StDtype::F32,
        DType::F64 => StDtype::F64,
    }
}

/// Reads every tensor of a safetensors file, by name.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Literal>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: the map is read-only and dropped before this function returns; a file
    // changed underneath us could give wrong values but not memory unsafety in practice.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("cannot map {}", path.display()))?;
    let st = SafeTensors::deserialize(&map).map_err(|e| {
        anyhow::anyhow!("{} is not a valid safetensors file: {e:?}", path.display())
    })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let dtype = to_dtype(view.dtype()).with_context(|| {
            format!(
                "{}: tensor {name} has unsupported type {:?}",
                path.display(),
                view.dtype()
            )
        })?;
        let dims: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let lit = Literal::from_bytes(Shape::new(dtype, dims), view.data().to_vec())
            .with_context(|| format!("{}: tensor {name}", path.display()))?;
        out.insert(name, lit);
    }
    Ok(out)
}

/// Writes tensors to a safetensors file atomically.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, &Literal)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, l)| {
            let shape: Vec<usize> = l.dims().iter().map(|&d| d as usize).collect();
            let v = TensorView::new(from_dtype(l.dtype()), shape, l.bytes())
                .map_err(|e| anyhow::anyhow!("tensor {n}: {e:?}"))?;
            Ok((n.clone(), v))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, metadata)
        .map_err(|e| anyhow::anyhow!("cannot serialize {}: {e:?}", path.display()))?;
    write_atomic(path, &bytes)
}

pub use crate::atomic_file::write_atomic;

/// The port's per-expert names for our stacked expert tensor, if `name` is one.
fn expert_parts(name: &str, experts: i64) -> Option<Vec<String>> {
    let stem = name.strip_suffix(".weight")?;
    let (prefix, proj) = stem.rsplit_once(".experts.")?;
    Some(
        (0..experts)
            .map(|e| format!("{prefix}.experts.expert_{e}.{proj}.weight"))
            .collect(),
    )
}

/// Model parameters in `param_specs` order, from the port's tensors (stacking experts).
pub fn params_from_tensors(
    cfg: &ModelConfig,
    tensors: &mut BTreeMap<String, Literal>,
    source: &Path,
) -> Result<Vec<Literal>> {
    let specs = param_specs(cfg);
    let mut out = Vec::with_capacity(specs.len());
    for spec in &specs {
        let lit = match expert_parts(&spec.name, cfg.num_experts) {
            Some(parts) => stack(spec, &parts, tensors, source)?,
            None => take(spec, &spec.name, &spec.dims, tensors, source)?,
        };
        out.push(lit);
    }
    Ok(out)
}

fn take(
    spec: &ParamSpec,
    name: &str,
    dims: &[i64],
    tensors: &mut BTreeMap<String, Literal>,
    source: &Path,
) -> Result<Literal> {
    let lit = tensors.remove(name).with_context(|| {
        format!(
            "{}: missing parameter {name} (shape {dims:?})",
            source.display()
        )
    })?;
    if lit.dims() != dims {
        bail!(
            "{}: parameter {name} has shape {:?}, the config needs {dims:?} (group {})",
            source.display(),
            lit.dims(),
            spec.group.name()
        );
    }
    if !lit.dtype().is_float() {
        bail!(
            "{}: parameter {name} has non-float type {}",
            source.display(),
            lit.dtype()
        );
    }
    Ok(convert_f32(&lit))
}

fn stack(
    spec: &ParamSpec,
    parts: &[String],
    tensors: &mut BTreeMap<String, Literal>,
    source: &Path,
) -> Result<Literal> {
    let mut bytes = Vec::new();
    for part in parts {
        let lit = take(spec, part, &spec.dims[1..], tensors, source)?;
        bytes.extend_from_slice(lit.bytes());
    }
    Ok(Literal::from_bytes(
        Shape::new(DType::F32, spec.dims.clone()),
        bytes,
    )?)
}

/// Any float literal as f32 (checkpoints may be stored in bf16/f16).
pub fn convert_f32(lit: &Literal) -> Literal {
    if lit.dtype() == DType::F32 {
        return lit.clone();
    }
    let v: Vec<f32> = lit.to_f64_vec().into_iter().map(|x| x as f32).collect();
    Literal::from_slice(lit.dims(), &v).expect("same element count")
}

/// Reads a model folder (ours or a Hugging Face one). Run folders are resolved to their
/// newest checkpoint by `train::checkpoint::load_model_or_run`, so this module knows
/// nothing of training.
pub fn load_model_dir(dir: &Path) -> Result<(ModelConfig, Vec<Literal>)> {
    let ours = dir.join(CONFIG_FILE);
    let cfg = if ours.exists() {
        ModelConfig::load(&ours)?
    } else {
        let hf = dir.join(HF_CONFIG_FILE);
        if !hf.exists() {
            bail!(
                "{} holds no model: neither {CONFIG_FILE} nor {HF_CONFIG_FILE} is there",
                dir.display()
            );
        }
        ModelConfig::load(&hf)?
    };
    let weights = dir.join(WEIGHTS_FILE);
    let mut tensors = read_safetensors(&weights)?;
    let params = params_from_tensors(&cfg, &mut tensors, &weights)?;
    // The port does not store the tied head; anything else left over is worth a warning.
    for name in tensors.keys() {
        tracing::warn!("{}: ignoring unknown tensor {name}", weights.display());
    }
    Ok((cfg, params))
}

/// The port's tensors for our parameters (unstacking experts).
pub fn tensors_for_save(cfg: &ModelConfig, params: &[Literal]) -> Vec<(String, Literal)> {
    let specs = param_specs(cfg);
    let mut out = Vec::new();
    for (spec, lit) in specs.iter().zip(params) {
        match expert_parts(&spec.name, cfg.num_experts) {
            Some(parts) => {
                let per = lit.bytes().len() / parts.len();
                for (e, part) in parts.into_iter().enumerate() {
                    let bytes = lit.bytes()[e * per..(e + 1) * per].to_vec();
                    let shape = Shape::new(lit.dtype(), spec.dims[1..].to_vec());
                    out.push((
                        part,
                        Literal::from_bytes(shape, bytes).expect("sizes match"),
                    ));
                }
            }
            None => out.push((spec.name.clone(), lit.clone())),
        }
    }
    out
}

/// Writes a model folder: weights in the port's names, the port's config and ours.
pub fn save_model_dir(dir: &Path, cfg: &ModelConfig, params: &[Literal]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tensors = tensors_for_save(cfg, params);
    let refs: Vec<(String, &Literal)> = tensors.iter().map(|(n, l)| (n.clone(), l)).collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(&dir.join(WEIGHTS_FILE), &refs, Some(meta))?;
    write_atomic(
        &dir.join(HF_CONFIG_FILE),
        serde_json::to_string_pretty(&cfg.to_hf_json())?.as_bytes(),
    )?;
    write_atomic(
        &dir.join(CONFIG_FILE),
        serde_json::to_string_pretty(cfg)?.as_bytes(),
    )?;
    Ok(())
}
