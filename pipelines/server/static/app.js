// The web chat page of `rag serve`: plain ES2020, no framework, no build step.
//
// It talks to the same server as any OpenAI client does: GET /v1/collections for the
// collections the key may read (the default one preselected), POST /v1/chat/completions with
// stream: true, read as server-sent events from fetch()'s ReadableStream. The first chunk
// carries the numbered `sources`, the middle ones the text, the last the `citations` (with the
// spans of the citation markers in the streamed text: the page has no citation grammar of its
// own), `grounding` and backend; an `error` chunk ends a failed answer.
// Uploads: POST /v1/documents (multipart), then GET /v1/jobs/ID until the job ends; the
// document list is GET /v1/documents.
// Model output is only ever put into the page as text (textContent, text nodes), never as
// HTML, so an answer or a passage cannot inject markup. The server key, when one is needed,
// lives in a variable of this script only: not in storage, cookies or the URL.
"use strict";

const $ = (id) => document.getElementById(id);
let apiKey = ""; // memory only: a reload forgets it
let history = []; // the conversation so far, as OpenAI messages (follow-ups need it)
let running = null; // the AbortController of the answer being streamed

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function requestHeaders(json = true) {
  const headers = json ? { "Content-Type": "application/json" } : {};
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  return headers;
}

// The message of an error response in the OpenAI shape, or of anything else the server sent.
async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (_) { /* not JSON */ }
  return `${response.status} ${response.statusText}`;
}

// ------------------------------------------------------------------ collections and the key

async function loadCollections() {
  let response;
  try {
    // The collections this key may read; "default" marks the one the server answers from when
    // a request names none (the server's default, or the key's own).
    response = await fetch("/v1/collections", { headers: requestHeaders() });
  } catch (e) {
    setStatus(`cannot reach the server: ${e.message}`, true);
    return;
  }
  if (response.status === 401) {
    $("key-box").hidden = false;
    setStatus(apiKey ? "that key was not accepted" : "this server needs a key", true);
    return;
  }
  if (!response.ok) {
    setStatus(await errorMessage(response), true);
    return;
  }
  const collections = await response.json();
  const select = $("collection");
  const previous = select.value;
  select.replaceChildren(...collections.data.map((c) => el("option", "", c.id)));
  const preferred = collections.data.find((c) => c.id === previous) || collections.data.find((c) => c.default);
  if (preferred) select.value = preferred.id;
  $("key-box").hidden = true;
  $("upload-box").hidden = !collections.data.length;
  setStatus(collections.data.length ? "" : "the store has no collections yet (rag ingest adds one)");
  showCollection();
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  apiKey = $("key").value.trim();
  $("key").value = ""; // the variable keeps it; the field does not
  loadCollections();
});

// ------------------------------------------------------------------ uploads and documents

const JOB_POLL_MS = 500;
const JOB_WAIT_MS = 30 * 60 * 1000; // a bound: a job still running after this is left to the server

function showCollection() {
  $("upload-target").textContent = $("collection").value;
  loadDocuments();
}

async function loadDocuments() {
  const collection = $("collection").value;
  if (!collection) return;
  const response = await fetch(`/v1/documents?collection=${encodeURIComponent(collection)}`,
                               { headers: requestHeaders(false) });
  if (!response.ok) return; // the chat still works; the status line shows errors of actions
  const docs = await response.json();
  if (collection !== $("collection").value) return; // the picker moved on meanwhile
  $("document-count").textContent = String(docs.data.length);
  const byName = [...docs.data].sort((a, b) => fileName(a.source).localeCompare(fileName(b.source)));
  $("documents").replaceChildren(...byName.map((d) => {
    const item = el("li", "document");
    item.append(el("span", "file", fileName(d.source)), el("span", "chunks", ` ${d.chunks} chunk(s)`));
    return item;
  }));
}

function outcomeLine(outcome) {
  const item = el("li", `outcome ${outcome.status}`);
  item.append(el("span", "file", fileName(outcome.source)), document.createTextNode(": "));
  let text = outcome.status;
  if (outcome.chunks) text += `, ${outcome.chunks} chunk(s)`;
  if (outcome.reason) text += ` (${outcome.reason})`;
  if (outcome.warnings && outcome.warnings.length) text += `; ${outcome.warnings.join("; ")}`;
  item.append(el("span", "status", text));
  return item;
}

