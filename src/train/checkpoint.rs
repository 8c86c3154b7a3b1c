//! Training checkpoints: everything needed to continue a run bit for bit.
//!
//! `DIR/checkpoints/step-NNNNNNN/` holds the model (`model.safetensors`, `config.json`,
//! `gptsan.json`, as any model folder), `optimizer.safetensors` (state by
//! `<param>.<slot>`), and `trainer.json` (step, data position, device RNG state). The
//! folder is written under a temporary name and renamed when complete; `DIR/latest` names
//! the newest one and is replaced atomically, so a crash leaves the previous checkpoint
//! intact. [`load_model_or_run`] resolves a run folder to its newest complete
//! checkpoint, so `generate --model RUN_DIR` works. The dependency goes one way: this
//! module uses `model::checkpoint` (model folders, safetensors), never the reverse.

use crate::model::checkpoint::{
    load_model_dir, read_safetensors, save_model_dir, write_atomic, write_safetensors,
};
use crate::model::ModelConfig;
use anyhow::{bail, Context, Result};
use hlo::Literal;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const LATEST: &str = "latest";
pub const CHECKPOINTS: &str = "checkpoints";

/// Where the data and random streams were when the checkpoint was taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Steps completed.
    pub step: u64,
    /// Examples consumed since the start of the run (epochs included).
    pub cursor: u64,
    /// The train step's device RNG state (u64[2]).
    pub rng: [u64; 2],
    /// The host RNG state (spout vectors).
    pub host_rng: u64,
}

/// The newest complete checkpoint of a run folder, or the folder itself when it holds no
/// checkpoints (a plain model folder). Complete checkpoints are the renamed `step-*`
/// folders; `latest` is a convenience for people and may lag behind after a crash.
pub fn resolve_model_dir(dir: &Path) -> Result<PathBuf> {
    let root = dir.join(CHECKPOINTS);
    if !root.is_dir() {
        return Ok(dir.to_path_buf());
    }
    match complete_checkpoints(dir)?.pop() {
        Some(newest) => Ok(newest),
        None => bail!("{} holds no complete checkpoint", root.display()),
    }
}

/// Reads a model folder, or the newest complete checkpoint of a run folder, so every
/// `--model DIR` accepts both.
pub fn load_model_or_run(dir: &Path) -> Result<(ModelConfig, Vec<Literal>)> {
    load_model_dir(&resolve_model_dir(dir)?)
}

/// The complete checkpoint folders of a run, oldest first.
fn complete_checkpoints(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let root = run_dir.join(CHECKPOINTS);
    let mut steps: Vec<PathBuf> = std::fs::read_dir(&root)
        .with_context(|| format!("cannot list {}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            name.starts_with("step-") && !name.ends_with(".tmp") && p.join("trainer.json").is_file()
        })
        .collect();
    steps.sort();
    Ok(steps)
}

/// A checkpoint read back: its folder, parameters, optimizer state and trainer state.
pub struct Restored {
    pub dir: PathBuf,
    pub params: Vec<Literal>,
    pub optimizer: std::collections::BTreeMap<String, Literal>,
    pub state: TrainerState,
}

/// The newest checkpoint of a run that reads back whole. A damaged newer one (a disk
/// error, a file cut short by hand) is reported and skipped, never silently used.
pub fn restore_newest_intact(run_dir: &Path) -> Result<Restored> {
    let candidates = complete_checkpoints(run_dir)?;
    if candidates.is_empty() {
        bail!(
            "{} holds no complete checkpoint to resume from",
            run_dir.join(CHECKPOINTS).display()
        );
    }
    for dir in candidates.iter().rev() {
        let read = || -> Result<Restored> {
            let (_, params) = load_model_dir(dir)?;
            let (optimizer, state) = load_training_state(dir)?;
            Ok(Restored {
                dir: dir.clone(),
                params,
                optimizer,
                state,
            })
        };
        match read() {
            Ok(r) => return Ok(r),
            Err(e) => eprintln!(
                "warning: checkpoint {} is damaged ({e:#}); trying the one before it",
                dir.display()
            ),
        }
    }
    bail!(
        "no checkpoint in {} reads back whole (each is reported above)",
        run_dir.join(CHECKPOINTS).display()
    )
}

/// Writes a checkpoint and points `latest` at it; keeps the `keep` newest ones.
pub fn save(
    run_dir: &Path,
    cfg: &ModelConfig,
    params: &[Literal],
    optimizer: &[(String, Literal)],
    state: &TrainerState,
    keep: usize,
) -> Result<PathBuf> {
    let root = run_dir.join(CHECKPOINTS);
    let name = format!("step-{:07}", state.step);
    let tmp = root.join(format!("{name}.tmp"));
    let done = root.join(&name);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    save_model_dir(&tmp, cfg, params)?;
    let refs: Vec<(String, &Literal)> = optimizer.iter().map(|(n, l)| (n.clone(), l)).collect();
    write_safetensors(&tmp.join("optimizer.safetensors"), &refs, None)?;
    write_atomic(
        &tmp.join("trainer.json"),
        serde_json::to_string_pretty(state)?.as_bytes(),
    )?;
    if done.exists() {
        std::fs::remove_dir_all(&done)?;
    }
    std::fs::rename(&tmp, &done)
        .with_context(|| format!("cannot move {} into place", done.display()))?;
    write_atomic(
        &run_dir.join(LATEST),
        format!("{CHECKPOINTS}/{name}\n").as_bytes(),
    )?;
    prune(&root, keep)?;
    Ok(done)
}

fn prune(root: &Path, keep: usize) -> Result<()> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("step-"))
        })
        .collect();
    dirs.sort();
    let n = dirs.len();
    for old in dirs.into_iter().take(n.saturating_sub(keep)) {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(())
}

/// Reads the optimizer state and trainer state of a checkpoint folder.
pub fn load_training_state(
    dir: &Path,
) -> Result<(std::collections::BTreeMap<String, Literal>, TrainerState)> {
    let opt = read_safetensors(&dir.join("optimizer.safetensors"))?;
    let path = dir.join("trainer.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let state: TrainerState = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a trainer state", path.display()))?;
    Ok((opt, state))
}
