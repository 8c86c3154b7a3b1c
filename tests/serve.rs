//! `gptsan serve` end to end on the fixture model: a server on an ephemeral loopback port,
//! greedy text equal to `gptsan generate --greedy`, concurrent requests batched and each
//! equal to its solo result, streaming, JSON errors, and a graceful stop on SIGTERM.

mod common;

use gptsan::tokenizer::{DecodeOptions, Tokenizer};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

/// Every wait in this test is bounded by this.
const TIMEOUT: Duration = Duration::from_secs(180);

/// The fixture's vocabulary (the original's 36K).
fn vocab() -> String {
    common::shared()
        .join("gptsan-vocab/ja-swe36k.txt")
        .to_string_lossy()
        .into_owned()
}

fn tokenizer() -> Tokenizer {
    let v = common::shared().join("gptsan-vocab/ja-swe36k.txt");
    Tokenizer::from_files(&v, &v.with_file_name("emoji.json")).unwrap()
}

/// A running `gptsan serve`, killed when dropped (if SIGTERM did not stop it first).
struct Server {
    child: Child,
    client: Client,
    stderr: Receiver<String>,
}

/// Requests to the server at `base` (shared by client threads).
struct Client {
    base: String,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let model = common::hf_tiny();
        let vocab = vocab();
        let mut all = vec![
            "serve",
            "--model",
            model.to_str().unwrap(),
            "--vocab",
            &vocab,
        ];
        all.extend_from_slice(&["--port", "0"]);
        all.extend_from_slice(args);
        let mut child = common::gptsan_command(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gptsan serve starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let (etx, erx) = channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            let _ = etx.send(s);
        });
        let first = lines.recv_timeout(TIMEOUT);
        let Ok(line) = first else {
            let _ = child.kill();
            let err = erx.recv_timeout(TIMEOUT).unwrap_or_default();
            panic!("the server printed no address: {err}");
        };
        let base = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        assert!(base.starts_with("http://127.0.0.1:"), "{base}");
        Server {
            child,
            client: Client { base },
            stderr: erx,
        }
    }

    fn post(&self, path: &str, body: &str) -> (u16, String) {
        self.client.post(path, body)
    }

    fn complete(&self, body: &Value) -> (u16, Value) {
        self.client.complete(body)
    }

    fn sigterm(&self) {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    }

    /// After SIGTERM: the exit status and everything written to stderr.
    fn wait(mut self) -> (bool, String) {
        let stderr = self.stderr.recv_timeout(TIMEOUT).expect("the server exits");
        let status = self.child.wait().expect("the server is reaped");
        (status.success(), stderr)
    }
}

impl Client {
    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into()
    }

    /// POSTs a raw body; returns the status and the body text.
    fn post(&self, path: &str, body: &str) -> (u16, String) {
        let mut r = Self::agent()
            .post(&format!("{}{path}", self.base))
            .header("Content-Type", "application/json")
            .send(body)
            .expect("the server answers");
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().expect("a body"))
    }

    fn complete(&self, body: &Value) -> (u16, Value) {
        let (status, text) = self.post("/v1/completions", &body.to_string());
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, v)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn greedy(prompt: &str, max_tokens: usize) -> Value {
    json!({ "prompt": prompt, "max_tokens": max_tokens, "temperature": 0 })
}

const PROMPTS: [&str; 8] = [
    "こんにちは",
    "東京は日本の首都です。",
    "吾輩は猫である",
    "今日は",
    "富士山",
    "ありがとうございました。また来てください",
    "AI",
    "雨",
];

/// Each prompt's greedy ids alone, from `generate --input --batch-size 1`.
fn solo_greedy(max_new: usize) -> Vec<Vec<u32>> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("prompts.jsonl");
    let lines: Vec<String> = PROMPTS
        .iter()
        .map(|p| json!({ "prompt": p }).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let model = common::hf_tiny();
    let out = common::run_ok(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--vocab",
        &vocab(),
        "--input",
        input.to_str().unwrap(),
        "--greedy",
        "--batch-size",
        "1",
        "--max-new-tokens",
        &max_new.to_string(),
    ]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut rows: Vec<(usize, Vec<u32>)> = stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let ids = serde_json::from_value(v["ids"].clone()).unwrap();
            (v["input"].as_u64().unwrap() as usize, ids)
        })
        .collect();
    rows.sort();
    rows.into_iter().map(|(_, ids)| ids).collect()
}

fn text_of(tok: &Tokenizer, ids: &[u32]) -> String {
    tok.decode_with(ids, &DecodeOptions::generated()).unwrap()
}

