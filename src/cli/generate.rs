//! `gptsan generate`: text generation with a device-resident KV cache.

use super::batch_input::{check_tokenizer, read_jsonl, IdList};
use crate::device::Device;
use crate::generate::beam::{BeamOptions, Hypothesis};
use crate::generate::sampling::{Rng, Strategy};
use crate::generate::{GenerateOptions, Generator};
use crate::model::inputs::HostBatch;
use crate::model::precision::Precision;
use crate::model::ModelConfig;
use crate::tokenizer::Tokenizer;
use crate::train::checkpoint::load_model_or_run;
use crate::train::run::{check_mesh, parse_mesh};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model folder (a training run's output, or a Hugging Face model folder).
    #[arg(long)]
    pub model: PathBuf,
    /// Text to continue.
    #[arg(long, conflicts_with = "ids")]
    pub prompt: Option<String>,
    /// Bidirectional prefix text (prefix-LM): the prompt becomes [SOT] prefix [SEG] text.
    #[arg(long, conflicts_with = "ids")]
    pub prefix: Option<String>,
    /// Prompt token ids, comma separated. Tokens before the first SEG are the prefix.
    #[arg(long, allow_hyphen_values = true)]
    pub ids: Option<IdList>,
    /// JSONL file of prompts, one `{"prompt": ..., "prefix": ...}` or `{"ids": [...]}` per
    /// line; prints one JSON line per result with its input's index (greedy prompts run
    /// batched).
    #[arg(long, conflicts_with_all = ["prompt", "prefix", "ids"])]
    pub input: Option<PathBuf>,
    /// Beam search with this many hypotheses (rows on the device); `--num-generate N`
    /// returns the N best.
    #[arg(long)]
    pub beam_width: Option<usize>,
    /// Always take the most likely token.
    #[arg(long)]
    pub greedy: bool,
    /// Sample among the K most likely tokens.
    #[arg(long, default_value_t = 120)]
    pub top_k: usize,
    /// Nucleus sampling threshold (1.0: off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 300, alias = "max-generate")]
    pub max_new_tokens: usize,
    /// Prompts per batch with `--input --greedy`.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// How many samples to draw (with --beam-width: how many best beams to print).
    #[arg(long, default_value_t = 1)]
    pub num_generate: usize,
    /// Spout vector: none, uniform, onehot:K (class K).
    #[arg(long, default_value = "none")]
    pub spout: String,
    /// Spout vector from a file (JSON array or whitespace-separated numbers).
    #[arg(long)]
    pub spout_file: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the generated ids (and text) as JSON lines instead of streaming text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub run: super::model_args::ModelRunArgs,
    /// Run over a device mesh, e.g. model=2 (experts and heads split over devices); the
    /// tokens equal one device's.
    #[arg(long)]
    pub mesh: Option<String>,
    /// Number of (CPU) devices to open (default: the mesh's size).
    #[arg(long)]
    pub devices: Option<i64>,
    /// Keep the weights on the device as bf16 or f16 (half the memory; every operation
    /// still computes in f32).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
}

/// Reads a spout vector of `width` values.
fn spout_vector(args: &Args, width: i64, rng: &mut Rng) -> Result<Option<Vec<f32>>> {
    if let Some(path) = &args.spout_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let values: Vec<f32> = match serde_json::from_str::<Vec<f32>>(&text) {
            Ok(v) => v,
            Err(_) => text
                .split_whitespace()
                .enumerate()
                .map(|(i, s)| {
                    s.parse::<f32>().with_context(|| {
                        format!(
                            "{}: value {} ({s:?}) is not a number",
                            path.display(),
                            i + 1
                        )
                    })
                })
                .collect::<Result<_>>()?,
        };
        if values.len() as i64 != width {
            bail!(
                "{}: spout has {} values, the model's spout width is {width}",
                path.display(),
                values.len()
            );
        }
        return Ok(Some(values));
    }
    let spec = args.spout.as_str();
    if spec == "none" {
        return Ok(None);
    }
    if width == 0 {
        bail!("--spout {spec}: this model has no spout");
    }
    if spec == "uniform" {
        return Ok(Some((0..width).map(|_| rng.next_f64() as f32).collect()));
    }
    if let Some(k) = spec.strip_prefix("onehot:") {
        let k: i64 = k
            .parse()
            .with_context(|| format!("--spout {spec}: class must be a number"))?;
        if k < 0 || k >= width {
            bail!("--spout {spec}: class must be below the spout width {width}");
        }
        return Ok(Some((0..width).map(|i| (i == k) as i32 as f32).collect()));
    }
    bail!("--spout must be none, uniform or onehot:K, got {spec:?}")
}

/// One prompt: text (with an optional prefix) or ids.
#[derive(serde::Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct PromptSpec {
    pub prompt: Option<String>,
    pub prefix: Option<String>,
    pub ids: Option<Vec<i64>>,
}

