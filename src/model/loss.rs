//! Losses: the reference port's plain cross entropy, and the original's training loss
//! (cross entropy + z-loss + load balancing).

use hlo::ir::GatherDims;
use hlo::{DType, Tensor};

/// Mean cross entropy over positions whose label is not -100, as PyTorch's
/// `CrossEntropyLoss(ignore_index=-100)`. `logits [B, T, V]`, `labels [B, T]` s32.
/// Returns (mean loss, per-token log-sum-exp `[N]`, valid mask `[N]` f32).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> (Tensor, Tensor, Tensor) {
    let b = logits.builder();
    let v = logits.dims()[logits.rank() - 1];
    let n: i64 = labels.dims().iter().product();
    let flat = logits.convert(DType::F32).reshape(&[n, v]);
    let labels = labels.reshape(&[n]);
    let valid = labels.ne(&b.scalar(-100.0, DType::S32));
    let safe = valid.select(&labels, &b.scalar(0.0, DType::S32));
    let rows = b.iota(&hlo::Shape::new(DType::S32, vec![n]), 0);
    let index = b.concatenate(&[rows.reshape(&[n, 1]), safe.reshape(&[n, 1])], 1);
    let picked = flat.gather(
        &index,
        GatherDims {
            offset_dims: vec![],
            collapsed_slice_dims: vec![0, 1],
            start_index_map: vec![0, 1],
            index_vector_dim: 1,
            slice_sizes: vec![1, 1],
        },
    );
    let lse = flat.logsumexp(1);
    let validf = valid.convert(DType::F32);
    let count = validf.sum_all().max(&b.scalar(1.0, DType::F32));
    let loss = lse.sub(&picked).mul(&validf).sum_all().div(&count);
    (loss, lse, validf)
}

/// `mean over labelled tokens of logsumexp(logits)^2` (the original's z-loss, before its
/// coefficient).
pub fn z_loss(lse: &Tensor, valid: &Tensor) -> Tensor {
    let b = lse.builder();
    let count = valid.sum_all().max(&b.scalar(1.0, DType::F32));
    lse.square().mul(valid).sum_all().div(&count)
}