async function upload(files) {
  const collection = $("collection").value;
  const form = new FormData();
  form.append("collection", collection);
  for (const file of files) form.append("file", file, file.name);
  $("upload").disabled = true;
  const results = $("upload-results");
  results.replaceChildren(el("li", "outcome queued", `uploading ${files.length} file(s) to ${collection} ...`));
  try {
    const response = await fetch("/v1/documents", { method: "POST", headers: requestHeaders(false), body: form });
    if (!response.ok) {
      results.replaceChildren(el("li", "outcome failed error", await errorMessage(response)));
      return;
    }
    const job = await response.json();
    const deadline = Date.now() + JOB_WAIT_MS;
    let state = job;
    while (state.status === "queued" || state.status === "running") {
      results.replaceChildren(el("li", "outcome queued", `${state.status}: ${job.files.map((f) => fileName(f.source)).join(", ")}`));
      if (Date.now() > deadline) return;
      await new Promise((resolve) => setTimeout(resolve, JOB_POLL_MS));
      const polled = await fetch(`/v1/jobs/${encodeURIComponent(job.job_id)}`, { headers: requestHeaders(false) });
      if (!polled.ok) {
        results.replaceChildren(el("li", "outcome failed error", await errorMessage(polled)));
        return;
      }
      state = await polled.json();
    }
    if (state.status === "failed") {
      results.replaceChildren(el("li", "outcome failed error", `the job failed: ${state.error}`));
      return;
    }
    results.replaceChildren(...state.outcomes.map(outcomeLine));
    await loadDocuments();
  } catch (e) {
    results.replaceChildren(el("li", "outcome failed error", e.message));
  } finally {
    $("upload").disabled = false;
  }
}

$("upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const files = [...$("upload-files").files];
  if (!files.length) return;
  $("upload-files").value = "";
  upload(files);
});

// ------------------------------------------------------------------ one turn of the chat

// The answer's text. Once the last chunk has come, each citation marker the server found in
// it (`turn.spans`: offsets in code points into exactly the streamed text) that names a source
// becomes one button, its text as written ("[1, 2]", "[1-3]"), showing the sources it names;
// a marker naming no source stays text, and so does every marker while the text streams.
function renderAnswer(turn) {
  if (!turn.spans) {
    turn.answer.replaceChildren(document.createTextNode(turn.text));
    return;
  }
  const chars = Array.from(turn.text); // code points, as the spans count them
  const parts = [];
  let last = 0;
  for (const span of turn.spans) {
    const sources = [...new Set(span.passages)].map((n) => turn.sources.get(n)).filter(Boolean);
    if (!sources.length || span.start < last || span.end > chars.length) continue;
    parts.push(document.createTextNode(chars.slice(last, span.start).join("")));
    const marker = el("button", "cite", chars.slice(span.start, span.end).join(""));
    marker.type = "button";
    marker.dataset.n = sources.map((s) => s.n).join(" ");
    marker.title = sources.map((s) => fileName(s.source)).join(", ");
    marker.addEventListener("click", () => showSources(turn, sources));
    parts.push(marker);
    last = span.end;
  }
  parts.push(document.createTextNode(chars.slice(last).join("")));
  turn.answer.replaceChildren(...parts);
}

function fileName(path) {
  return path.split(/[\\/]/).pop() || path;
}

function showSources(turn, sources) {
  turn.card.replaceChildren(...sources.map(sourceCard));
}

function sourceCard(source) {
  const card = el("article", "source-card");
  card.dataset.n = String(source.n);
  const head = el("header");
  head.append(el("strong", "", `[${source.n}] `), el("span", "file", fileName(source.source)));
  head.title = source.source;
  if (source.pages) head.append(el("span", "pages", ` pages ${source.pages}`));
  head.append(el("span", "score", ` score ${Number(source.score).toFixed(3)}`));
  const close = el("button", "close", "×");
  close.type = "button";
  close.setAttribute("aria-label", "close");
  close.addEventListener("click", () => card.remove());
  head.append(close);
  card.append(head, el("p", "passage", source.text));
  return card;
}

