//! `gptsan tokenize encode|decode`.

use anyhow::{bail, Result};

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Encode text to ids.
    Encode,
    /// Decode ids to text.
    Decode,
}

pub fn run(_cmd: Command) -> Result<()> {
    bail!("`gptsan tokenize` is not built yet")
}