/// Prompt ids and their prefix flags (tokens before the first SEG are the prefix).
pub(crate) fn prompt_ids(
    p: &PromptSpec,
    tok: &Tokenizer,
    cfg: &ModelConfig,
) -> Result<(Vec<i32>, Vec<i32>)> {
    let seg = (cfg.vocab_size - 2) as i32;
    let ids: Vec<i32> = match &p.ids {
        Some(_) if p.prompt.is_some() || p.prefix.is_some() => {
            bail!("give either a prompt (and prefix) or ids, not both")
        }
        Some(ids) => ids
            .iter()
            .map(|&i| i32::try_from(i).map_err(|_| anyhow::anyhow!("token id {i} is out of range")))
            .collect::<Result<_>>()?,
        None => {
            check_tokenizer(tok, cfg)?;
            let sp = tok.special();
            let mut ids = vec![sp.sot as i32];
            if let Some(p) = &p.prefix {
                ids.extend(tok.encode(p, false).into_iter().map(|t| t as i32));
            }
            ids.push(sp.seg as i32);
            if let Some(p) = &p.prompt {
                ids.extend(tok.encode(p, false).into_iter().map(|t| t as i32));
            }
            ids
        }
    };
    if ids.is_empty() {
        bail!("the prompt is empty: give --prompt, --prefix or --ids");
    }
    let first_seg = ids.iter().position(|&t| t == seg).unwrap_or(0);
    let types = (0..ids.len()).map(|i| (i < first_seg) as i32).collect();
    Ok((ids, types))
}

/// The prompts to run with where they come from: `--input`'s lines, or the command line.
fn prompt_specs(args: &Args) -> Result<Vec<(String, PromptSpec)>> {
    match &args.input {
        Some(path) => Ok(read_jsonl::<PromptSpec>(path)?
            .into_iter()
            .map(|(line, p)| (format!("{} line {line}", path.display()), p))
            .collect()),
        None => Ok(vec![(
            "the command line".to_string(),
            PromptSpec {
                prompt: args.prompt.clone(),
                prefix: args.prefix.clone(),
                ids: args.ids.clone().map(|l| l.0),
            },
        )]),
    }
}

/// One-row batches of every prompt, checked against the model.
fn prompt_batches(
    args: &Args,
    tok: &Tokenizer,
    cfg: &ModelConfig,
    spout: &Option<Vec<f32>>,
) -> Result<Vec<HostBatch>> {
    let width = if cfg.has_spout() { cfg.spout_width } else { 0 };
    let one = |p: &PromptSpec| -> Result<HostBatch> {
        let (ids, types) = prompt_ids(p, tok, cfg)?;
        let n = ids.len();
        let batch = HostBatch {
            batch: 1,
            len: n,
            input_ids: ids,
            attention_mask: vec![1; n],
            token_type_ids: types,
            spout: spout.clone(),
        };
        batch.validate(cfg.vocab_size, cfg.context, width)?;
        Ok(batch)
    };
    prompt_specs(args)?
        .iter()
        .map(|(origin, p)| {
            let r = one(p);
            if args.input.is_some() {
                r.with_context(|| origin.clone())
            } else {
                r
            }
        })
        .collect()
}

pub fn run(args: Args) -> Result<()> {
    if args.beam_width == Some(0) {
        bail!("--beam-width must be at least 1");
    }
    let (cfg, params) = load_model_or_run(&args.model)?;
    let tok = args.run.tokenizer(&args.model)?;
    let mut rng = Rng::new(args.seed);
    let spout = spout_vector(&args, cfg.spout_width, &mut rng)?;
    let prompts = prompt_batches(&args, &tok, &cfg, &spout)?;
    let mesh = args.mesh.as_deref().map(parse_mesh).transpose()?;
    let wanted = args.devices.or(mesh.as_ref().map(|m| m.device_count()));
    let device = Device::open(args.run.plugin.as_deref(), wanted)?;
    if let Some(m) = &mesh {
        if m.axis_size("data").unwrap_or(1) > 1 {
            bail!("--mesh {m}: generation splits the model only; use model=N");
        }
        check_mesh(m, device.device_count(), &cfg, 1)?;
    }
    let mut generator =
        Generator::with_weights(&device, &cfg, &params, mesh, args.precision.weights())?;
    let out = Output {
        tok: &tok,
        cfg: &cfg,
        json: args.json || args.input.is_some(),
        input: args.input.is_some(),
    };
    if let Some(width) = args.beam_width {
        let opts = BeamOptions {
            width,
            max_new_tokens: args.max_new_tokens,
            num_results: args.num_generate.max(1),
            stop_at_eot: true,
        };
        for (k, prompt) in prompts.iter().enumerate() {
            for hyp in generator.beam_search(prompt, &opts)? {
                out.hypothesis(k, &hyp);
            }
        }
        return Ok(());
    }
    if args.greedy && args.input.is_some() {
        return run_batched_greedy(&args, &mut generator, &prompts, &out);
    }
    for (k, prompt) in prompts.iter().enumerate() {
        run_samples(&args, &mut generator, prompt, k, &out)?;
    }
    Ok(())
}

/// How results are printed.
struct Output<'a> {
    tok: &'a Tokenizer,
    cfg: &'a ModelConfig,
    json: bool,
    /// Tag each JSON line with its input's index.
    input: bool,
}

