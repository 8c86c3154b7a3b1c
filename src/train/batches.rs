//! Which examples each step trains on, and the batch arguments of the train step.
//! Examples are visited in a seeded shuffled order per epoch; the position in that stream
//! (`cursor`) is all a checkpoint needs to continue with the same examples.

use super::config::{SpoutMode, TrainConfig};
use crate::data::source::DataSource;
use crate::data::{shuffled_order, Example};
use crate::generate::sampling::Rng;
use crate::model::ModelConfig;
use anyhow::Result;
use hlo::Literal;

/// Keeps the held-out choice apart from the epoch orders of the same seed.
const HELD_OUT_SALT: u64 = 0x4e1d_0ff5;

/// The examples split into training and held-out ones.
pub(crate) struct Split {
    /// Training example indices, ascending; None: all examples (nothing held out).
    pub train: Option<Vec<usize>>,
    pub held_out: Vec<usize>,
}

/// A seeded choice of `fraction` of `n` examples to hold out (at least one when the
/// fraction is positive), never so many that less than one batch is left to train on.
pub(crate) fn split_held_out(n: usize, fraction: f64, batch: usize, seed: u64) -> Split {
    let wanted = ((n as f64 * fraction).round() as usize).max((fraction > 0.0) as usize);
    let k = wanted.min(n.saturating_sub(batch));
    if k == 0 {
        return Split {
            train: None,
            held_out: Vec::new(),
        };
    }
    let mut perm = shuffled_order(n, seed ^ HELD_OUT_SALT);
    let mut held_out = perm.split_off(n - k);
    perm.sort_unstable();
    held_out.sort_unstable();
    Split {
        train: Some(perm),
        held_out,
    }
}

/// The shuffled stream of training examples.
pub(crate) struct ExampleStream<'a> {
    examples: &'a DataSource,
    /// Which examples train (None: all).
    indices: Option<&'a [usize]>,
    seed: u64,
    epoch: u64,
    order: Vec<usize>,
}

impl<'a> ExampleStream<'a> {
    /// The stream positioned at `cursor` (examples consumed since the start of the run).
    pub fn new(
        examples: &'a DataSource,
        indices: Option<&'a [usize]>,
        seed: u64,
        cursor: u64,
    ) -> Self {
        let len = indices.map_or(examples.len(), <[usize]>::len);
        let epoch = cursor / len as u64;
        ExampleStream {
            examples,
            indices,
            seed,
            epoch,
            order: shuffled_order(len, seed.wrapping_add(epoch)),
        }
    }

    /// The next `n` examples; advances `cursor`.
    pub fn next_batch(&mut self, n: i64, cursor: &mut u64) -> Vec<Example> {
        let len = self.order.len() as u64;
        let mut picked = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let e = *cursor / len;
            if e != self.epoch {
                self.epoch = e;
                self.order = shuffled_order(len as usize, self.seed.wrapping_add(e));
            }
            let k = self.order[(*cursor % len) as usize];
            let i = self.indices.map_or(k, |ix| ix[k]);
            picked.push(self.examples.example(i));
            *cursor += 1;
        }
        picked
    }
}

/// The batch arguments as literals: ids, positions, mask, token types, labels, spout.
pub(crate) fn batch_literals(
    picked: &[Example],
    cfg: &ModelConfig,
    train: &TrainConfig,
    host_rng: &mut Rng,
    not: i32,
) -> Result<Vec<Literal>> {
    let (b, t) = (picked.len() as i64, train.seq_len);
    let past = (train.spout != SpoutMode::None) as i32;
    let mut ids = Vec::new();
    let mut labels = Vec::new();
    let mut mask = Vec::new();
    let mut types = Vec::new();
    for e in picked {
        ids.extend_from_slice(&e.input_ids);
        labels.extend_from_slice(&e.labels);
        types.extend_from_slice(&e.token_types);
        mask.extend(e.input_ids.iter().map(|&x| (x != not) as i32));
    }
    let positions: Vec<i32> = (0..b)
        .flat_map(|_| (0..t as i32).map(|p| (p + past).min(cfg.context as i32 - 1)))
        .collect();
    let dims = [b, t];
    let mut out = vec![
        Literal::from_slice(&dims, &ids)?,
        Literal::from_slice(&dims, &positions)?,
        Literal::from_slice(&dims, &mask)?,
        Literal::from_slice(&dims, &types)?,
        Literal::from_slice(&dims, &labels)?,
    ];
    match train.spout {
        SpoutMode::None => {}
        SpoutMode::Uniform => {
            let v: Vec<f32> = (0..b * cfg.spout_width)
                .map(|_| host_rng.next_f64() as f32)
                .collect();
            out.push(Literal::from_slice(&[b, cfg.spout_width], &v)?);
        }
        SpoutMode::Onehot => {
            let mut v = vec![0f32; (b * cfg.spout_width) as usize];
            for (r, e) in picked.iter().enumerate() {
                let k = (e.class_id as i64).min(cfg.spout_width - 1);
                v[r * cfg.spout_width as usize + k as usize] = 1.0;
            }
            out.push(Literal::from_slice(&[b, cfg.spout_width], &v)?);
        }
    }
    Ok(out)
}
