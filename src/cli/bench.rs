//! `gptsan bench ...`: throughput measurements (targets live here, never in timed tests).

use anyhow::{bail, Result};

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Tokenizer throughput.
    Tokenizer,
}

pub fn run(_cmd: Command) -> Result<()> {
    bail!("`gptsan bench` is not built yet")
}
