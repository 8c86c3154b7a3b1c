//! `gptsan fill-mask`: fill `[MASK]`s with the original's shifted-MLM rule
//! (see [`crate::infer::fill_mask`]).

use super::batch_input::{
    check_tokenizer, decode_text, read_jsonl, resolve, write_jsonl, IdList, TextOrIds,
};
use crate::device::Device;
use crate::infer::fill_mask::{check_ids, fill_mask, text_ids, Filled, MASK_TEXT};
use crate::infer::Runner;
use crate::model::ModelConfig;
use crate::tokenizer::Tokenizer;
use crate::train::checkpoint::load_model_or_run;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["text", "ids", "input"])))]
pub struct Args {
    /// Model folder (a training run's output, or a Hugging Face model folder).
    #[arg(long)]
    pub model: PathBuf,
    /// Text with one or more `[MASK]`; it becomes [SOT] + tokens.
    #[arg(long)]
    pub text: Option<String>,
    /// Token ids, comma separated, used as given (SOT included).
    #[arg(long, allow_hyphen_values = true)]
    pub ids: Option<IdList>,
    /// JSONL file of inputs, one `{"text": ...}` or `{"ids": [...]}` per line.
    #[arg(long, requires = "output")]
    pub input: Option<PathBuf>,
    /// Where `--input`'s results go (JSONL, one object per input line).
    #[arg(long, requires = "input")]
    pub output: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Inputs per forward pass with `--input`.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[command(flatten)]
    pub run: super::model_args::ModelRunArgs,
}

/// The ids of one input, checked for something to fill.
fn input_ids(
    tok: &Tokenizer,
    cfg: &ModelConfig,
    text: Option<&str>,
    ids: Option<&[i64]>,
) -> Result<Vec<u32>> {
    let ids = resolve(text, ids, |t| {
        if !t.contains(MASK_TEXT) {
            bail!("no {MASK_TEXT} in the text: nothing to fill");
        }
        check_tokenizer(tok, cfg)?;
        text_ids(tok, t)
    })?;
    check_ids(&ids, (cfg.vocab_size - 6) as u32)?;
    Ok(ids)
}

/// `{"input_ids", "output_ids", "output_text", "scores", "logprobs"}`.
fn to_json(f: &Filled, tok: &Tokenizer, cfg: &ModelConfig) -> serde_json::Value {
    serde_json::json!({
        "input_ids": f.input_ids,
        "output_ids": f.output_ids,
        "output_text": decode_text(tok, cfg, &f.output_ids),
        "scores": f.scores,
        "logprobs": f.logprobs,
    })
}

fn print_human(f: &Filled, tok: &Tokenizer, cfg: &ModelConfig) {
    match decode_text(tok, cfg, &f.output_ids) {
        Some(text) => println!("output text: {text}"),
        None => println!("output text: (the tokenizer does not fit the model)"),
    }
    println!("output tokens: {:?}", f.output_ids);
    println!("scores: {:?}", f.scores);
}

pub fn run(args: Args) -> Result<()> {
    let (cfg, params) = load_model_or_run(&args.model)?;
    let tok = args.run.tokenizer(&args.model)?;
    let inputs: Vec<Vec<u32>> = match &args.input {
        Some(path) => read_jsonl::<TextOrIds>(path)?
            .into_iter()
            .map(|(line, l)| {
                if l.pos.is_some() {
                    bail!("\"pos\" is not a fill-mask field");
                }
                input_ids(&tok, &cfg, l.text.as_deref(), l.ids.as_deref())
                    .and_then(|ids| check_range(&ids, &cfg))
                    .with_context(|| format!("{} line {line}", path.display()))
            })
            .collect::<Result<_>>()?,
        None => {
            let ids = input_ids(
                &tok,
                &cfg,
                args.text.as_deref(),
                args.ids.as_ref().map(|l| l.0.as_slice()),
            )?;
            vec![check_range(&ids, &cfg)?]
        }
    };
    let device = Device::open(args.run.plugin.as_deref(), None)?;
    let mut runner = Runner::new(&device, &cfg, &params)?;
    let results = fill_mask(&mut runner, &inputs, args.batch_size)?;
    if let Some(out) = &args.output {
        let lines: Vec<_> = results.iter().map(|f| to_json(f, &tok, &cfg)).collect();
        write_jsonl(out, &lines)?;
        eprintln!("filled {} inputs into {}", results.len(), out.display());
    } else if args.json {
        println!("{}", to_json(&results[0], &tok, &cfg));
    } else {
        print_human(&results[0], &tok, &cfg);
    }
    Ok(())
}

/// Ids within the vocabulary and the context (so that a bad line is named before any
/// compiling).
fn check_range(ids: &[u32], cfg: &ModelConfig) -> Result<Vec<u32>> {
    crate::infer::check_row(ids, cfg)?;
    Ok(ids.to_vec())
}