#[test]
fn serves_greedy_text_equal_to_generate_batched_streamed_and_with_json_errors() {
    let model = common::hf_tiny();
    // The reference: `generate --greedy --json` for one prompt.
    let out = common::run_ok(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--vocab",
        &vocab(),
        "--prompt",
        PROMPTS[1],
        "--greedy",
        "--json",
        "--max-new-tokens",
        "12",
    ]);
    let want: Value = serde_json::from_slice(&out.stdout).unwrap();
    let solo = solo_greedy(20);
    let tok = tokenizer();

    let server = Server::start(&["--max-batch", "4"]);
    let health: Value = serde_json::from_str(
        &Client::agent()
            .get(&format!("{}/health", server.client.base))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(health["status"], "ok");

    // Greedy text equals generate's.
    let (status, got) = server.complete(&greedy(PROMPTS[1], 12));
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["object"], "text_completion");
    assert_eq!(got["choices"][0]["text"], want["text"], "{got}");
    let n = want["ids"].as_array().unwrap().len();
    assert_eq!(got["usage"]["completion_tokens"], n);
    assert_eq!(got["choices"][0]["finish_reason"], "length");

    // 8 concurrent requests over 4 rows, of different lengths so rows leave and join at
    // different steps: each equals its prompt's solo greedy result.
    let answers: Vec<(usize, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..PROMPTS.len())
            .map(|k| {
                let client = &server.client;
                s.spawn(move || {
                    let max_tokens = 6 + 2 * k;
                    (
                        max_tokens,
                        client.complete(&greedy(PROMPTS[k], max_tokens)).1,
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (k, (max_tokens, got)) in answers.iter().enumerate() {
        let ids = &solo[k][..solo[k].len().min(*max_tokens)];
        assert_eq!(
            got["choices"][0]["text"].as_str(),
            Some(text_of(&tok, ids).as_str()),
            "prompt {k}: {got}"
        );
    }

    // Streaming: chunks of the same shape, then [DONE]; the text is the same.
    let body = json!({ "prompt": PROMPTS[1], "max_tokens": 12, "temperature": 0, "stream": true });
    let (status, sse) = server.post("/v1/completions", &body.to_string());
    assert_eq!(status, 200);
    let data: Vec<&str> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{sse}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let streamed: String = chunks
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(streamed, want["text"].as_str().unwrap());
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "length"
    );

    // A list of prompts gives one choice per prompt, in order.
    let (status, got) = server.complete(&json!({
        "prompt": [PROMPTS[0], PROMPTS[2]], "max_tokens": 6, "temperature": 0
    }));
    assert_eq!(status, 200, "{got}");
    for (i, k) in [0, 2].into_iter().enumerate() {
        assert_eq!(got["choices"][i]["index"], i);
        assert_eq!(
            got["choices"][i]["text"].as_str(),
            Some(text_of(&tok, &solo[k][..6]).as_str())
        );
    }

    // Errors are JSON with a status of 400 (or 404).
    let too_long: Vec<u32> = (0..70).map(|i| 100 + i).collect();
    for (body, needle) in [
        ("{\"prompt\": \"a\",".to_string(), "malformed JSON"),
        (json!({ "prompt": "" }).to_string(), "empty"),
        (json!({ "prompt": [] }).to_string(), "empty"),
        (json!({ "prompt": too_long }).to_string(), "context"),
        (json!({ "prompt": "雨".repeat(100) }).to_string(), "context"),
        (
            json!({ "prompt": "a", "max_tokens": "x" }).to_string(),
            "invalid request",
        ),
        (
            json!({ "prompt": "a", "temperature": -1 }).to_string(),
            "temperature",
        ),
    ] {
        let (status, text) = server.post("/v1/completions", &body);
        assert_eq!(status, 400, "{body}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(v["error"]["type"], "invalid_request_error");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
    }
    let (status, text) = server.post("/v1/nothing", "{}");
    assert_eq!(status, 404);
    assert!(text.contains("\"error\""));

    // SIGTERM during a streamed request: it still runs to its end, then the server stops;
    // every request left one log line.
    let body = json!({
        "prompt": PROMPTS[0], "max_tokens": 40, "temperature": 0, "stream": true, "ignore_eos": true
    });
    let mut response = Client::agent()
        .post(&format!("{}/v1/completions", server.client.base))
        .send(&body.to_string())
        .unwrap();
    let mut events = BufReader::new(response.body_mut().as_reader())
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| l.strip_prefix("data: ").map(str::to_string));
    let first = events.next().expect("a first chunk");
    assert!(first.starts_with('{'), "{first}");
    server.sigterm();
    let rest: Vec<String> = events.collect();
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"), "{rest:?}");
    let finish: Value = serde_json::from_str(&rest[rest.len() - 2]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    let (ok, stderr) = server.wait();
    assert!(ok, "the server did not stop cleanly: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let logged = stderr.matches("POST /v1/completions").count();
    assert_eq!(logged, 1 + PROMPTS.len() + 1 + 1 + 7 + 1, "{stderr}");
}

/// `gptsan forward` on one row of ids with prefix flags; returns its outputs.
fn forward_outputs(ids: &[i32], types: &[i32]) -> std::collections::HashMap<String, hlo::Literal> {
    use gptsan::model::checkpoint::{read_safetensors, write_safetensors};
    let dir = tempfile::tempdir().unwrap();
    let (inputs, output) = (dir.path().join("in.st"), dir.path().join("out.st"));
    let dims = [1, ids.len() as i64];
    let tensors = [
        (
            "input_ids".to_string(),
            hlo::Literal::from_slice(&dims, ids).unwrap(),
        ),
        (
            "token_type_ids".to_string(),
            hlo::Literal::from_slice(&dims, types).unwrap(),
        ),
    ];
    let refs: Vec<(String, &hlo::Literal)> = tensors.iter().map(|(n, l)| (n.clone(), l)).collect();
    write_safetensors(&inputs, &refs, None).unwrap();
    let model = common::hf_tiny();
    common::run_ok(&[
        "forward",
        "--model",
        model.to_str().unwrap(),
        "--inputs",
        inputs.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    read_safetensors(&output).unwrap().into_iter().collect()
}

/// Asserts that an inspect answer equals forward's router outputs for its ids.
fn assert_routing_equals_forward(answer: &Value, types: &[i32]) {
    let ids: Vec<i32> = serde_json::from_value(answer["ids"].clone()).unwrap();
    let out = forward_outputs(&ids, types);
    let layers = answer["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "the fixture has two switch layers");
    assert_eq!(answer["tokens"].as_array().unwrap().len(), ids.len());
    for (l, layer) in layers.iter().enumerate() {
        let want = |k: &str| out[&format!("router.{l}.{k}")].to_f64_vec();
        let got = |k: &str| -> Vec<f64> {
            let v = &layer[k];
            let flat: Vec<Value> = match v[0].as_array() {
                Some(_) => v
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|r| r.as_array().unwrap().clone())
                    .collect(),
                None => v.as_array().unwrap().clone(),
            };
            flat.iter().map(|x| x.as_f64().unwrap()).collect()
        };
        assert_eq!(got("expert"), want("expert"), "layer {l}");
        assert_eq!(got("kept"), want("kept"), "layer {l}");
        let (a, b) = (got("probs"), want("probs"));
        assert_eq!(a.len(), b.len());
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(worst <= 1e-5, "layer {l}: probs differ by {worst}");
        let experts = want("expert");
        for (t, p) in got("prob").iter().enumerate() {
            assert!(
                (p - b[t * 4 + experts[t] as usize]).abs() <= 1e-5,
                "layer {l} token {t}"
            );
        }
    }
}

#[test]
fn inspect_equals_forward_and_fill_mask_fills_with_json_errors() {
    let server = Server::start(&["--max-batch", "2"]);
    // Ids as given: 60 tokens over 4 experts of capacity 8, so some are dropped.
    let ids: Vec<i32> = (0..60).map(|i| 100 + 37 * i).collect();
    let (status, text) = server.post("/v1/inspect", &json!({ "ids": ids }).to_string());
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["ids"], json!(ids));
    assert_routing_equals_forward(&answer, &[0; 60]);
    let dropped = answer["layers"][0]["kept"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| **k == 0)
        .count();
    assert!(
        dropped > 0,
        "no token was dropped: {}",
        answer["layers"][0]["kept"]
    );

    // Text with a prefix: [SOT] prefix [SEG] prompt, the prefix bidirectional.
    let body = json!({ "prompt": PROMPTS[1], "prefix": PROMPTS[0] });
    let (status, text) = server.post("/v1/inspect", &body.to_string());
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    let ids: Vec<i32> = serde_json::from_value(answer["ids"].clone()).unwrap();
    let seg = ids.iter().position(|&i| i == 35998).expect("a SEG");
    assert!(seg > 1, "the prefix comes before SEG: {ids:?}");
    let types: Vec<i32> = (0..ids.len()).map(|i| (i < seg) as i32).collect();
    assert_routing_equals_forward(&answer, &types);
    assert_eq!(answer["tokens"][0], "<|startoftext|>");

    // Fill-mask equals `gptsan fill-mask --json`.
    let masked = "東京は日本の[MASK]です。";
    let model = common::hf_tiny();
    let cli = common::run_ok(&[
        "fill-mask",
        "--model",
        model.to_str().unwrap(),
        "--vocab",
        &vocab(),
        "--text",
        masked,
        "--json",
    ]);
    let want: Value = serde_json::from_slice(&cli.stdout).unwrap();
    let (status, text) = server.post("/v1/fill-mask", &json!({ "text": masked }).to_string());
    assert_eq!(status, 200, "{text}");
    let got: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(got["output_ids"], want["output_ids"]);
    assert_eq!(got["text"], want["output_text"]);
    assert!(!got["text"].as_str().unwrap().contains("[MASK]"));
    let filled = got["filled"].as_array().unwrap();
    assert_eq!(filled.iter().filter(|f| **f == true).count(), 1);
    assert_eq!(filled.len(), got["tokens"].as_array().unwrap().len());

    // Bad input: JSON errors with status 400.
    let long: Vec<i32> = (0..65).map(|i| 100 + i).collect();
    for (path, body, needle) in [
        ("/v1/inspect", "{\"ids\": [1,".to_string(), "malformed JSON"),
        ("/v1/inspect", json!({ "prompt": "" }).to_string(), "empty"),
        ("/v1/inspect", json!({ "ids": [] }).to_string(), "empty"),
        ("/v1/inspect", json!({ "ids": long }).to_string(), "context"),
        (
            "/v1/inspect",
            json!({ "prompt": "雨".repeat(100) }).to_string(),
            "context",
        ),
        (
            "/v1/inspect",
            json!({ "ids": [5, 36000] }).to_string(),
            "out of range",
        ),
        (
            "/v1/inspect",
            json!({ "ids": [5, -1] }).to_string(),
            "out of range",
        ),
        (
            "/v1/inspect",
            json!({ "text": "a" }).to_string(),
            "unknown field",
        ),
        ("/v1/fill-mask", "nope".to_string(), "malformed JSON"),
        ("/v1/fill-mask", json!({ "text": "" }).to_string(), "[MASK]"),
        (
            "/v1/fill-mask",
            json!({ "text": "[MASK]".repeat(70) }).to_string(),
            "context",
        ),
        (
            "/v1/fill-mask",
            json!({ "ids": [35993, 40000] }).to_string(),
            "out of range",
        ),
        (
            "/v1/completions",
            json!({ "prompt": "a", "beam_width": 0 }).to_string(),
            "beam_width",
        ),
        (
            "/v1/completions",
            json!({ "prompt": "a", "spout_class": 16 }).to_string(),
            "spout",
        ),
        (
            "/v1/completions",
            json!({ "prompt": [1, 2], "prefix": "a" }).to_string(),
            "prefix",
        ),
    ] {
        let (status, text) = server.post(path, &body);
        assert_eq!(status, 400, "{path} {body}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(v["error"]["type"], "invalid_request_error");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{path} {body}: {message}");
    }
}

#[test]
fn beam_search_and_spout_prompts_equal_generate() {
    let model = common::hf_tiny();
    let vocab = vocab();
    let reference = |extra: &[&str]| -> Value {
        let mut args = vec![
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--vocab",
            &vocab,
            "--prompt",
            PROMPTS[2],
            "--prefix",
            PROMPTS[3],
            "--max-new-tokens",
            "10",
            "--json",
        ];
        args.extend_from_slice(extra);
        serde_json::from_slice(&common::run_ok(&args).stdout).unwrap()
    };
    let beam = reference(&["--beam-width", "3"]);
    let spout = reference(&["--greedy", "--spout", "onehot:5"]);
    let server = Server::start(&[]);
    let base =
        json!({ "prompt": PROMPTS[2], "prefix": PROMPTS[3], "max_tokens": 10, "temperature": 0 });
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let (status, got) = server.complete(&with("beam_width", json!(3)));
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["choices"][0]["text"], beam["text"], "{got}");
    let (status, got) = server.complete(&with("spout_class", json!(5)));
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["choices"][0]["text"], spout["text"], "{got}");
}

/// `serve --precision bf16` keeps 16-bit weights like `generate --precision bf16`: the
/// same greedy text (batched decode and solo prefill over the bf16 weights), and the
/// routing view runs over them too.
#[test]
fn bf16_weights_serve_what_bf16_generate_generates() {
    let model = common::hf_tiny();
    let vocab = vocab();
    let reference: Value = serde_json::from_slice(
        &common::run_ok(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--vocab",
            &vocab,
            "--prompt",
            PROMPTS[1],
            "--max-new-tokens",
            "12",
            "--greedy",
            "--precision",
            "bf16",
            "--json",
        ])
        .stdout,
    )
    .unwrap();
    let server = Server::start(&["--precision", "bf16"]);
    let (status, got) = server.complete(&greedy(PROMPTS[1], 12));
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["choices"][0]["text"], reference["text"], "{got}");
    let (status, body) = server.post("/v1/inspect", &json!({ "prompt": PROMPTS[1] }).to_string());
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(!v["layers"].as_array().unwrap().is_empty(), "{body}");
}
