//! `gptsan devices`: which PJRT plugin is used, its devices, and why others were skipped.

use anyhow::{bail, Result};

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    bail!("`gptsan devices` is not built yet")
}
