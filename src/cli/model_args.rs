//! Options shared by the commands that load a model: its tokenizer files and the PJRT
//! plugin to run it on.

use crate::tokenizer::Tokenizer;
use anyhow::Result;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ModelRunArgs {
    /// Vocabulary (default: the model folder's, else the built-in one).
    #[arg(long)]
    pub vocab: Option<PathBuf>,
    /// Emoji table (default: emoji.json next to --vocab).
    #[arg(long)]
    pub emoji: Option<PathBuf>,
    /// PJRT plugin (path or cpu|cuda|tpu).
    #[arg(long)]
    pub plugin: Option<String>,
}

impl ModelRunArgs {
    /// The tokenizer that goes with `model`: explicit files, the model folder's, or built in.
    pub fn tokenizer(&self, model: &Path) -> Result<Tokenizer> {
        if let Some(v) = &self.vocab {
            let e = self
                .emoji
                .clone()
                .unwrap_or_else(|| v.with_file_name("emoji.json"));
            return Tokenizer::from_files(v, &e);
        }
        if model.join("vocab.txt").is_file() {
            return Tokenizer::from_dir(model);
        }
        Ok(Tokenizer::builtin().clone())
    }
}
