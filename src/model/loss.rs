//! Losses: the reference port's plain cross entropy, and the original's training loss
//! (cross entropy + z-loss + load balancing).

use super::gptsan::{with_bias_column, with_ones_column};
use super::head_logsumexp::head_logsumexp;
use super::nn::linear;
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

/// [`cross_entropy`] of a tied LM head without indexing the logits: the label's logit is
/// recomputed as `h . wte[label] + bias[label]` from `h [B, T, d]` (the head's input),
/// the embedding `wte [V, d]` and `bias [1, V]`. Reading `[B*T, V]` logits at the labels
/// cost a full pass over them, and its gradient a scatter into the logits gradient;
/// this reads B*T rows of the embedding instead.
pub fn lm_head_cross_entropy(
    logits: &Tensor,
    h: &Tensor,
    wte: &Tensor,
    bias: &Tensor,
    labels: &Tensor,
) -> (Tensor, Tensor, Tensor) {
    let v = logits.dims()[logits.rank() - 1];
    let n: i64 = labels.dims().iter().product();
    let lse = logits.convert(DType::F32).reshape(&[n, v]).logsumexp(1);
    let (loss, validf) = label_cross_entropy(&lse, h, wte, bias, labels);
    (loss, lse, validf)
}

/// The cross entropy of a tied head given the per-token log-sum-exp of its logits
/// (`lse [N]`): the label's logit is recomputed from `h`, `wte` and `bias` (see
/// [`lm_head_cross_entropy`]). Returns (mean loss, valid mask `[N]` f32).
fn label_cross_entropy(
    lse: &Tensor,
    h: &Tensor,
    wte: &Tensor,
    bias: &Tensor,
    labels: &Tensor,
) -> (Tensor, Tensor) {
    let b = lse.builder();
    let v = bias.dims()[1];
    let d = h.dims()[h.rank() - 1];
    let n: i64 = labels.dims().iter().product();
    let labels = labels.reshape(&[n]);
    let valid = labels.ne(&b.scalar(-100.0, DType::S32));
    let safe = valid.select(&labels, &b.scalar(0.0, DType::S32));
    let h = h.reshape(&[n, d]).convert(DType::F32);
    let rows = wte.take_rows(&safe).convert(DType::F32); // [N, d]
    let picked = h
        .mul(&rows)
        .reduce_sum(&[1])
        .add(&bias.reshape(&[v]).take_rows(&safe).convert(DType::F32));
    let validf = valid.convert(DType::F32);
    let count = validf.sum_all().max(&b.scalar(1.0, DType::F32));
    let loss = lse.sub(&picked).mul(&validf).sum_all().div(&count);
    (loss, validf)
}

/// Per-token log-sum-exp `[N]` (f32) of the tied head's logits, computed as `[V, N]`
/// (`[wte, bias] . [h, 1]^T`, see [`with_bias_column`]): with d = 256 and V = 36,000
/// that orientation's forward and backward dots run at 200-230 GFLOP/s on the 2-core CPU
/// against 130 for `[N, V]`'s forward, and the bias in the dot spares a pass over the
/// logits for its add and another for its gradient. In f32 it is the [`head_logsumexp`]
/// composite, whose gradient kernel never writes the logits' cotangent.
fn transposed_head_logsumexp(h: &Tensor, wte_bias: &Tensor) -> Tensor {
    let d = h.dims()[h.rank() - 1];
    let n = h.dims().iter().product::<i64>() / d;
    let h1 = with_ones_column(&h.reshape(&[n, d]));
    if wte_bias.dtype() == DType::F32 {
        head_logsumexp(wte_bias, &h1)
    } else {
        linear(wte_bias, &h1).convert(DType::F32).logsumexp(0)
    }
}

/// Cross entropy and z-loss of the tied LM head, as the train step minimises them.
pub struct HeadLoss {
    /// Mean cross entropy over labelled tokens.
    pub ce: Tensor,
    /// Mean of `logsumexp(logits)^2` over labelled tokens (before its coefficient).
    pub z: Tensor,
}

