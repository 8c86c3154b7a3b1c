//! `gptsan vector`: the original's hidden-state vector (every layer's output at one
//! position, concatenated; see [`crate::infer::vector`]), as JSON or, for many inputs, a
//! safetensors file.

use super::batch_input::{check_tokenizer, read_jsonl, resolve, IdList, TextOrIds};
use crate::device::Device;
use crate::infer::fill_mask::encode_with_masks;
use crate::infer::vector::{resolve_pos, vectors};
use crate::infer::{check_row, Row, Runner};
use crate::model::checkpoint::write_safetensors;
use crate::model::ModelConfig;
use crate::tokenizer::Tokenizer;
use crate::train::checkpoint::load_model_or_run;
use anyhow::{Context, Result};
use hlo::Literal;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["text", "ids", "input"])))]
pub struct Args {
    /// Model folder (a training run's output, or a Hugging Face model folder).
    #[arg(long)]
    pub model: PathBuf,
    /// Text; it becomes [SOT] + tokens (`[MASK]` becomes MSK), every position but the last
    /// in the bidirectional prefix, as the original's language-model script.
    #[arg(long)]
    pub text: Option<String>,
    /// Token ids, comma separated, used as given (SOT included).
    #[arg(long, allow_hyphen_values = true)]
    pub ids: Option<IdList>,
    /// JSONL file of inputs, one `{"text": ...}` or `{"ids": [...]}` (optionally with
    /// `"pos"`) per line.
    #[arg(long, requires = "output")]
    pub input: Option<PathBuf>,
    /// Where `--input`'s vectors go: safetensors with `vector [N, L*d]` f32, `pos [N]` and
    /// `input_ids [N, T]` (rows padded with -1).
    #[arg(long, requires = "input")]
    pub output: Option<PathBuf>,
    /// Token position to read (default: the last input position).
    #[arg(long, allow_negative_numbers = true)]
    pub pos: Option<i64>,
    /// Print `{"input_ids", "pos", "vector"}` as JSON.
    #[arg(long)]
    pub json: bool,
    /// Inputs per forward pass with `--input`.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[command(flatten)]
    pub run: super::model_args::ModelRunArgs,
}

/// One input as a row and the position to read, checked.
fn input_row(
    tok: &Tokenizer,
    cfg: &ModelConfig,
    text: Option<&str>,
    ids: Option<&[i64]>,
    pos: Option<i64>,
) -> Result<(Row, usize)> {
    let ids = resolve(text, ids, |t| {
        check_tokenizer(tok, cfg)?;
        Ok(encode_with_masks(tok, t))
    })?;
    check_row(&ids, cfg)?;
    let pos = resolve_pos(pos, ids.len())?;
    Ok((Row::hybrid(ids), pos))
}

/// `vector [N, L*d]`, `pos [N]`, `input_ids [N, T]` (padded with -1).
fn write_batch(path: &std::path::Path, rows: &[(Row, usize)], vecs: &[Vec<f32>]) -> Result<()> {
    let n = rows.len() as i64;
    let width = vecs.first().map_or(0, Vec::len) as i64;
    let len = rows.iter().map(|(r, _)| r.ids.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * len);
    for (r, _) in rows {
        ids.extend(r.ids.iter().map(|&t| t as i32));
        ids.extend(std::iter::repeat_n(-1, len - r.ids.len()));
    }
    let pos: Vec<i32> = rows.iter().map(|(_, p)| *p as i32).collect();
    let flat: Vec<f32> = vecs.concat();
    let tensors = [
        (
            "vector".to_string(),
            Literal::from_slice(&[n, width], &flat)?,
        ),
        ("pos".to_string(), Literal::from_slice(&[n], &pos)?),
        (
            "input_ids".to_string(),
            Literal::from_slice(&[n, len as i64], &ids)?,
        ),
    ];
    let refs: Vec<(String, &Literal)> = tensors.iter().map(|(k, l)| (k.clone(), l)).collect();
    write_safetensors(path, &refs, None)
}

pub fn run(args: Args) -> Result<()> {
    let (cfg, params) = load_model_or_run(&args.model)?;
    let tok = args.run.tokenizer(&args.model)?;
    let rows: Vec<(Row, usize)> = match &args.input {
        Some(path) => read_jsonl::<TextOrIds>(path)?
            .into_iter()
            .map(|(line, l)| {
                let pos = l.pos.or(args.pos);
                input_row(&tok, &cfg, l.text.as_deref(), l.ids.as_deref(), pos)
                    .with_context(|| format!("{} line {line}", path.display()))
            })
            .collect::<Result<_>>()?,
        None => vec![input_row(
            &tok,
            &cfg,
            args.text.as_deref(),
            args.ids.as_ref().map(|l| l.0.as_slice()),
            args.pos,
        )?],
    };
    let device = Device::open(args.run.plugin.as_deref(), None)?;
    let mut runner = Runner::new(&device, &cfg, &params)?;
    let vecs = vectors(&mut runner, &rows, args.batch_size)?;
    if let Some(out) = &args.output {
        write_batch(out, &rows, &vecs)?;
        eprintln!(
            "wrote {} vectors of {} values to {}",
            vecs.len(),
            vecs[0].len(),
            out.display()
        );
        return Ok(());
    }
    let (row, pos) = &rows[0];
    if args.json {
        let v = serde_json::json!({ "input_ids": row.ids, "pos": pos, "vector": vecs[0] });
        println!("{v}");
    } else {
        println!("input ids: {:?}", row.ids);
        println!("pos: {pos}");
        println!("vector ({} values): {:?}", vecs[0].len(), vecs[0]);
    }
    Ok(())
}
