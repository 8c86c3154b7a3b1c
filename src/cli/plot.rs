//! `gptsan plot RUN_DIR`: redraws the loss plot of a run folder from its metrics.

use crate::train::plot::plot_run;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run folder (made by `gptsan train`; holds metrics.jsonl).
    pub run_dir: PathBuf,
    /// Output PNG (default: RUN_DIR/loss.png).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let out = plot_run(&args.run_dir, args.out.as_deref())?;
    println!("wrote {}", out.display());
    Ok(())
}
