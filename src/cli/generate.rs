//! `gptsan generate`: text generation with a device-resident KV cache.

use crate::device::Device;
use crate::generate::sampling::{Rng, Strategy};
use crate::generate::{GenerateOptions, Generator};
use crate::model::checkpoint::load_model_dir;
use crate::model::inputs::HostBatch;
use crate::model::ModelConfig;
use crate::tokenizer::Tokenizer;
use crate::train::run::{check_mesh, parse_mesh};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

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
    #[arg(long, value_delimiter = ',')]
    pub ids: Option<Vec<i64>>,
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
    /// How many samples to draw.
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
    /// Vocabulary (default: the model folder's, else the built-in one).
    #[arg(long)]
    pub vocab: Option<PathBuf>,
    #[arg(long)]
    pub emoji: Option<PathBuf>,
    #[arg(long)]
    pub plugin: Option<String>,
    /// Run over a device mesh, e.g. model=2 (experts and heads split over devices); the
    /// tokens equal one device's.
    #[arg(long)]
    pub mesh: Option<String>,
    /// Number of (CPU) devices to open (default: the mesh's size).
    #[arg(long)]
    pub devices: Option<i64>,
}

/// The tokenizer that goes with a model: explicit files, the model folder's, or built in.
pub fn tokenizer_for(
    model: &Path,
    vocab: Option<&Path>,
    emoji: Option<&Path>,
) -> Result<Tokenizer> {
    if let Some(v) = vocab {
        let e = emoji
            .map(Path::to_path_buf)
            .unwrap_or_else(|| v.with_file_name("emoji.json"));
        return Tokenizer::from_files(v, &e);
    }
    if model.join("vocab.txt").is_file() {
        return Tokenizer::from_dir(model);
    }
    Ok(Tokenizer::builtin().clone())
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

/// Prompt ids and their prefix flags (tokens before the first SEG are the prefix).
fn prompt_ids(args: &Args, tok: &Tokenizer, cfg: &ModelConfig) -> Result<(Vec<i32>, Vec<i32>)> {
    let seg = (cfg.vocab_size - 2) as i32;
    let ids: Vec<i32> = match &args.ids {
        Some(ids) => ids
            .iter()
            .map(|&i| i32::try_from(i).map_err(|_| anyhow::anyhow!("token id {i} is out of range")))
            .collect::<Result<_>>()?,
        None => {
            if tok.vocab_size() as i64 != cfg.vocab_size {
                bail!(
                    "the tokenizer has {} tokens but the model expects {}: pass the model's --vocab",
                    tok.vocab_size(),
                    cfg.vocab_size
                );
            }
            let sp = tok.special();
            let mut ids = vec![sp.sot as i32];
            if let Some(p) = &args.prefix {
                ids.extend(tok.encode(p, false).into_iter().map(|t| t as i32));
            }
            ids.push(sp.seg as i32);
            if let Some(p) = &args.prompt {
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

pub fn run(args: Args) -> Result<()> {
    let (cfg, params) = load_model_dir(&args.model)?;
    let tok = tokenizer_for(&args.model, args.vocab.as_deref(), args.emoji.as_deref())?;
    let (ids, types) = prompt_ids(&args, &tok, &cfg)?;
    let mut rng = Rng::new(args.seed);
    let spout = spout_vector(&args, cfg.spout_width, &mut rng)?;
    let n = ids.len();
    let batch = HostBatch {
        batch: 1,
        len: n,
        input_ids: ids,
        attention_mask: vec![1; n],
        token_type_ids: types,
        spout,
    };
    let width = if cfg.has_spout() { cfg.spout_width } else { 0 };
    batch.validate(cfg.vocab_size, cfg.context, width)?;
    let mesh = args.mesh.as_deref().map(parse_mesh).transpose()?;
    let wanted = args.devices.or(mesh.as_ref().map(|m| m.device_count()));
    let device = Device::open(args.plugin.as_deref(), wanted)?;
    if let Some(m) = &mesh {
        check_mesh(m, device.device_count(), &cfg, 1)?;
        if m.axis_size("data").unwrap_or(1) > 1 {
            bail!("--mesh {m}: generation splits the model only; use model=N");
        }
    }
    let mut generator = Generator::on_mesh(&device, &cfg, &params, mesh)?;
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
    let can_decode = tok.vocab_size() as i64 == cfg.vocab_size;
    for sample in 0..args.num_generate.max(1) {
        let opts = GenerateOptions {
            max_new_tokens: args.max_new_tokens,
            strategy: strategy.clone(),
            seed: args.seed.wrapping_add(sample as u64),
            stop_at_eot: true,
        };
        if !args.json && can_decode {
            if let Some(p) = &args.prompt {
                print!("{p}");
            }
        }
        let mut shown = String::new();
        let mut so_far: Vec<u32> = Vec::new();
        let stdout = std::io::stdout();
        let out = generator.generate(&batch, &opts, false, |_, id| {
            if args.json || !can_decode {
                return;
            }
            so_far.push(id);
            if let Ok(text) = tok.decode_with(&so_far, &decode_opts) {
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
        let tokens = &out.tokens[0];
        if args.json {
            let text = if can_decode {
                tok.decode_with(tokens, &decode_opts).ok()
            } else {
                None
            };
            println!("{}", serde_json::json!({ "ids": tokens, "text": text }));
        } else if can_decode {
            println!();
        } else {
            println!(
                "{}",
                tokens
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            );
        }
    }
    Ok(())
}
