//! Generation programs with a device-resident KV cache: `prefill` runs the prompt once and
//! fills the cache; `decode_step` feeds one token per row and attends over the cache.
//!
//! The cache is one tensor `[L, 2, B, H, M, dh]` (layer, key/value, batch, head, slot,
//! head dim). Slot 0 holds the spout's key/value when a spout is used; the prompt follows,
//! then one slot per generated token. Which slots are real (not padding, not yet written)
//! comes from the host as `key_valid [B, M]`.

use super::attention::{attend, project_qkv};
use super::config::ModelConfig;
use super::gptsan::{
    add_norm, attention_weights, embed, extra_positions, feed_forward, forward, last_project,
    lm_head, Batch, Params,
};
use super::mask::prefix_lm_mask;
use hlo::{DType, Shape, Tensor};

/// Cache dimensions for a batch of `batch` rows and `slots` positions.
pub fn cache_shape(cfg: &ModelConfig, batch: i64, slots: i64) -> Shape {
    Shape::new(
        DType::F32,
        vec![
            cfg.num_layers(),
            2,
            batch,
            cfg.num_heads,
            slots,
            cfg.head_dim(),
        ],
    )
}

/// Runs the prompt; returns the logits of its last position `[B, V]` and the cache with
/// `slots` positions (the prompt's keys/values first, zeros after).
pub fn prefill(cfg: &ModelConfig, p: &Params, batch: &Batch, slots: i64) -> (Tensor, Tensor) {
    let out = forward(cfg, p, batch, false, None);
    let (b, t, d) = (
        out.last_hidden.dims()[0],
        out.last_hidden.dims()[1],
        out.last_hidden.dims()[2],
    );
    let last = out.last_hidden.slice_dim(1, t - 1, t).reshape(&[b, d]);
    let logits = lm_head(
        &last,
        p.get("model.embed_tokens.weight"),
        p.get("final_logits_bias"),
    );
    let bld = batch.input_ids.builder();
    let layers: Vec<Tensor> = out
        .presents
        .iter()
        .map(|(k, v)| {
            let dims = k.dims().to_vec();
            let one = |x: &Tensor| x.reshape(&[1, 1, dims[0], dims[1], dims[2], dims[3]]);
            bld.concatenate(&[one(k), one(v)], 1)
        })
        .collect();
    let stacked = bld.concatenate(&layers, 0);
    let used = stacked.dims()[4];
    let zero = bld.scalar(0.0, DType::F32);
    let cache = stacked.pad(&zero, &[0; 6], &[0, 0, 0, 0, slots - used, 0], &[0; 6]);
    (logits, cache)
}

/// One token per row: writes its keys/values into slot `cur` and returns the next-token
/// logits `[B, V]` with the updated cache. `token`, `position`: `[B, 1]` s32;
/// `key_valid`: `[B, M]` pred (slot `cur` included); `cur`: s32 scalar (one slot for all
/// rows), or `[B]` s32 (a slot per row, for continuous batching, where rows joined at
/// different times; `key_valid` alone then says what each row sees, as nothing past a
/// row's `cur` is valid).
pub fn decode_step(
    cfg: &ModelConfig,
    p: &Params,
    cache: &Tensor,
    token: &Tensor,
    position: &Tensor,
    key_valid: &Tensor,
    cur: &Tensor,
) -> (Tensor, Tensor) {
    let bld = token.builder().clone();
    let dims = cache.dims().to_vec();
    let (b, h, m, dh) = (dims[2], dims[3], dims[4], dims[5]);
    let s32 = |v: i64| bld.scalar(v as f64, DType::S32);
    let no_prefix = bld.splat(0.0, &Shape::new(DType::Pred, vec![b, m]));
    let per_row = cur.rank() == 1;
    // Per-row slots: the causal bound is every slot (key_valid already ends at `cur`).
    let offset = if per_row { s32(m - 1) } else { cur.clone() };
    let mask = prefix_lm_mask(key_valid, &no_prefix, 1, &offset);
    // Per-row slots: a free row (no valid key) takes no expert capacity.
    let routed = per_row.then(|| key_valid.reduce_or(&[1]).reshape(&[b, 1]));

    let mut cache = cache.clone();
    let mut x = embed(p, token, position);
    for layer in 0..cfg.num_layers() {
        if layer == cfg.num_switch_layers && cfg.num_ext_layers > 0 {
            x = x.add(&extra_positions(p, position));
        }
        let w = attention_weights(p, layer);
        let (q, k, v) = project_qkv(&x, &w, cfg.num_heads);
        cache = write_slot(&cache, &k, layer, 0, cur);
        cache = write_slot(&cache, &v, layer, 1, cur);
        let read = |which: i64| {
            cache
                .slice(
                    &[layer, which, 0, 0, 0, 0],
                    &[layer + 1, which + 1, b, h, m, dh],
                    &[1; 6],
                )
                .reshape(&[b, h, m, dh])
        };
        let attn = attend(&q, &read(0), &read(1), &mask, w.out);
        x = add_norm(cfg, p, layer, "self_attn", &x, &attn);
        let (ff, _) = feed_forward(cfg, p, layer, &x, false, None, routed.as_ref());
        x = add_norm(cfg, p, layer, "feed_forward", &x, &ff);
    }
    let last = last_project(p, &x).reshape(&[b, cfg.d_model]);
    let logits = lm_head(
        &last,
        p.get("model.embed_tokens.weight"),
        p.get("final_logits_bias"),
    );
    (logits, cache)
}

/// Writes one key or value per row, `kv` (`[B, H, dh]` in any shape of that size), into
/// `cache[layer, which]` at slot `cur`: a scalar slot for all rows, or a slot per row
/// (`[B]`: one small update per row, which XLA does in place in the donated cache).
fn write_slot(cache: &Tensor, kv: &Tensor, layer: i64, which: i64, cur: &Tensor) -> Tensor {
    let bld = cache.builder();
    let dims = cache.dims().to_vec();
    let (b, h, dh) = (dims[2], dims[3], dims[5]);
    let s32 = |v: i64| bld.scalar(v as f64, DType::S32);
    if cur.rank() == 0 {
        let at = [s32(layer), s32(which), s32(0), s32(0), cur.clone(), s32(0)];
        return cache.dynamic_update_slice(&kv.reshape(&[1, 1, b, h, 1, dh]), &at);
    }
    let rows = kv.reshape(&[b, h, dh]);
    let mut cache = cache.clone();
    for r in 0..b {
        let one = rows.slice_dim(0, r, r + 1).reshape(&[1, 1, 1, h, 1, dh]);
        let slot = cur.slice_dim(0, r, r + 1).reshape(&[]);
        let at = [s32(layer), s32(which), s32(r), s32(0), slot, s32(0)];
        cache = cache.dynamic_update_slice(&one, &at);
    }
    cache
}