/// About this many tokens per chunk of [`chunked_head_loss`] (c = this / B positions of
/// every row). Measured on the `small` train step (8 x 256, 2 cores): 1,024 keeps the
/// speed of one chunk; 512 costs 8% and 256 costs 14% (more, smaller matmuls).
pub const HEAD_LOSS_CHUNK: i64 = 1024;

/// [`lm_head_cross_entropy`] and [`z_loss`] computed chunk by chunk over the positions,
/// so that neither the logits nor their gradient ever exist as one `[B, T, V]` buffer.
/// Chunks take all rows, so a batch split over a `data` mesh axis stays split.
///
/// This does not lower the step's peak memory yet: autodiff keeps every chunk's logits
/// for the backward pass, so they are all alive at once. That needs the backward of a
/// chunk to run right after its forward (a loop with its own VJP), which the IR has no
/// control flow for.
/// `h [B, T, d]`, `wte [V, d]`, `bias [1, V]`, `labels [B, T]` s32 (-100: no label).
pub fn chunked_head_loss(h: &Tensor, wte: &Tensor, bias: &Tensor, labels: &Tensor) -> HeadLoss {
    let b = h.builder();
    let f32 = DType::F32;
    let (rows, t) = (labels.dims()[0], labels.dims()[1]);
    let valid = labels.ne(&b.scalar(-100.0, DType::S32)).convert(f32);
    let count = valid.sum_all().max(&b.scalar(1.0, f32));
    let step = (HEAD_LOSS_CHUNK / rows).max(1);
    let (mut ce_sum, mut z_sum) = (b.scalar(0.0, f32), b.scalar(0.0, f32));
    let wte_bias = with_bias_column(wte, bias);
    let mut start = 0;
    while start < t {
        let end = (start + step).min(t);
        let h_c = h.slice_dim(1, start, end);
        let labels_c = labels.slice_dim(1, start, end);
        let lse = transposed_head_logsumexp(&h_c, &wte_bias);
        let (ce_c, valid_c) = label_cross_entropy(&lse, &h_c, wte, bias, &labels_c);
        // Back from the chunk's mean to its sum.
        let count_c = valid_c.sum_all().max(&b.scalar(1.0, f32));
        ce_sum = ce_sum.add(&ce_c.mul(&count_c));
        z_sum = z_sum.add(&lse.square().mul(&valid_c).sum_all());
        start = end;
    }
    HeadLoss {
        ce: ce_sum.div(&count),
        z: z_sum.div(&count),
    }
}

