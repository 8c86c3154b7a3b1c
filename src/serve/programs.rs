//! The two device programs continuous batching adds to the generator's prefill:
//! a decode step with a write slot per row, and the copy of one prefilled row into a
//! slot of the batch cache.

use crate::model::decode::{cache_shape, decode_step};
use crate::model::gptsan::Params;
use crate::model::params::param_specs;
use crate::model::ModelConfig;
use anyhow::{anyhow, Result};
use hlo::{Builder, DType, Function, Shape};

/// One token for each of `batch` rows, each written at its own cache slot `cur [B]`.
/// Arguments: parameters, cache (donated), token `[B, 1]`, position `[B, 1]`,
/// key_valid `[B, slots]`, cur `[B]`; outputs: logits `[B, V]`, cache.
pub fn slot_decode_program(
    cfg: &ModelConfig,
    batch: i64,
    slots: i64,
    weights: DType,
) -> Result<Function> {
    let b = Builder::new("slot_decode");
    let params = Params::declare_stored(&b, &param_specs(cfg), weights);
    let cache = b.parameter("cache", cache_shape(cfg, batch, slots));
    let token = b.parameter("token", Shape::new(DType::S32, vec![batch, 1]));
    let position = b.parameter("position", Shape::new(DType::S32, vec![batch, 1]));
    let key_valid = b.parameter("key_valid", Shape::new(DType::S32, vec![batch, slots]));
    let cur = b.parameter("cur", Shape::new(DType::S32, vec![batch]));
    let valid = key_valid.ne(&b.scalar(0.0, DType::S32));
    let (logits, new_cache) = decode_step(cfg, &params, &cache, &token, &position, &valid, &cur);
    let mut f = b.build_named(&[("logits", &logits), ("cache", &new_cache)])?;
    f.donate(params.names().len(), 1).map_err(|e| anyhow!(e))?;
    Ok(f)
}

/// Replaces row `row` (s32 scalar) of the batch cache (donated) by a one-row cache from
/// the prefill program.
pub fn insert_row_program(cfg: &ModelConfig, batch: i64, slots: i64) -> Result<Function> {
    let b = Builder::new("insert_row");
    let cache = b.parameter("cache", cache_shape(cfg, batch, slots));
    let one = b.parameter("row_cache", cache_shape(cfg, 1, slots));
    let row = b.parameter("row", Shape::scalar(DType::S32));
    let zero = b.scalar(0.0, DType::S32);
    let at = [
        zero.clone(),
        zero.clone(),
        row,
        zero.clone(),
        zero.clone(),
        zero,
    ];
    let new_cache = cache.dynamic_update_slice(&one, &at);
    let mut f = b.build_named(&[("cache", &new_cache)])?;
    f.donate(0, 0).map_err(|e| anyhow!(e))?;
    Ok(f)
}
