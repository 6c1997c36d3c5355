// textgym rating page. Model text is only ever put in the page with textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "textgym.token";
const MODE_OF_KIND = { score: "score", tokens: "tokens", preference: "pair" };

// The access token comes in the URL's fragment (/#token=...), which the browser never sends to the server.
// Keep it for this tab only and take it out of the address bar and the history at once.
function readToken() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.has("token")) {
    sessionStorage.setItem(TOKEN_KEY, hash.get("token"));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}
const token = readToken();
const state = { mode: localStorage.getItem("textgym.mode") || "score", current: null, pair: null,
                tokenScores: [], skipped: [], scale: [1, 5], busy: false };

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function rater() { return $("rater").value.trim(); }

function uuid() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return Date.now().toString(36) + Math.random().toString(36).slice(2);
}

function showStats(stats) {
  if (!stats) return;
  state.scale = stats.scale;
  $("progress").textContent = `${stats.ratings} rated · ${stats.pending} pending · ${stats.samples} samples`;
}

function renderScores() {
  const box = $("scores");
  box.replaceChildren();
  if (state.mode !== "score") return;
  const [lo, hi] = state.scale;
  if (Number.isInteger(lo) && Number.isInteger(hi) && hi - lo <= 10) {
    for (let v = lo; v <= hi; v++) {
      const b = document.createElement("button");
      b.className = "score-btn";
      b.dataset.score = String(v);
      b.textContent = String(v);
      b.title = v <= 9 && v >= 0 ? `key: ${v}` : "";
      b.addEventListener("click", () => submit({ score: v }));
      box.appendChild(b);
    }
  } else {
    const inp = document.createElement("input");
    inp.type = "number"; inp.min = lo; inp.max = hi; inp.step = "any"; inp.id = "score-input";
    const b = document.createElement("button");
    b.textContent = "rate";
    b.addEventListener("click", () => submit({ score: Number(inp.value) }));
    box.append(inp, b);
  }
}

function renderTokens(sample) {
  const box = $("tokens");
  box.replaceChildren();
  state.tokenScores = sample.tokens.map(() => 0);
  sample.tokens.forEach((t, i) => {
    const span = document.createElement("span");
    span.className = "tok";
    span.dataset.index = String(i);
    span.textContent = t;  // text, never HTML
    span.addEventListener("click", () => {
      const next = { 0: 1, 1: -1, "-1": 0 }[state.tokenScores[i]];
      state.tokenScores[i] = next;
      span.classList.toggle("good", next === 1);
      span.classList.toggle("bad", next === -1);
    });
    box.appendChild(span);
  });
}

function render(data) {
  showStats(data.stats);
  const mode = state.mode;
  document.querySelectorAll(".mode").forEach((b) => b.classList.toggle("active", b.dataset.mode === mode));
  $("single").hidden = mode === "pair";
  $("pair").hidden = mode !== "pair";
  $("completion").hidden = mode === "tokens";
  $("tokens").hidden = mode !== "tokens";
  $("submit-tokens").hidden = mode !== "tokens";
  state.current = data.sample || null;
  state.pair = data.pair || null;
  const item = mode === "pair" ? state.pair : state.current;
  if (!item) {
    $("prompt").textContent = "";
    $("completion").textContent = "";
    $("tokens").replaceChildren();
    $("completion-a").textContent = "";
    $("completion-b").textContent = "";
    $("scores").replaceChildren();
    setStatus(mode === "pair" ? "No pairs left to compare." : "Nothing left to rate. Thank you!");
    return;
  }
  renderScores();
  if (mode === "pair") {
    $("prompt").textContent = state.pair[0].prompt;
    $("completion-a").textContent = state.pair[0].completion;
    $("completion-b").textContent = state.pair[1].completion;
  } else {
    $("prompt").textContent = state.current.prompt;
    $("completion").textContent = state.current.completion;
    if (mode === "tokens") renderTokens(state.current);
  }
}

async function api(path, options) {
  const res = await fetch(path, options);
  let body = null;
  try { body = await res.json(); } catch (e) { body = { error: `HTTP ${res.status}` }; }
  if (!res.ok) throw new Error(body.error || `HTTP ${res.status}`);
  return body;
}

