//! `gptsan convert`: model surgery before fine-tuning (today: appending ext layers).

use crate::model::checkpoint::save_model_dir;
use crate::train::checkpoint::load_model_or_run;
use crate::train::extend::add_ext_layers;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model folder (ours, a Hugging Face GPTSAN one, or a run).
    #[arg(long)]
    pub model: PathBuf,
    /// Append this many ext (dense) layers.
    #[arg(long)]
    pub add_ext_layers: i64,
    /// Seed of the new layers' initial values.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// New model folder (must not exist or be empty).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    if args.out.is_dir() && std::fs::read_dir(&args.out)?.next().is_some() {
        bail!("{} is not empty; choose another --out", args.out.display());
    }
    let (cfg, params) = load_model_or_run(&args.model)?;
    let (grown, params) = add_ext_layers(&cfg, &params, args.add_ext_layers, args.seed)?;
    save_model_dir(&args.out, &grown, &params)?;
    // The vocabulary goes with the model, so `--init` and `generate` find it.
    for name in ["vocab.txt", "emoji.json"] {
        let from = args.model.join(name);
        if from.is_file() {
            let bytes =
                std::fs::read(&from).with_context(|| format!("cannot read {}", from.display()))?;
            crate::model::checkpoint::write_atomic(&args.out.join(name), &bytes)?;
        }
    }
    println!(
        "wrote {}: {} switch + {} ext layers ({} new)",
        args.out.display(),
        grown.num_switch_layers,
        grown.num_ext_layers,
        args.add_ext_layers
    );
    Ok(())
}
