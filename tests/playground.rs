//! The playground in a real browser: `gptsan serve` on an ephemeral loopback port, headless
//! Chromium driven over the DevTools protocol. The page loads, streams a completion, draws
//! the routing grid, fills a mask and shows the server's errors; the DOM is checked at
//! each step. With `GPTSAN_SCREENSHOTS=DIR` the three views are saved there as PNG (the
//! README's pictures come from `docs/`).

mod common;

use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use serde_json::Value;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Every wait for the server or the page is bounded by this (CI machines may be slow).
const WAIT: Duration = Duration::from_secs(120);

/// The browser: `GPTSAN_CHROMIUM`, else Debian's chromium (CI installs it).
fn chromium() -> PathBuf {
    let path = std::env::var_os("GPTSAN_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "no Chromium at {}: install it (`apt-get install chromium`, as .ci/run does) or \
         set GPTSAN_CHROMIUM",
        path.display()
    );
    path
}

/// `gptsan serve` on the fixture model, killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start() -> Server {
        let model = common::hf_tiny();
        let vocab = common::shared().join("gptsan-vocab/ja-swe36k.txt");
        let args = [
            "serve",
            "--model",
            model.to_str().unwrap(),
            "--vocab",
            vocab.to_str().unwrap(),
            "--port",
            "0",
        ];
        let mut child = common::gptsan_command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("gptsan serve starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(WAIT)
            .expect("the server prints its address");
        let base = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Server { child, base }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Headless Chromium that never reaches for the network (the test machine has none, and
/// without these flags Chromium stalls on connection attempts), with a fresh profile.
fn browser(profile: &Path) -> Browser {
    let flags = [
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--lang=ja",
    ];
    let options = LaunchOptions::default_builder()
        .path(Some(chromium()))
        .headless(true)
        .sandbox(false)
        .enable_gpu(false)
        .user_data_dir(Some(profile.to_path_buf()))
        .window_size(Some((1100, 760)))
        .idle_browser_timeout(Duration::from_secs(600))
        .args(flags.iter().map(OsStr::new).collect())
        .build()
        .expect("launch options");
    Browser::new(options).expect("Chromium starts")
}

/// Evaluates the expression `js` in the page; its value comes back through JSON (null when
/// it is undefined or throws).
fn eval(tab: &Tab, js: &str) -> Value {
    let json = tab
        .evaluate(&format!("JSON.stringify(({js}))"), false)
        .unwrap_or_else(|e| panic!("{js}: {e}"))
        .value;
    match json {
        Some(Value::String(s)) => serde_json::from_str(&s).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// Polls `js` until it is truthy; panics with `what` and the page's error box on timeout.
fn wait_for(tab: &Tab, js: &str, what: &str) -> Value {
    let start = Instant::now();
    loop {
        let v = eval(tab, js);
        let truthy = match &v {
            Value::Null | Value::Bool(false) => false,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if truthy {
            return v;
        }
        if start.elapsed() > WAIT {
            let error = eval(tab, "document.getElementById('error').textContent");
            panic!("timed out waiting for {what}; the page's error box says {error}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn text_of(tab: &Tab, id: &str) -> String {
    let v = eval(tab, &format!("document.getElementById('{id}').textContent"));
    v.as_str().unwrap_or_default().to_string()
}

fn click(tab: &Tab, selector: &str) {
    tab.wait_for_element(selector)
        .and_then(|e| e.click().map(|_| ()))
        .unwrap_or_else(|e| panic!("clicking {selector}: {e}"));
}

/// Replaces a field's value by typing `text` into it.
fn type_into(tab: &Tab, id: &str, text: &str) {
    eval(tab, &format!("document.getElementById('{id}').value = ''"));
    click(tab, &format!("#{id}"));
    tab.type_str(text).expect("typing");
}

/// A PNG of the page, copied to `$GPTSAN_SCREENSHOTS/name` when that is set.
fn screenshot(tab: &Tab, name: &str) {
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "{name} is not a PNG");
    if let Some(dir) = std::env::var_os("GPTSAN_SCREENSHOTS") {
        std::fs::write(Path::new(&dir).join(name), png).expect("the screenshot is written");
    }
}

/// The error box is shown and says `needle`.
fn assert_error_shown(tab: &Tab, needle: &str) {
    wait_for(
        tab,
        "!document.getElementById('error').hidden",
        "an error message",
    );
    let message = text_of(tab, "error");
    assert!(message.contains(needle), "error box: {message:?}");
}

#[test]
fn playground_streams_routes_and_fills_masks_in_a_browser() {
    let server = Server::start();
    let profile = tempfile::tempdir().unwrap();
    let browser = browser(profile.path());
    let tab = browser.new_tab().expect("a tab");
    tab.set_default_timeout(WAIT);
    tab.navigate_to(&server.base)
        .and_then(|t| t.wait_until_navigated())
        .expect("the page loads");
    wait_for(
        &tab,
        "document.getElementById('model-info').textContent.includes('context 64')",
        "the model's details",
    );
    // The fixture has a spout of width 16: its classes are offered.
    let classes = eval(
        &tab,
        "document.getElementById('spout-class').options.length",
    );
    assert_eq!(classes, 17, "none + 16 spout classes");

    // An empty prompt: the server's message is shown, nothing hangs.
    click(&tab, "#generate");
    assert_error_shown(&tab, "empty");

    // Generate: the streamed text appears and the stream ends.
    type_into(&tab, "prompt", "吾輩は猫である。名前はまだ無い。");
    type_into(&tab, "prefix", "夏目漱石");
    type_into(&tab, "max-tokens", "24");
    click(&tab, "#greedy");
    click(&tab, "#generate");
    wait_for(
        &tab,
        "document.getElementById('output-text').textContent.length > 0",
        "streamed text",
    );
    wait_for(
        &tab,
        "document.getElementById('gen-status').textContent.startsWith('done')",
        "the end of the stream",
    );
    assert!(eval(&tab, "document.getElementById('error').hidden") == Value::Bool(true));
    assert!(!text_of(&tab, "output-text").is_empty());
    screenshot(&tab, "playground-generate.png");

    // Stop: clicked in the same tick as Generate, so the request is cut before any answer.
    let text = text_of(&tab, "output-text");
    eval(
        &tab,
        "document.getElementById('generate').click() || document.getElementById('stop').click()",
    );
    wait_for(
        &tab,
        "document.getElementById('gen-status').textContent === 'stopped'",
        "the stopped status",
    );
    assert_eq!(
        eval(&tab, "document.getElementById('generate').disabled"),
        false
    );
    assert_eq!(eval(&tab, "document.getElementById('stop').disabled"), true);
    assert_eq!(eval(&tab, "document.getElementById('error').hidden"), true);
    assert!(
        text_of(&tab, "output-text").len() < text.len().max(1),
        "cut before any text"
    );
    // The server is still fine: generate again to the end, the same greedy text.
    click(&tab, "#generate");
    wait_for(
        &tab,
        "document.getElementById('gen-status').textContent.startsWith('done')",
        "the end of the second stream",
    );
    assert_eq!(text_of(&tab, "output-text"), text);

    // Routing of the prompt and its continuation: a cell per token and switch layer.
    click(&tab, "#to-routing");
    let cells = wait_for(
        &tab,
        "document.querySelectorAll('#grid .cell').length",
        "the routing grid",
    );
    let tokens = eval(&tab, "document.querySelectorAll('#grid .col').length");
    let (cells, tokens) = (cells.as_u64().unwrap(), tokens.as_u64().unwrap());
    assert!(tokens > 10, "{tokens} tokens");
    assert_eq!(cells, tokens * 2, "tokens x 2 switch layers");
    let legend = text_of(&tab, "legend");
    assert!(
        legend.contains("e3") && legend.contains("dropped"),
        "{legend}"
    );
    tab.wait_for_element("#grid .col:nth-child(6) .cell")
        .and_then(|e| e.move_mouse_over().map(|_| ()))
        .expect("hovering a cell");
    wait_for(
        &tab,
        "document.getElementById('dist').textContent.includes('switch layer 0: expert')",
        "the hovered token's distribution",
    );
    assert_eq!(
        eval(&tab, "document.querySelectorAll('#dist .bar').length"),
        4
    );
    screenshot(&tab, "playground-routing.png");
    assert_200_tokens_stay_readable(&tab);

    // Fill a mask: the filled text has none left; the filled token is marked.
    click(&tab, "#tab-fill");
    type_into(
        &tab,
        "mask-text",
        "東京は日本の[MASK]です。[MASK]は大きい。",
    );
    click(&tab, "#fill");
    let filled = wait_for(
        &tab,
        "document.getElementById('filled').textContent",
        "the filled text",
    );
    let filled = filled.as_str().unwrap();
    assert!(!filled.contains("[MASK]"), "{filled}");
    assert_eq!(
        eval(&tab, "document.querySelectorAll('.tok.fill').length"),
        2
    );
    screenshot(&tab, "playground-fill.png");

    // Bad input: no mask, and ids over the context, get visible messages.
    type_into(&tab, "mask-text", "no mask here");
    click(&tab, "#fill");
    assert_error_shown(&tab, "[MASK]");
    click(&tab, "#tab-routing");
    type_into(&tab, "routing-text", &"雨".repeat(80));
    click(&tab, "#inspect");
    assert_error_shown(&tab, "context");
    assert_eq!(
        eval(&tab, "document.querySelectorAll('#grid .cell').length"),
        0
    );
}

/// Draws a made-up routing of 200 tokens over 10 switch layers of 16 experts (the
/// released model's shape) with the page's own code: every cell keeps a visible size and
/// the grid wraps instead of overflowing sideways.
fn assert_200_tokens_stay_readable(tab: &Tab) {
    let js = r#"(() => {
        const n = 200, layers = 10, experts = 16;
        const probs = (t, l) => Array.from({ length: experts }, (_, e) => e === (t + l) % experts ? 0.5 : 0.5 / 15);
        const answer = {
            ids: Array.from({ length: n }, (_, t) => t),
            tokens: Array.from({ length: n }, (_, t) => "語" + t),
            layers: Array.from({ length: layers }, (_, l) => ({
                expert: Array.from({ length: n }, (_, t) => (t + l) % experts),
                prob: Array.from({ length: n }, () => 0.5),
                kept: Array.from({ length: n }, (_, t) => (t % 7 === 0 ? 0 : 1)),
                probs: Array.from({ length: n }, (_, t) => probs(t, l)),
            })),
        };
        document.getElementById("grid").replaceChildren();
        document.getElementById("legend").replaceChildren();
        drawRouting(answer);
        const grid = document.getElementById("grid");
        const cells = [...grid.querySelectorAll(".cell")].map((c) => c.getBoundingClientRect());
        return {
            cells: cells.length,
            narrowest: Math.min(...cells.map((r) => r.width)),
            lowest: Math.min(...cells.map((r) => r.height)),
            overflow: grid.scrollWidth - grid.clientWidth,
        };
    })()"#;
    let v = eval(tab, js);
    assert_eq!(v["cells"], 2000, "{v}");
    assert!(v["narrowest"].as_f64().unwrap() >= 16.0, "{v}");
    assert!(v["lowest"].as_f64().unwrap() >= 10.0, "{v}");
    assert!(v["overflow"].as_f64().unwrap() <= 0.0, "{v}");
}
