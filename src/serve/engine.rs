//! The batching loop: one thread owns the device, the compiled programs and a KV cache
//! of `max_batch` rows; requests reach it through a bounded channel.
//!
//! Continuous batching over fixed slots. A prompt is prefilled alone (the generator's
//! prefill program, one row), then copied into a free row of the batch cache, and from
//! then on every step decodes all active rows in one call of one compiled program; a row
//! leaves when its request is done and the next queued prompt takes it.
//!
//! Rows join at different times, so their caches fill at different slots. The generator's
//! decode program writes every row at one shared `cur`; ours ([`slot_decode_program`])
//! takes `cur [B]` and writes each row at its own slot (a small in-place update per row), and
//! each row's `key_valid` says which slots it sees. The alternative, one shared slot
//! counter with rows placed so their slots line up, would waste cache and need
//! compaction; a slot per row keeps each row laid out exactly as `generate` lays out a
//! lone prompt (prompt at slot 0, token k at slot len + k), so a row computes what it
//! computes alone. Free rows decode a dummy token with no visible key, take no expert
//! capacity, and are ignored.
//!
//! Prompts are left-padded to the next power of two (at least [`MIN_BUCKET`]) for their
//! prefill, so few prefill programs are compiled; padding is invisible to the row, as in
//! `generate`'s batches. Under the port's routing (Hugging Face models) rows are fully
//! independent; under the original routing the active rows of one decode step share
//! expert capacity, as rows of `generate`'s batches do.
//!
//! The queue also carries what does not fit a batch row ([`Work`]): beam-search and spout
//! prompts run alone ([`super::solo`]), and one-forward requests (routing, mask filling)
//! are answered between decode steps ([`super::forward`]), all on the same device and
//! parameters.

use super::api::{FinishReason, PromptIds, Sampling, Usage};
use super::forward::{ForwardJob, Forwards};
use super::programs::{insert_row_program, slot_decode_program};
use super::text::TextStream;
use crate::cli::batch_input::decode_text;
use crate::device::{Device, Program};
use crate::generate::sampling::{pick, Rng};
use crate::generate::Generator;
use crate::model::decode::cache_shape;
use crate::model::inputs::HostBatch;
use crate::model::ModelConfig;
use crate::tokenizer::Tokenizer;
use anyhow::{anyhow, bail, Result};
use hlo::Literal;
use runtime::Buffer;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::mpsc::UnboundedSender;

/// The shortest prefill length (shorter prompts are left-padded to it).
pub const MIN_BUCKET: usize = 8;

/// What the engine serves.
pub struct Model {
    pub cfg: ModelConfig,
    pub params: Vec<Literal>,
    pub tok: Arc<Tokenizer>,
    /// How the weights are kept on the device (`serve --precision`); every program
    /// computes in f32.
    pub weights: hlo::DType,
}

/// One prompt of a request; `index` is its choice index.
pub struct Job {
    pub prompt: PromptIds,
    pub index: usize,
    pub sampling: Arc<Sampling>,
    pub events: UnboundedSender<(usize, Event)>,
}

/// What the engine is asked to do, in arrival order.
pub enum Work {
    /// Continue a prompt (in the batch, or alone: see [`super::solo`]).
    Generate(Job),
    /// One forward pass (routing, mask filling), answered at once.
    Forward(ForwardJob),
}

/// What a job reports back, tagged with its index.
#[derive(Debug)]
pub enum Event {
    /// New text (a streaming delta).
    Text(String),
    Done {
        text: String,
        reason: FinishReason,
        usage: Usage,
    },
    Failed(String),
}

/// The running engine thread and the way in.
pub struct EngineHandle {
    jobs: SyncSender<Work>,
    active: Arc<AtomicUsize>,
    thread: JoinHandle<()>,
    /// The device the engine runs on, in words.
    pub device: String,
}

impl EngineHandle {
    /// A sender for jobs (the channel is bounded: `try_send` fails when the queue is full).
    pub fn jobs(&self) -> SyncSender<Work> {
        self.jobs.clone()
    }

    /// Rows now decoding.
    pub fn active(&self) -> Arc<AtomicUsize> {
        self.active.clone()
    }

    /// Waits for the engine to finish its jobs once every other sender is gone.
    pub fn shutdown(self) {
        drop(self.jobs);
        if self.thread.join().is_err() {
            tracing::error!("the engine thread panicked");
        }
    }
}

