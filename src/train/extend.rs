//! Appending ext (dense) layers to a model, as the original does before fine-tuning:
//! every existing tensor is kept as is, the new blocks are drawn like a fresh model's,
//! and the extra position table is zero when it is new. The spout's output projection,
//! which has rows per layer, keeps its rows and gains drawn ones for the new layers.

use super::state::init_params;
use crate::model::params::param_specs;
use crate::model::ModelConfig;
use anyhow::{bail, Context, Result};
use hlo::Literal;
use std::collections::HashMap;

/// The config and parameters of `cfg` with `n` more ext layers.
pub fn add_ext_layers(
    cfg: &ModelConfig,
    params: &[Literal],
    n: i64,
    seed: u64,
) -> Result<(ModelConfig, Vec<Literal>)> {
    if n < 1 {
        bail!("--add-ext-layers must be at least 1");
    }
    let old: HashMap<String, &Literal> = param_specs(cfg)
        .into_iter()
        .map(|s| s.name)
        .zip(params)
        .collect();
    let mut grown = cfg.clone();
    grown.num_ext_layers += n;
    let specs = param_specs(&grown);
    let mut out = Vec::with_capacity(specs.len());
    for (k, spec) in specs.iter().enumerate() {
        let lit = match old.get(&spec.name) {
            Some(l) if l.dims() == spec.dims.as_slice() => (*l).clone(),
            // Each new tensor gets its own stream, so the draw does not depend on order.
            found => {
                let fresh = init_params(std::slice::from_ref(spec), seed.wrapping_add(k as u64));
                let fresh = fresh.into_iter().next().context("one tensor drawn")?;
                match found {
                    Some(l) => keep_leading_rows(l, fresh)?,
                    None => fresh,
                }
            }
        };
        out.push(lit);
    }
    Ok((grown, out))
}

/// A tensor whose first dimension grew with the layers (the spout's output projection,
/// rows laid out layer by layer): the old rows stay, the new layers' rows are `fresh`'s.
fn keep_leading_rows(old: &Literal, fresh: Literal) -> Result<Literal> {
    if old.dims().len() != fresh.dims().len()
        || old.dims()[1..] != fresh.dims()[1..]
        || old.dims()[0] > fresh.dims()[0]
    {
        bail!(
            "cannot grow a tensor of shape {:?} into {:?}",
            old.dims(),
            fresh.dims()
        );
    }
    let mut bytes = fresh.bytes().to_vec();
    bytes[..old.bytes().len()].copy_from_slice(old.bytes());
    Ok(Literal::from_bytes(fresh.shape().clone(), bytes)?)
}