async function load() {
  const q = new URLSearchParams({ mode: state.mode });
  if (rater()) q.set("rater", rater());
  if (state.skipped.length) q.set("skip", state.skipped.slice(-1000).join(","));  // the server reads 1000
  try {
    render(await api("/api/samples/next?" + q, { headers: headers() }));
    document.body.dataset.ready = "1";
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function submit(fields) {
  if (state.busy) return;
  if (!rater()) { setStatus("Type your name in the rater box first.", true); $("rater").focus(); return; }
  const item = state.mode === "pair" ? state.pair : state.current;
  if (!item) return;
  const body = Object.assign({ rater: rater(), uid: uuid() }, fields);
  if (state.mode === "pair") { body.sample_id = state.pair[0].id; body.other_id = state.pair[1].id; }
  else body.sample_id = state.current.id;
  state.busy = true;
  document.body.dataset.ready = "0";
  try {
    const out = await api("/api/ratings", { method: "POST", headers: headers({ "Content-Type": "application/json" }),
                                            body: JSON.stringify(body) });
    setStatus(`saved rating of sample ${out.rating.sample_id}`);
  } catch (e) {
    setStatus(e.message, true);
  } finally {
    state.busy = false;
  }
  await load();
}

async function undo() {
  if (state.busy) return;
  if (!rater()) { setStatus("Type your name in the rater box first.", true); $("rater").focus(); return; }
  state.busy = true;
  document.body.dataset.ready = "0";
  try {
    const out = await api("/api/ratings/undo", { method: "POST", headers: headers({ "Content-Type": "application/json" }),
                                                 body: JSON.stringify({ rater: rater() }) });
    if (!out.rating) {
      setStatus("nothing to undo");
      showStats(out.stats);
    } else {  // the rating stays in the store, marked retracted; show its sample again to rate anew
      const ids = out.pair ? out.pair.map((s) => s.id) : [out.sample.id];
      state.skipped = state.skipped.filter((id) => !ids.includes(id));
      state.mode = MODE_OF_KIND[out.rating.kind];
      localStorage.setItem("textgym.mode", state.mode);
      render({ stats: out.stats, sample: out.sample, pair: out.pair });
      setStatus(`undid your rating of sample ${out.rating.sample_id}`);
    }
  } catch (e) {
    setStatus(e.message, true);
  } finally {
    state.busy = false;
    document.body.dataset.ready = "1";
  }
}

function skip() {
  const item = state.mode === "pair" ? state.pair : state.current;
  if (!item) return;
  if (state.mode === "pair") state.skipped.push(item[0].id, item[1].id);
  else state.skipped.push(item.id);
  setStatus("skipped");
  load();
}

function setMode(mode) {
  state.mode = mode;
  setStatus("");
  localStorage.setItem("textgym.mode", mode);
  load();
}

document.addEventListener("DOMContentLoaded", () => {
  $("rater").value = localStorage.getItem("textgym.rater") || "";
  $("rater").addEventListener("change", () => {
    localStorage.setItem("textgym.rater", rater());
    state.skipped = [];
    setStatus("");
    load();
  });
  document.querySelectorAll(".mode").forEach((b) => b.addEventListener("click", () => setMode(b.dataset.mode)));
  $("skip").addEventListener("click", skip);
  $("undo").addEventListener("click", undo);
  $("submit-tokens").addEventListener("click", () => submit({ token_scores: state.tokenScores.slice() }));
  $("prefer-a").addEventListener("click", () => state.pair && submit({ preferred: state.pair[0].id }));
  $("prefer-b").addEventListener("click", () => state.pair && submit({ preferred: state.pair[1].id }));
  document.addEventListener("keydown", (ev) => {
    if (ev.target && ev.target.tagName === "INPUT") {
      if (ev.key === "Enter") ev.target.blur();
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const k = ev.key.toLowerCase();
    if (k === "s") skip();
    else if (k === "u") undo();
    else if (state.mode === "score" && /^[0-9]$/.test(k)) {
      const v = Number(k);
      if (v >= state.scale[0] && v <= state.scale[1]) submit({ score: v });
    } else if (state.mode === "tokens" && k === "enter") submit({ token_scores: state.tokenScores.slice() });
    else if (state.mode === "pair" && (k === "a" || k === "arrowleft") && state.pair) submit({ preferred: state.pair[0].id });
    else if (state.mode === "pair" && (k === "b" || k === "arrowright") && state.pair) submit({ preferred: state.pair[1].id });
    else return;
    ev.preventDefault();
  });
  load();
});