/// Starts the engine thread on `plugin`'s device with `max_batch` rows and a queue of
/// `queue` prompts; returns once its programs are compiled.
pub fn spawn(
    model: Model,
    plugin: Option<String>,
    max_batch: usize,
    queue: usize,
) -> Result<EngineHandle> {
    if max_batch == 0 || queue == 0 {
        bail!("--max-batch and --max-queue must be at least 1");
    }
    let (jobs, rx) = sync_channel::<Work>(queue);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<String>>();
    let active = Arc::new(AtomicUsize::new(0));
    let counter = active.clone();
    let thread = std::thread::Builder::new()
        .name("gptsan-engine".into())
        .spawn(move || {
            let device = match Device::open(plugin.as_deref(), None) {
                Ok(d) => d,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            match Engine::new(&device, &model, max_batch, counter) {
                Ok(engine) => {
                    let _ = ready_tx.send(Ok(device.describe()));
                    if let Err(e) = engine.run(&rx) {
                        tracing::error!("the engine stopped: {e:#}");
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })?;
    let device = ready_rx
        .recv()
        .map_err(|_| anyhow!("the engine thread stopped while starting"))??;
    Ok(EngineHandle {
        jobs,
        active,
        thread,
        device,
    })
}

/// A prompt being continued in one row of the batch.
struct Row {
    job: Job,
    tokens: Vec<u32>,
    /// How many tokens it may produce (max_tokens, or fewer when the context is full).
    steps: usize,
    /// The token to feed at the next decode step, its position and cache slot.
    pending: i32,
    next_pos: i32,
    cur: usize,
    /// `[slots]`: 1 where the row's cache holds a real key.
    key_valid: Vec<i32>,
    rng: Rng,
    text: TextStream,
}

impl Row {
    /// Sends an event; false when the client has gone.
    fn send(&self, event: Event) -> bool {
        self.job.events.send((self.job.index, event)).is_ok()
    }
}

struct Engine<'d> {
    device: &'d Device,
    gen: Generator<'d>,
    cfg: ModelConfig,
    tok: Arc<Tokenizer>,
    slots: usize,
    decode: Program,
    insert: Program,
    /// `[L, 2, max_batch, H, slots, dh]` on the device (empty while a call holds it).
    cache: Vec<Buffer>,
    rows: Vec<Option<Row>>,
    active: Arc<AtomicUsize>,
    forwards: Forwards,
}

impl<'d> Engine<'d> {
    fn new(
        device: &'d Device,
        model: &Model,
        max_batch: usize,
        active: Arc<AtomicUsize>,
    ) -> Result<Engine<'d>> {
        let cfg = model.cfg.clone();
        let gen = Generator::with_weights(device, &cfg, &model.params, None, model.weights)?;
        let (b, slots) = (max_batch as i64, cfg.context);
        let decode = gen.compile(slot_decode_program(&cfg, b, slots, model.weights)?)?;
        let insert = device.compile(&insert_row_program(&cfg, b, slots)?)?;
        let mut engine = Engine {
            device,
            gen,
            tok: model.tok.clone(),
            slots: slots as usize,
            decode,
            insert,
            cache: Vec::new(),
            rows: (0..max_batch).map(|_| None).collect(),
            active,
            forwards: Forwards::default(),
            cfg,
        };
        engine.reset_cache()?;
        Ok(engine)
    }

    /// Serves jobs until the channel closes and every row is done. The cores are kept
    /// awake while rows decode, and left to idle while the engine waits for work.
    fn run(mut self, jobs: &Receiver<Work>) -> Result<()> {
        let mut awake = None;
        loop {
            if self.count_active() == 0 {
                awake = None;
            }
            if !self.admit(jobs) {
                return Ok(());
            }
            if self.count_active() > 0 {
                if awake.is_none() {
                    awake = self.device.keep_cores_awake();
                }
                if let Err(e) = self.step() {
                    self.fail_all(&format!("decoding failed: {e:#}"));
                    self.reset_cache()?;
                }
            }
        }
    }

    fn count_active(&self) -> usize {
        let n = self.rows.iter().flatten().count();
        self.active.store(n, Ordering::Relaxed);
        n
    }

    /// Moves queued jobs into free rows (waiting for one when nothing runs); false when
    /// the channel is closed and nothing runs.
    fn admit(&mut self, jobs: &Receiver<Work>) -> bool {
        while let Some(free) = self.rows.iter().position(Option::is_none) {
            let work = if self.count_active() == 0 {
                match jobs.recv() {
                    Ok(j) => j,
                    Err(_) => return false,
                }
            } else {
                match jobs.try_recv() {
                    Ok(j) => j,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            };
            match work {
                Work::Forward(f) => self.forwards.run(&self.gen, &self.cfg, f),
                Work::Generate(job) if job.events.is_closed() => {}
                Work::Generate(job) if job.sampling.solo() => self.run_solo(&job),
                Work::Generate(job) => self.start(free, job),
            }
        }
        true
    }

    /// Generates a beam-search or spout prompt alone (see [`super::solo`]).
    fn run_solo(&mut self, job: &Job) {
        if let Err(e) = super::solo::run(&mut self.gen, &self.tok, &self.cfg, job) {
            let _ = job
                .events
                .send((job.index, Event::Failed(format!("{e:#}"))));
        }
    }

    /// Prefills `job` into row `slot` and takes its first token.
    fn start(&mut self, slot: usize, job: Job) {
        let first = match self.prefill(&job) {
            Ok(p) => p,
            Err(e) => {
                let _ = job
                    .events
                    .send((job.index, Event::Failed(format!("{e:#}"))));
                return;
            }
        };
        let (row_cache, logits, row) = first.into_row(job);
        if let Err(e) = self.insert_row(row_cache, slot) {
            let _ = row.send(Event::Failed(format!("{e:#}")));
            self.fail_all(&format!("joining the batch failed: {e:#}"));
            if let Err(e) = self.reset_cache() {
                tracing::error!("cannot rebuild the cache: {e:#}");
            }
            return;
        }
        self.rows[slot] = Some(row);
        self.advance(slot, &logits);
    }

    /// Runs the prompt alone, left-padded to its bucket, with a cache of `slots` slots.
    fn prefill(&mut self, job: &Job) -> Result<Prefill> {
        let n = job.prompt.ids.len();
        let steps = job.sampling.max_tokens.min(self.slots.saturating_sub(n));
        if steps == 0 {
            bail!("the prompt of {n} tokens leaves no room in the context");
        }
        let batch = left_padded(&job.prompt, bucket(n, steps, self.slots));
        let pre = self.gen.run_prefill(&batch, self.slots)?;
        if pre.slots as usize != self.slots {
            bail!(
                "the prefill made {} cache slots, not {}",
                pre.slots,
                self.slots
            );
        }
        Ok(Prefill {
            cache: pre.cache,
            logits: pre.logits.to_vec::<f32>()?,
            key_valid: pre.key_valid,
            next_pos: pre.next_pos.first().copied().unwrap_or(0),
            first_slot: pre.first_slot as usize,
            steps,
        })
    }

    /// Copies a one-row cache into row `slot` of the batch cache.
    fn insert_row(&mut self, row_cache: Vec<Buffer>, slot: usize) -> Result<()> {
        let cache = std::mem::take(&mut self.cache);
        let (Some(batch), Some(one)) = (cache.first(), row_cache.first()) else {
            bail!("no cache to insert into");
        };
        let index = self.device.upload(&Literal::scalar(slot as i32), 0)?;
        let mut out = self.insert.run(&[batch, one, &index])?;
        self.cache = vec![out
            .pop()
            .ok_or_else(|| anyhow!("insert_row returned nothing"))?];
        Ok(())
    }

    /// One decode call for every row; each active row then takes its next token.
    fn step(&mut self) -> Result<()> {
        let (b, m) = (self.rows.len(), self.slots);
        let mut token = vec![0i32; b];
        let mut position = vec![0i32; b];
        let mut key_valid = vec![0i32; b * m];
        let mut cur = vec![0i32; b];
        for (r, row) in self.rows.iter().enumerate() {
            if let Some(row) = row {
                token[r] = row.pending;
                position[r] = row.next_pos;
                key_valid[r * m..(r + 1) * m].copy_from_slice(&row.key_valid);
                cur[r] = row.cur as i32;
            }
        }
        let (bi, mi) = (b as i64, m as i64);
        let args = [
            Literal::from_slice(&[bi, 1], &token)?,
            Literal::from_slice(&[bi, 1], &position)?,
            Literal::from_slice(&[bi, mi], &key_valid)?,
            Literal::from_slice(&[bi], &cur)?,
        ];
        let cache = std::mem::take(&mut self.cache);
        let (logits, cache) = self.gen.call(&self.decode, Some(cache), &args)?;
        self.cache = cache;
        let flat = logits.to_vec::<f32>()?;
        let v = self.cfg.vocab_size as usize;
        let last_pos = self.cfg.context as i32 - 1;
        for r in 0..b {
            if let Some(row) = self.rows[r].as_mut() {
                row.cur += 1;
                row.next_pos = (row.next_pos + 1).min(last_pos);
                self.advance(r, &flat[r * v..(r + 1) * v]);
            }
        }
        Ok(())
    }

    /// Picks row `slot`'s next token from `logits`, sends its text, and frees the row
    /// when it is done (or its client has gone).
    fn advance(&mut self, slot: usize, logits: &[f32]) {
        let v = self.cfg.vocab_size as u32;
        let (sep, not, eot) = (v - 5, v - 4, v - 1);
        let Some(row) = self.rows[slot].as_mut() else {
            return;
        };
        let sampling = row.job.sampling.clone();
        let id = pick(logits, &sampling.strategy, &[sep, not], &mut row.rng);
        row.tokens.push(id);
        let end_of_text = sampling.stop_at_eot && id == eot;
        let full_length = row.tokens.len() >= row.steps;
        let full = decode_text(&self.tok, &self.cfg, &row.tokens).unwrap_or_default();
        let update = row.text.update(&full, end_of_text || full_length);
        let alive = update.delta.is_empty() || row.send(Event::Text(update.delta));
        let reason = if update.stopped || end_of_text {
            Some(FinishReason::Stop)
        } else if full_length {
            Some(FinishReason::Length)
        } else {
            None
        };
        if let Some(reason) = reason {
            let prompt_tokens = row.job.prompt.ids.len();
            let usage = Usage {
                prompt_tokens,
                completion_tokens: row.tokens.len(),
                total_tokens: prompt_tokens + row.tokens.len(),
            };
            let text = row.text.text().to_string();
            row.send(Event::Done {
                text,
                reason,
                usage,
            });
            self.rows[slot] = None;
        } else if !alive {
            self.rows[slot] = None;
        } else {
            row.key_valid[row.cur] = 1;
            row.pending = id as i32;
        }
    }

    /// Ends every active row with an error (the batch cache is lost).
    fn fail_all(&mut self, message: &str) {
        for row in self.rows.iter_mut() {
            if let Some(r) = row.take() {
                r.send(Event::Failed(message.to_string()));
            }
        }
    }

    fn reset_cache(&mut self) -> Result<()> {
        let shape = cache_shape(&self.cfg, self.rows.len() as i64, self.slots as i64);
        self.cache = vec![self.device.upload(&Literal::zeros(shape), 0)?];
        Ok(())
    }
}

/// A prompt after its prefill, before it joins the batch.
struct Prefill {
    cache: Vec<Buffer>,
    logits: Vec<f32>,
    key_valid: Vec<i32>,
    next_pos: i32,
    first_slot: usize,
    steps: usize,
}

impl Prefill {
    /// The one-row cache, the first token's logits, and the row.
    fn into_row(self, job: Job) -> (Vec<Buffer>, Vec<f32>, Row) {
        let row = Row {
            tokens: Vec::new(),
            steps: self.steps,
            pending: 0,
            next_pos: self.next_pos,
            cur: self.first_slot,
            key_valid: self.key_valid,
            rng: Rng::new(job.sampling.seed),
            text: TextStream::new(job.sampling.stop.clone()),
            job,
        };
        (self.cache, self.logits, row)
    }
}

/// The prefill length of a prompt of `n` tokens that may generate `steps` more in a cache
/// of `slots`: the next power of two (at least [`MIN_BUCKET`]) when the generated tokens
/// still fit after it, else `n` itself.
pub fn bucket(n: usize, steps: usize, slots: usize) -> usize {
    let b = n.next_power_of_two().max(MIN_BUCKET);
    if b + steps <= slots {
        b
    } else {
        n
    }
}

/// One row, left-padded to `len` tokens.
fn left_padded(p: &PromptIds, len: usize) -> HostBatch {
    let pad = len.saturating_sub(p.ids.len());
    let padded = |fill: i32, v: &[i32]| -> Vec<i32> {
        std::iter::repeat_n(fill, pad)
            .chain(v.iter().copied())
            .collect()
    };
    HostBatch {
        batch: 1,
        len: pad + p.ids.len(),
        input_ids: padded(0, &p.ids),
        attention_mask: padded(0, &vec![1; p.ids.len()]),
        token_type_ids: padded(0, &p.types),
        spout: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_unless_the_context_is_short() {
        assert_eq!(bucket(3, 10, 64), 8);
        assert_eq!(bucket(9, 10, 64), 16);
        assert_eq!(bucket(33, 10, 64), 33);
        assert_eq!(bucket(60, 4, 64), 60);
    }

    #[test]
    fn left_padding_keeps_the_prompt_last() {
        let p = PromptIds {
            ids: vec![5, 6],
            types: vec![1, 0],
        };
        let b = left_padded(&p, 4);
        assert_eq!(b.input_ids, vec![0, 0, 5, 6]);
        assert_eq!(b.attention_mask, vec![0, 0, 1, 1]);
        assert_eq!(b.token_type_ids, vec![0, 0, 1, 0]);
    }
}
