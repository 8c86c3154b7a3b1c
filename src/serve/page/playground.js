// The playground's behaviour: talks to this server only (/health, /v1/completions with
// server-sent events, /v1/fill-mask, /v1/inspect) and shows every error it gets.
"use strict";

const $ = (id) => document.getElementById(id);
let model = { context: 0, spout_width: 0 };
let running = null; // the AbortController of the generation in flight

// ---- errors and requests -------------------------------------------------------------

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// The server's JSON error message, or the status line when the body is not JSON.
async function errorOf(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body.error && body.error.message) return body.error.message;
  } catch (_) { /* not JSON */ }
  return `HTTP ${response.status} ${response.statusText}: ${text.slice(0, 200)}`;
}

// POSTs JSON; resolves to the parsed answer, or throws the server's error message.
async function postJson(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(await errorOf(response));
  return response.json();
}

// ---- tabs ----------------------------------------------------------------------------

function showView(name) {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.classList.toggle("active", tab.dataset.view === name);
  }
  for (const view of document.querySelectorAll(".view")) {
    view.hidden = view.id !== `view-${name}`;
  }
}

// ---- generate ------------------------------------------------------------------------

function number(id) {
  return Number($(id).value);
}

function completionRequest() {
  const body = {
    prompt: $("prompt").value,
    max_tokens: number("max-tokens"),
    temperature: $("greedy").checked ? 0 : number("temperature"),
    top_k: number("top-k"),
    top_p: number("top-p"),
    seed: number("seed"),
    stream: true,
  };
  const prefix = $("prefix").value;
  if (prefix) body.prefix = prefix;
  if (number("beam-width") > 1) body.beam_width = number("beam-width");
  if ($("spout-class").value !== "") body.spout_class = Number($("spout-class").value);
  return body;
}

function setRunning(on) {
  $("generate").disabled = on;
  $("stop").disabled = !on;
  $("gen-status").textContent = on ? "generating…" : "";
}

async function generate() {
  clearError();
  $("output-prompt").textContent = $("prompt").value;
  $("output-text").textContent = "";
  running = new AbortController();
  setRunning(true);
  try {
    const response = await fetch("/v1/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(completionRequest()),
      signal: running.signal,
    });
    if (!response.ok) throw new Error(await errorOf(response));
    const reason = await readEvents(response.body.getReader());
    $("gen-status").textContent = reason ? `done (${reason})` : "done";
  } catch (e) {
    if (e.name === "AbortError") {
      $("gen-status").textContent = "stopped";
    } else {
      showError(e.message);
    }
  } finally {
    running = null;
    $("generate").disabled = false;
    $("stop").disabled = true;
  }
}

// Appends every streamed delta; returns the finish reason. An error event throws.
async function readEvents(reader) {
  const decoder = new TextDecoder();
  let pending = "";
  let reason = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return reason;
    pending += decoder.decode(value, { stream: true });
    const lines = pending.split("\n");
    pending = lines.pop();
    for (const line of lines) {
      if (!line.startsWith("data: ")) continue;
      const data = line.slice(6);
      if (data === "[DONE]") return reason;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      const choice = chunk.choices[0];
      $("output-text").textContent += choice.text;
      if (choice.finish_reason) reason = choice.finish_reason;
    }
  }
}

function stop() {
  if (running) running.abort();
}

// ---- fill mask -----------------------------------------------------------------------

async function fill() {
  clearError();
  $("filled").textContent = "";
  $("fill-tokens").replaceChildren();
  $("fill-status").textContent = "filling…";
  try {
    const answer = await postJson("/v1/fill-mask", { text: $("mask-text").value });
    $("filled").textContent = answer.text;
    answer.tokens.forEach((token, i) => {
      $("fill-tokens").append(
        tokenChip(token, answer.logprobs[i], answer.scores[i], answer.filled[i]));
    });
    $("fill-status").textContent = `${answer.filled.filter((f) => f).length} filled`;
  } catch (e) {
    $("fill-status").textContent = "";
    showError(e.message);
  }
}

// An output token with its log-probability (the CLI's score, the logit of the input
// token, in the tooltip); tokens that filled a mask are highlighted.
function tokenChip(token, logprob, score, filled) {
  const chip = document.createElement("span");
  chip.className = filled ? "tok fill" : "tok";
  chip.textContent = token;
  const s = document.createElement("small");
  s.textContent = logprob.toFixed(2);
  chip.append(s);
  const what = filled ? "filled a [MASK]" : "copied from the input";
  chip.title = `${what}; log-probability ${logprob.toFixed(3)}, score ${score.toFixed(3)}`;
  return chip;
}

function insertMask() {
  const area = $("mask-text");
  const at = area.selectionStart;
  area.setRangeText("[MASK]", at, area.selectionEnd, "end");
  area.focus();
}

// ---- routing -------------------------------------------------------------------------

