//! Hidden-state vectors, the original's `modeling.py`: the output x of every layer at one
//! token position, concatenated over layers (length L*d).

use super::{in_batches, Row, Runner};
use crate::model::programs::InferOutput;
use anyhow::{bail, Result};
use hlo::Literal;

/// The position to read in a row of `len` tokens: `pos`, or the last one by default.
pub fn resolve_pos(pos: Option<i64>, len: usize) -> Result<usize> {
    match pos {
        None if len == 0 => bail!("the input is empty"),
        None => Ok(len - 1),
        Some(p) if p < 0 || p as usize >= len => {
            bail!(
                "--pos {p} is out of range for an input of {len} tokens (0..{})",
                len.saturating_sub(1)
            )
        }
        Some(p) => Ok(p as usize),
    }
}

/// The vector of every row at its position, `batch_size` rows per forward.
pub fn vectors(
    runner: &mut Runner,
    rows: &[(Row, usize)],
    batch_size: usize,
) -> Result<Vec<Vec<f32>>> {
    let plain: Vec<Row> = rows.iter().map(|(r, _)| r.clone()).collect();
    let mut next = 0;
    in_batches(&plain, batch_size, |chunk| {
        let pos: Vec<i32> = rows[next..next + chunk.len()]
            .iter()
            .map(|(r, p)| resolve_pos(Some(*p as i64), r.ids.len()).map(|p| p as i32))
            .collect::<Result<_>>()?;
        next += chunk.len();
        let pos = Literal::from_slice(&[chunk.len() as i64], &pos)?;
        let flat = runner
            .run(InferOutput::Vector, chunk, &[pos])?
            .to_vec::<f32>()?;
        let width = flat.len() / chunk.len();
        Ok(flat.chunks(width).map(<[f32]>::to_vec).collect())
    })
}
