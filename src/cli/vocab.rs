//! `gptsan vocab build`.

use anyhow::{bail, Result};

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Learn a vocabulary from a corpus.
    Build,
}

pub fn run(_cmd: Command) -> Result<()> {
    bail!("`gptsan vocab` is not built yet")
}