impl Output<'_> {
    fn can_decode(&self) -> bool {
        self.tok.vocab_size() as i64 == self.cfg.vocab_size
    }

    fn text(&self, tokens: &[u32]) -> Option<String> {
        let opts = crate::tokenizer::DecodeOptions::generated();
        self.can_decode()
            .then(|| self.tok.decode_with(tokens, &opts).ok())
            .flatten()
    }

    /// One JSON line `{"ids", "text"}` plus `extra` fields.
    fn json_line(&self, k: usize, tokens: &[u32], extra: serde_json::Value) {
        let mut v = serde_json::json!({ "ids": tokens, "text": self.text(tokens) });
        if let (Some(obj), serde_json::Value::Object(more)) = (v.as_object_mut(), extra) {
            obj.extend(more);
            if self.input {
                obj.insert("input".into(), k.into());
            }
        }
        println!("{v}");
    }

    fn hypothesis(&self, k: usize, hyp: &Hypothesis) {
        if self.json {
            self.json_line(
                k,
                &hyp.tokens,
                serde_json::json!({ "logprob": hyp.logprob }),
            );
        } else {
            self.plain(&hyp.tokens);
            println!("(logprob {:.4})", hyp.logprob);
        }
    }

    /// A finished generation that was not streamed.
    fn plain(&self, tokens: &[u32]) {
        match self.text(tokens) {
            Some(t) => println!("{t}"),
            None => println!(
                "{}",
                tokens
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

/// Greedy generation for many prompts, left-padded into batches of `--batch-size`.
fn run_batched_greedy(
    args: &Args,
    generator: &mut Generator,
    prompts: &[HostBatch],
    out: &Output,
) -> Result<()> {
    let opts = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        strategy: Strategy::Greedy,
        seed: args.seed,
        stop_at_eot: true,
    };
    for (c, chunk) in prompts.chunks(args.batch_size.max(1)).enumerate() {
        let gen = generator.generate(&left_pad(chunk), &opts, false, |_, _| {})?;
        for (r, tokens) in gen.tokens.iter().enumerate() {
            out.json_line(
                c * args.batch_size.max(1) + r,
                tokens,
                serde_json::json!({}),
            );
        }
    }
    Ok(())
}

/// One batch of one-row prompts, left-padded to the longest.
fn left_pad(rows: &[HostBatch]) -> HostBatch {
    let len = rows.iter().map(|r| r.len).max().unwrap_or(0);
    let mut b = HostBatch {
        batch: rows.len(),
        len,
        input_ids: Vec::new(),
        attention_mask: Vec::new(),
        token_type_ids: Vec::new(),
        spout: rows[0].spout.as_ref().map(|_| Vec::new()),
    };
    for r in rows {
        let pad = len - r.len;
        b.input_ids
            .extend(std::iter::repeat_n(0, pad).chain(r.input_ids.iter().copied()));
        b.attention_mask
            .extend(std::iter::repeat_n(0, pad).chain(r.attention_mask.iter().copied()));
        b.token_type_ids
            .extend(std::iter::repeat_n(0, pad).chain(r.token_type_ids.iter().copied()));
        if let (Some(all), Some(s)) = (b.spout.as_mut(), &r.spout) {
            all.extend(s);
        }
    }
    b
}

/// `--num-generate` samples (or greedy runs) of one prompt, streamed unless `--json`.
fn run_samples(
    args: &Args,
    generator: &mut Generator,
    batch: &HostBatch,
    k: usize,
    out: &Output,
) -> Result<()> {
    let strategy = if args.greedy {
        Strategy::Greedy
    } else {
        Strategy::Sample {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
        }
    };
    let decode_opts = crate::tokenizer::DecodeOptions::generated();
    let stream = !out.json && out.can_decode();
    for sample in 0..args.num_generate.max(1) {
        let opts = GenerateOptions {
            max_new_tokens: args.max_new_tokens,
            strategy: strategy.clone(),
            seed: args.seed.wrapping_add(sample as u64),
            stop_at_eot: true,
        };
        if stream {
            if let Some(p) = &args.prompt {
                print!("{p}");
            }
        }
        let mut shown = String::new();
        let mut so_far: Vec<u32> = Vec::new();
        let stdout = std::io::stdout();
        let gen = generator.generate(batch, &opts, false, |_, id| {
            if !stream {
                return;
            }
            so_far.push(id);
            if let Ok(text) = out.tok.decode_with(&so_far, &decode_opts) {
                // Print only what is new and complete (a partial UTF-8 byte run decodes
                // to U+FFFD until its last byte arrives).
                if text.len() > shown.len()
                    && text.starts_with(&shown)
                    && !text.ends_with('\u{FFFD}')
                {
                    let mut lock = stdout.lock();
                    let _ = write!(lock, "{}", &text[shown.len()..]);
                    let _ = lock.flush();
                    shown = text;
                }
            }
        })?;
        let tokens = &gen.tokens[0];
        if out.json {
            out.json_line(k, tokens, serde_json::json!({}));
        } else if stream {
            println!();
        } else {
            out.plain(tokens);
        }
    }
    Ok(())
}
