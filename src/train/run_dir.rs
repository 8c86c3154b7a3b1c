//! The run folder apart from its checkpoints: `run.json` (what identifies the run, so
//! resuming with other settings is refused), the tokenizer files, and the note a watchdog
//! report gives about the newest checkpoint.

use super::config::TrainConfig;
use crate::model::checkpoint::write_atomic;
use crate::model::ModelConfig;
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Identifies a run: resuming with other settings is refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub corpus: Vec<String>,
    pub mesh: Option<String>,
    /// Prepared data (folder, vocabulary hash, size); absent for raw text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The model folder the run started from (`--init`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    /// Parameters that do not train.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frozen: Vec<String>,
}

/// Refuses to mix runs in one folder.
pub(crate) fn prepare_out_dir(
    out: &Path,
    meta: &RunMeta,
    resume: bool,
    tok: &Tokenizer,
) -> Result<()> {
    let meta_path = out.join("run.json");
    if meta_path.is_file() {
        let text = std::fs::read_to_string(&meta_path)?;
        let existing: RunMeta = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a gptsan run description", meta_path.display()))?;
        if &existing != meta {
            bail!(
                "{} holds another run (different model, training settings, corpus or mesh); choose another --out",
                out.display()
            );
        }
        if !resume {
            bail!(
                "{} already holds this run; pass --resume to continue it, or choose another --out",
                out.display()
            );
        }
        return Ok(());
    }
    if resume {
        bail!("nothing to resume: {} holds no run", out.display());
    }
    if out.is_dir() && std::fs::read_dir(out)?.next().is_some() {
        bail!(
            "{} is not empty and holds no gptsan run; choose another --out",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    write_atomic(&meta_path, serde_json::to_string_pretty(meta)?.as_bytes())?;
    write_atomic(&out.join("vocab.txt"), tok.vocab().to_text().as_bytes())?;
    write_atomic(&out.join("emoji.json"), tok.emoji().to_json().as_bytes())?;
    Ok(())
}

/// What a watchdog report (a stuck multi-device step) says about the run's checkpoints.
pub(crate) fn note_checkpoint_for_watchdog(out: &Path, step: Option<u64>) {
    let note = match step {
        Some(s) => format!(
            "the checkpoint of step {s} in {} is intact: run the same command with --resume \
             to continue",
            out.display()
        ),
        None => format!("no checkpoint was written to {} yet", out.display()),
    };
    runtime::watchdog::set_note(Some(note));
}
