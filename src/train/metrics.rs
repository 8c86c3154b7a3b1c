//! `metrics.jsonl`: one JSON line per step, appended and flushed as training goes, so a
//! killed run keeps what it measured; a resumed run first drops the lines after its
//! checkpoint.

use crate::model::checkpoint::write_atomic;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

pub const METRICS_FILE: &str = "metrics.jsonl";

/// One metrics line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub step: u64,
    pub loss: f64,
    pub ce: f64,
    pub z_loss: f64,
    pub balance_loss: f64,
    /// Infinite (written as `null`) on an f16 step that an overflow skipped.
    #[serde(deserialize_with = "null_is_infinite")]
    pub grad_norm: f64,
    pub lr: f64,
    pub tokens_per_s: f64,
    pub step_ms: f64,
    /// Mean loss over the held-out batches, on the steps that evaluate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
    /// f16 runs: the loss scale the step used, and whether an overflow skipped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<bool>,
}

/// JSON has no infinity: serde_json writes it as `null`, read back as infinity.
fn null_is_infinite<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

/// The open metrics file of a run.
pub(crate) struct MetricsLog {
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens `metrics.jsonl` of `run_dir` for appending.
    pub fn open(run_dir: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(run_dir.join(METRICS_FILE))
            .context("cannot open metrics.jsonl")?;
        Ok(MetricsLog { file })
    }

    /// Appends one line and flushes it.
    pub fn write(&mut self, m: &Metrics) -> Result<()> {
        writeln!(self.file, "{}", serde_json::to_string(m)?)?;
        self.file.flush()?;
        Ok(())
    }
}

/// Drops metrics after `step` (a resumed run rewrites them).
pub(crate) fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<Metrics>(l)
                .map(|m| m.step <= step)
                .unwrap_or(false)
        })
        .collect();
    let mut body = kept.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    write_atomic(path, body.as_bytes())
}

/// Every metrics line of a run folder, in file order.
pub fn read_metrics(run_dir: &Path) -> Result<Vec<Metrics>> {
    let path = run_dir.join(METRICS_FILE);
    if !path.is_file() {
        bail!(
            "{} does not exist: {} is not a gptsan run folder, or it has not trained a step",
            path.display(),
            run_dir.display()
        );
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} line {}: not a metrics line", path.display(), i + 1))
        })
        .collect()
}