// Expert e of E: a hue of its own; p (the router probability) sets the shade.
function expertColour(e, experts, p) {
  const hue = Math.round((e * 360) / Math.max(experts, 1) + 15) % 360;
  const floor = 1 / Math.max(experts, 1);
  const t = p === undefined ? 0.6 : Math.min(1, Math.max(0, (p - floor) / (1 - floor)));
  return `hsl(${hue}, 70%, ${Math.round(88 - 50 * t)}%)`;
}

async function inspect() {
  clearError();
  $("grid").replaceChildren();
  $("legend").replaceChildren();
  $("routing-status").textContent = "routing…";
  const body = { prompt: $("routing-text").value };
  if ($("routing-prefix").value) body.prefix = $("routing-prefix").value;
  try {
    const answer = await postJson("/v1/inspect", body);
    drawRouting(answer);
    const dropped = answer.layers.reduce((n, l) => n + l.kept.filter((k) => !k).length, 0);
    $("routing-status").textContent =
      `${answer.ids.length} tokens × ${answer.layers.length} switch layers, ${dropped} dropped`;
  } catch (e) {
    $("routing-status").textContent = "";
    showError(e.message);
  }
}

function drawRouting(answer) {
  const experts = answer.layers.length ? answer.layers[0].probs[0].length : 0;
  drawLegend(experts);
  const grid = $("grid");
  answer.tokens.forEach((token, t) => {
    const col = document.createElement("div");
    col.className = "col";
    const label = document.createElement("div");
    label.className = "label";
    label.textContent = token;
    label.title = `#${t}: ${token} (id ${answer.ids[t]})`;
    col.append(label);
    answer.layers.forEach((layer, l) => col.append(routingCell(answer, t, l, experts)));
    grid.append(col);
  });
}

function routingCell(answer, t, l, experts) {
  const layer = answer.layers[l];
  const cell = document.createElement("div");
  cell.className = layer.kept[t] ? "cell" : "cell dropped";
  cell.dataset.token = t;
  cell.dataset.layer = l;
  cell.style.background = expertColour(layer.expert[t], experts, layer.prob[t]);
  cell.addEventListener("mouseenter", () => showDistribution(answer, t, l, experts));
  return cell;
}

function showDistribution(answer, t, l, experts) {
  const layer = answer.layers[l];
  const panel = $("dist");
  panel.replaceChildren();
  const head = document.createElement("div");
  const fate = layer.kept[t] ? "kept" : "dropped (over capacity)";
  head.textContent = `token #${t} “${answer.tokens[t]}”, switch layer ${l}: expert ` +
    `${layer.expert[t]} (p = ${layer.prob[t].toFixed(3)}), ${fate}`;
  panel.append(head);
  layer.probs[t].forEach((p, e) => {
    const bar = document.createElement("div");
    bar.className = "bar";
    const name = document.createElement("span");
    name.textContent = `e${e}`;
    const fill = document.createElement("i");
    fill.style.width = `${Math.max(1, Math.round(p * 170))}px`;
    fill.style.background = expertColour(e, experts, 1);
    const value = document.createElement("small");
    value.textContent = p.toFixed(3);
    bar.append(name, fill, value);
    panel.append(bar);
  });
}

function drawLegend(experts) {
  const legend = $("legend");
  legend.append("colour = expert:");
  for (let e = 0; e < experts; e++) {
    const item = document.createElement("span");
    const sw = document.createElement("span");
    sw.className = "sw";
    sw.style.background = expertColour(e, experts, 1);
    item.append(sw, `e${e}`);
    legend.append(item);
  }
  const shade = document.createElement("span");
  const ramp = document.createElement("span");
  ramp.className = "ramp";
  ramp.style.background =
    `linear-gradient(to right, ${expertColour(0, experts, 0)}, ${expertColour(0, experts, 1)})`;
  shade.append("shade = router probability: low", ramp, "high");
  const dropped = document.createElement("span");
  dropped.textContent = "● in a cell = dropped for capacity · rows = switch layers, top first";
  legend.append(shade, dropped);
}

function routeGenerated() {
  $("routing-text").value = $("prompt").value + $("output-text").textContent;
  $("routing-prefix").value = $("prefix").value;
  showView("routing");
  inspect();
}

// ---- start ---------------------------------------------------------------------------

async function connect() {
  try {
    const response = await fetch("/health");
    if (!response.ok) throw new Error(await errorOf(response));
    model = await response.json();
    $("model-info").textContent =
      `${model.model} · context ${model.context} · batch ${model.max_batch}`;
    if (model.spout_width > 0) {
      for (let k = 0; k < model.spout_width; k++) {
        $("spout-class").append(new Option(String(k), String(k)));
      }
      $("spout-control").hidden = false;
    }
  } catch (e) {
    $("model-info").textContent = "not connected";
    showError(`cannot reach the server: ${e.message}`);
  }
}

for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => showView(tab.dataset.view));
}
$("generate").addEventListener("click", generate);
$("stop").addEventListener("click", stop);
$("to-routing").addEventListener("click", routeGenerated);
$("fill").addEventListener("click", fill);
$("add-mask").addEventListener("click", insertMask);
$("inspect").addEventListener("click", inspect);
$("greedy").addEventListener("change", () => {
  $("temperature").disabled = $("greedy").checked;
});
connect();