function showChecks(turn, chunk) {
  const meta = [`answered by ${chunk.backend}`];
  if (chunk.backend_origin) meta.push(chunk.backend_origin);
  if (chunk.finish_reason === "length") meta.push("cut at the token limit");
  turn.meta.textContent = meta.join(" · ");
  const unsupported = ((chunk.grounding && chunk.grounding.sentences) || []).filter((s) => !s.supported);
  if (unsupported.length) {
    const box = el("div", "unsupported");
    box.append(el("p", "", "Not supported by the cited passages:"));
    const list = el("ul");
    for (const s of unsupported) {
      const missing = s.missing && s.missing.length ? ` (no passage has: ${s.missing.join(", ")})` : "";
      list.append(el("li", "", `${s.text}${missing}`));
    }
    box.append(list);
    turn.checks.replaceChildren(box);
  }
  const invalid = (chunk.citations && chunk.citations.invalid) || [];
  if (invalid.length) {
    turn.checks.append(el("p", "invalid", `cites passages that were not given: ${invalid.map((n) => `[${n}]`).join(" ")}`));
  }
}

function showError(turn, message) {
  turn.node.append(el("p", "error", `Error: ${message}`));
  followAnswer();
}

// Keep the newest text in view (above the question box) as it streams in.
function followAnswer() {
  window.scrollTo(0, document.body.scrollHeight);
}

function newTurn(question) {
  const node = el("section", "turn");
  const turn = {
    node, text: "", sources: new Map(), spans: null,
    answer: el("div", "answer"), card: el("div", "card"), checks: el("div", "checks"), meta: el("p", "meta"),
  };
  node.append(el("p", "question", question), turn.answer, turn.card, turn.checks, turn.meta);
  $("turns").append(node);
  return turn;
}

// Each `data:` event of the SSE body, JSON-decoded (null for [DONE]), as it arrives.
async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") { yield null; return; }
      yield JSON.parse(data);
    }
  }
}

function handleChunk(turn, chunk) {
  if (chunk.error) {
    showError(turn, chunk.error.message || "the answer failed");
    return false;
  }
  if (Array.isArray(chunk.sources)) {
    for (const s of chunk.sources) turn.sources.set(s.n, s);
  }
  const choice = (chunk.choices || [])[0];
  if (choice && choice.delta && choice.delta.content) {
    turn.text += choice.delta.content;
    renderAnswer(turn);
  }
  if (choice && choice.finish_reason) {
    turn.spans = (chunk.citations && chunk.citations.spans) || null;
    renderAnswer(turn);
    showChecks(turn, { ...chunk, finish_reason: choice.finish_reason });
  }
  followAnswer();
  return true;
}

async function ask(question) {
  const collection = $("collection").value;
  const turn = newTurn(question);
  const messages = [...history, { role: "user", content: question }];
  running = new AbortController();
  setBusy(true);
  let ok = false;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: requestHeaders(), signal: running.signal,
      body: JSON.stringify({ model: collection, messages, stream: true, rag: collection ? { collection } : {} }),
    });
    if (!response.ok) {
      showError(turn, await errorMessage(response));
      if (response.status === 401) $("key-box").hidden = false;
      return;
    }
    for await (const chunk of sseEvents(response.body)) {
      if (chunk === null) { ok = true; break; }
      if (!handleChunk(turn, chunk)) break;
    }
    if (!ok && !turn.node.querySelector(".error")) showError(turn, "the stream ended before the answer was complete");
  } catch (e) {
    showError(turn, e.name === "AbortError" ? "stopped" : e.message);
  } finally {
    running = null;
    setBusy(false);
    if (ok) history = [...messages, { role: "assistant", content: turn.text }];
  }
}

function setBusy(busy) {
  $("ask").disabled = busy;
  $("stop").hidden = !busy;
}

$("ask-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question || running) return;
  $("question").value = "";
  ask(question);
});

$("question").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("ask-form").requestSubmit();
  }
});

$("stop").addEventListener("click", () => running && running.abort());

function newChat() {
  if (running) running.abort();
  history = [];
  $("turns").replaceChildren();
}

$("clear").addEventListener("click", newChat);
$("collection").addEventListener("change", () => { // a follow-up only makes sense in one collection
  newChat();
  $("upload-results").replaceChildren();
  showCollection();
});

loadCollections();