/// `mean over labelled tokens of logsumexp(logits)^2` (the original's z-loss, before its
/// coefficient).
pub fn z_loss(lse: &Tensor, valid: &Tensor) -> Tensor {
    let b = lse.builder();
    let count = valid.sum_all().max(&b.scalar(1.0, DType::F32));
    lse.square().mul(valid).sum_all().div(&count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gptsan::lm_head;
    use hlo::{Builder, Literal, Shape};

    /// The tied-head cross entropy equals the plain one (loss, log-sum-exp) and so do
    /// their gradients with respect to the head's input and the embedding.
    #[test]
    fn tied_head_cross_entropy_equals_the_plain_one() {
        let (n, d, v) = (6, 3, 7);
        let b = Builder::new("ce");
        let h = b.parameter("h", Shape::new(DType::F32, vec![1, n, d]));
        let wte = b.parameter("wte", Shape::new(DType::F32, vec![v, d]));
        let bias = b.parameter("bias", Shape::new(DType::F32, vec![1, v]));
        let labels = b.parameter("labels", Shape::new(DType::S32, vec![1, n]));
        let logits = lm_head(&h, &wte, &bias);
        let (plain, lse_p, _) = cross_entropy(&logits, &labels);
        let (tied, lse_t, _) = lm_head_cross_entropy(&logits, &h, &wte, &bias, &labels);
        let wrt = [h.clone(), wte.clone(), bias.clone()];
        let gp = hlo::autodiff::grad(&plain, &wrt).unwrap();
        let gt = hlo::autodiff::grad(&tied, &wrt).unwrap();
        let mut outs = vec![&plain, &tied, &lse_p, &lse_t];
        outs.extend(gp.iter().chain(&gt));
        let f = b.build(&outs).unwrap();
        let vals = |k: i64, s: f32| {
            (0..k)
                .map(|i| (i as f32 * 0.71 + s).sin())
                .collect::<Vec<_>>()
        };
        let args = [
            Literal::from_slice(&[1, n, d], &vals(n * d, 0.2)).unwrap(),
            Literal::from_slice(&[v, d], &vals(v * d, 0.5)).unwrap(),
            Literal::from_slice(&[1, v], &vals(v, 0.9)).unwrap(),
            Literal::from_slice(&[1, n], &[3i32, -100, 0, 6, 6, -100]).unwrap(),
        ];
        let r = hlo::interpret::evaluate(&f, &args).unwrap();
        for (a, b) in [(0, 1), (2, 3), (4, 7), (5, 8), (6, 9)] {
            let (x, y) = (r[a].to_f64_vec(), r[b].to_f64_vec());
            for (p, q) in x.iter().zip(&y) {
                assert!((p - q).abs() <= 1e-5, "outputs {a} and {b}: {p} vs {q}");
            }
        }
    }

    /// The chunked loss (1,500 positions of 2 rows: chunks of 512, the last one partial) equals the plain
    /// cross entropy and z-loss in value and in its gradients for the head's input, the
    /// embedding and the bias.
    #[test]
    fn chunked_head_loss_equals_the_plain_one() {
        let (n, d, v) = (3000, 3, 7);
        let b = Builder::new("chunked");
        let h = b.parameter("h", Shape::new(DType::F32, vec![2, n / 2, d]));
        let wte = b.parameter("wte", Shape::new(DType::F32, vec![v, d]));
        let bias = b.parameter("bias", Shape::new(DType::F32, vec![1, v]));
        let labels = b.parameter("labels", Shape::new(DType::S32, vec![2, n / 2]));
        // The reference head written out plainly (`lm_head` folds the bias into its dot
        // for this many positions, as the chunked loss does).
        let logits = linear(&h, &wte).add(&bias.reshape(&[v]));
        let (ce, lse, valid) = cross_entropy(&logits, &labels);
        let z = z_loss(&lse, &valid);
        let plain = ce.add(&z.mul_scalar(0.3));
        let got = chunked_head_loss(&h, &wte, &bias, &labels);
        let chunked = got.ce.add(&got.z.mul_scalar(0.3));
        let wrt = [h.clone(), wte.clone(), bias.clone()];
        let gp = hlo::autodiff::grad(&plain, &wrt).unwrap();
        let gc = hlo::autodiff::grad(&chunked, &wrt).unwrap();
        let mut outs = vec![&ce, &got.ce, &z, &got.z];
        outs.extend(gp.iter().chain(&gc));
        let f = b.build(&outs).unwrap();
        let vals = |k: i64, s: f32| {
            (0..k)
                .map(|i| (i as f32 * 0.37 + s).sin() * 2.0)
                .collect::<Vec<_>>()
        };
        let label_vals: Vec<i32> = (0..n)
            .map(|i| {
                if i % 11 == 3 {
                    -100
                } else {
                    (i * 5 % v) as i32
                }
            })
            .collect();
        let args = [
            Literal::from_slice(&[2, n / 2, d], &vals(n * d, 0.2)).unwrap(),
            Literal::from_slice(&[v, d], &vals(v * d, 0.5)).unwrap(),
            Literal::from_slice(&[1, v], &vals(v, 0.9)).unwrap(),
            Literal::from_slice(&[2, n / 2], &label_vals).unwrap(),
        ];
        let r = hlo::interpret::evaluate(&f, &args).unwrap();
        for (a, b) in [(0, 1), (2, 3), (4, 7), (5, 8), (6, 9)] {
            let (x, y) = (r[a].to_f64_vec(), r[b].to_f64_vec());
            for (p, q) in x.iter().zip(&y) {
                assert!((p - q).abs() <= 1e-5, "outputs {a} and {b}: {p} vs {q}");
            }
        }
    }
}
