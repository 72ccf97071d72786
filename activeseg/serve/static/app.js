// The activeseg annotator page: the queue, a viewer with overlays, a brush-and-eraser mask editor and
// training. Plain JavaScript, no build step. Every API call carries the annotator's token, taken from
// the URL (#token=...) or the sign-in form and kept in this browser's localStorage.
"use strict";

const UNLABELLED = 255;            // the project's "not labelled" value (the loss skips it)
const UNLABELLED_RGB = [255, 255, 255];
const UNDO_DEPTH = 30;
const S = {
  token: null, project: null, colours: [], queue: [], modelId: null, current: null, fromModel: null,
  mask: null, rgba: null, w: 0, h: 0, tool: "brush", cls: 1, painting: false, last: null, undo: [],
  urls: [], thumbs: new Map(), job: null, openSeq: 0,
};
const $ = (id) => document.getElementById(id);

// -- the API ----------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, opts = {}) {
  const headers = Object.assign({ Authorization: `Bearer ${S.token}` }, opts.headers || {});
  const res = await fetch(path, Object.assign({}, opts, { headers }));
  if (res.status === 401) {
    signOut("That token was refused: enter yours (project.toml, [annotators]).");
    throw new ApiError(401, "not signed in");
  }
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail; } catch (e) { /* not JSON */ }
    throw new ApiError(res.status, typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return res;
}
const getJson = async (path, opts) => (await api(path, opts)).json();

async function blobUrl(path, keep) {
  const url = URL.createObjectURL(await (await api(path)).blob());
  (keep || S.urls).push(url);
  return url;
}

function loadImage(img, src) {
  return new Promise((resolve, reject) => { img.onload = resolve; img.onerror = reject; img.src = src; });
}

function message(id, text, isError) {
  const el = $(id);
  el.textContent = text;
  el.classList.toggle("error", Boolean(isError));
}

// -- signing in ---------------------------------------------------------------------------------------
function signOut(text) {
  localStorage.removeItem("activeseg-token");
  S.token = null;
  $("app").hidden = true;
  $("login").hidden = false;
  $("who").textContent = "";
  message("login-msg", text || "", Boolean(text));
}

async function signIn(token) {
  S.token = token;
  try { S.project = await getJson("/api/project"); } catch (e) {
    if (e.status !== 401) message("login-msg", e.message, true);
    return;
  }
  localStorage.setItem("activeseg-token", token);
  $("login").hidden = true;
  $("app").hidden = false;
  $("who").textContent = S.project.annotator;
  S.colours = S.project.class_colours.map((hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)));
  const strategy = $("strategy");
  strategy.replaceChildren(...S.project.strategies.map((n) => new Option(n, n, false, n === S.project.strategy)));
  buildClassPicker();
  await Promise.all([refreshCounts(), refreshCurve(), refreshTraining()]);
}

function buildClassPicker() {
  const box = $("classes");
  box.querySelectorAll("label").forEach((l) => l.remove());
  const choices = S.project.class_names.map((name, c) => [c, name]).concat([[UNLABELLED, "not labelled (ignored)"]]);
  for (const [c, name] of choices) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    Object.assign(input, { type: "radio", name: "class", value: String(c), checked: c === S.cls });
    input.addEventListener("change", () => { S.cls = c; setTool("brush"); });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    const rgb = colourOf(c);
    swatch.style.background = c === 0 ? "transparent" : `rgb(${rgb.join(",")})`;
    label.append(input, swatch, document.createTextNode(` ${c === UNLABELLED ? "" : c + ": "}${name}`));
    box.append(label);
  }
}

function colourOf(c) { return c === UNLABELLED ? UNLABELLED_RGB : (S.colours[c] || [0, 0, 0]); }

// -- counts, queue ------------------------------------------------------------------------------------
async function refreshCounts() {
  const { images } = await getJson("/api/images");
  const n = { labeled: 0, leased: 0, unlabeled: 0 };
  for (const img of images) n[img.status] += 1;
  $("counts").textContent = `${n.labeled} labelled · ${n.leased} leased · ${n.unlabeled} unlabelled`;
}

async function getNext() {
  const n = Math.max(1, Math.min(100, Number($("batch").value) || 5));
  message("queue-msg", "asking the server…");
  $("next").disabled = true;
  try {
    const out = await getJson(`/api/next?n=${n}&strategy=${encodeURIComponent($("strategy").value)}`);
    S.modelId = out.model_id;
    S.queue = out.items;  // my own leases come back first, renewed; then the best free images
    const by = out.model_id ? `ranked by ${out.strategy} on model ${out.model_id}` : out.strategy;
    message("queue-msg", out.message || `${out.items.length} image(s) leased to you, ${by}`);
    renderQueue();
    refreshCounts();
  } catch (e) { message("queue-msg", e.message, true); }
  $("next").disabled = false;
}

function renderQueue() {
  const items = S.queue.map((item) => {
    const li = document.createElement("li");
    li.dataset.id = item.id;
    if (S.current && S.current.id === item.id) li.classList.add("open");
    const box = document.createElement("div");
    box.className = "thumb";
    const text = document.createElement("div");
    const name = document.createElement("div");
    name.className = "qname";
    name.textContent = item.name;
    const score = document.createElement("div");
    score.className = "qscore";
    const until = new Date(item.lease_expires * 1000).toLocaleTimeString();
    score.textContent = (item.score === null ? "" : `score ${Number(item.score).toPrecision(3)} · `) + `yours until ${until}`;
    text.append(name, score);
    li.append(box, text);
    li.addEventListener("click", () => openItem(item));
    fillThumb(box, item.id);
    return li;
  });
  $("queue").replaceChildren(...items);
}

async function fillThumb(box, id) {
  // cached per image and model: the image, and the model's uncertainty over it
  const key = `${id}:${S.modelId}`;
  if (!S.thumbs.has(key)) {
    S.thumbs.set(key, (async () => {
      const urls = [await blobUrl(`/api/images/${id}`, [])];
      if (S.modelId) {
        try { urls.push(await blobUrl(`/api/images/${id}/uncertainty`, [])); } catch (e) { /* none */ }
      }
      return urls;
    })());
  }
  try {
    const urls = await S.thumbs.get(key);
    box.replaceChildren(...urls.map((u, i) => {
      const img = new Image();
      img.src = u;
      img.alt = i ? "uncertainty" : "image";
      if (i) img.style.opacity = 0.7;
      return img;
    }));
  } catch (e) { S.thumbs.delete(key); }
}

// -- viewer -------------------------------------------------------------------------------------------
async function openItem(item) {
  const seq = ++S.openSeq;  // a later click wins over a slower earlier one
  $("submit").disabled = true;
  for (const u of S.urls.splice(0)) URL.revokeObjectURL(u);
  S.current = item;
  S.fromModel = null;
  $("item-name").textContent = item.name;
  $("item-info").textContent = "loading…";
  document.querySelectorAll("#queue li").forEach((li) => li.classList.toggle("open", Number(li.dataset.id) === item.id));
  const image = $("layer-image");
  await loadImage(image, await blobUrl(`/api/images/${item.id}`));
  if (seq !== S.openSeq) return;
  S.w = image.naturalWidth;
  S.h = image.naturalHeight;
  fitStack();
  const canvas = $("mask-canvas");
  canvas.width = S.w;
  canvas.height = S.h;
  S.mask = new Uint8Array(S.w * S.h);
  S.undo = [];
  const hasModel = await loadOverlays(item.id);
  if (seq !== S.openSeq) return;
  let from = "an empty mask (no model yet)";
  if (hasModel && await loadClassMap(`/api/images/${item.id}/prediction?format=labels`)) {
    S.fromModel = S.modelId;
    from = `model ${S.modelId}'s prediction`;
  }
  if (seq !== S.openSeq) return;
  S.rgba = null;
  drawMask();
  applyToggles();
  $("item-info").textContent = `${S.w}×${S.h}, starting from ${from}`;
  $("submit").disabled = false;
}

function fitStack() {
  const panel = $("viewer-panel");
  const maxW = panel.clientWidth - 24, maxH = Math.max(300, window.innerHeight - 190);
  const scale = Math.min(maxW / S.w, maxH / S.h);
  $("stack").style.width = `${Math.floor(S.w * scale)}px`;
  $("stack").style.height = `${Math.floor(S.h * scale)}px`;
}

async function loadOverlays(id) {
  let ok = false;
  for (const kind of ["prediction", "uncertainty"]) {
    const layer = $(`layer-${kind}`);
    try {
      await loadImage(layer, await blobUrl(`/api/images/${id}/${kind}`));
      layer.dataset.ok = "1";
      ok = true;
    } catch (e) { layer.removeAttribute("src"); layer.dataset.ok = ""; }
  }
  return ok;
}

async function loadClassMap(path) {
  // a one-channel PNG of class labels into S.mask (gray value = class)
  try {
    const bitmap = await createImageBitmap(await (await api(path)).blob(),
      { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    const off = document.createElement("canvas");
    off.width = S.w;
    off.height = S.h;
    const ctx = off.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(bitmap, 0, 0);
    const px = ctx.getImageData(0, 0, S.w, S.h).data;
    for (let i = 0; i < S.mask.length; i++) S.mask[i] = px[4 * i];
    return true;
  } catch (e) { return false; }
}

function applyToggles() {
  const opacity = $("opacity").value / 100;
  $("layer-image").hidden = !$("show-image").checked || !S.current;
  for (const kind of ["prediction", "uncertainty"]) {
    const layer = $(`layer-${kind}`);
    layer.hidden = !($(`show-${kind}`).checked && layer.dataset.ok === "1");
    layer.style.opacity = opacity;
  }
  $("mask-canvas").style.opacity = $("show-mask").checked ? opacity : 0;
}

// -- the mask editor ----------------------------------------------------------------------------------
function drawMask(x0 = 0, y0 = 0, x1 = S.w - 1, y1 = S.h - 1) {
  // the class map in the class colours (background clear), redrawn in the given rectangle only
  const ctx = $("mask-canvas").getContext("2d");
  if (!S.rgba) S.rgba = ctx.createImageData(S.w, S.h);
  const d = S.rgba.data;
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      const i = y * S.w + x, c = S.mask[i];
      const rgb = colourOf(c);
      d[4 * i] = rgb[0]; d[4 * i + 1] = rgb[1]; d[4 * i + 2] = rgb[2];
      d[4 * i + 3] = c === 0 ? 0 : c === UNLABELLED ? 140 : 255;
    }
  }
  ctx.putImageData(S.rgba, 0, 0, x0, y0, x1 - x0 + 1, y1 - y0 + 1);
}

function toImage(ev) {
  const rect = $("mask-canvas").getBoundingClientRect();
  return [((ev.clientX - rect.left) / rect.width) * S.w, ((ev.clientY - rect.top) / rect.height) * S.h];
}

function stamp(x, y, r, value, box) {
  const ys = Math.max(0, Math.floor(y - r)), ye = Math.min(S.h - 1, Math.ceil(y + r));
  const xs = Math.max(0, Math.floor(x - r)), xe = Math.min(S.w - 1, Math.ceil(x + r));
  for (let j = ys; j <= ye; j++) {
    for (let i = xs; i <= xe; i++) {
      if ((i + 0.5 - x) ** 2 + (j + 0.5 - y) ** 2 <= r * r) S.mask[j * S.w + i] = value;
    }
  }
  box[0] = Math.min(box[0], xs); box[1] = Math.min(box[1], ys);
  box[2] = Math.max(box[2], xe); box[3] = Math.max(box[3], ye);
}

function paintTo(ev) {
  // the brush (or eraser) along the segment from the last point: fast strokes leave no gaps
  const [x, y] = toImage(ev);
  const [lx, ly] = S.last || [x, y];
  const r = Number($("brush-size").value) / 2 + 0.5;
  const value = S.tool === "eraser" ? 0 : S.cls;
  const steps = Math.max(1, Math.ceil(Math.hypot(x - lx, y - ly) / Math.max(0.5, r / 2)));
  const box = [S.w, S.h, -1, -1];
  for (let s = 0; s <= steps; s++) stamp(lx + ((x - lx) * s) / steps, ly + ((y - ly) * s) / steps, r, value, box);
  S.last = [x, y];
  if (box[2] >= box[0] && box[3] >= box[1]) drawMask(box[0], box[1], box[2], box[3]);
}

function pushUndo() {
  S.undo.push(S.mask.slice());
  if (S.undo.length > UNDO_DEPTH) S.undo.shift();
}

function undo() {
  if (!S.undo.length) return;
  S.mask = S.undo.pop();
  drawMask();
}

function setTool(tool) {
  S.tool = tool;
  $("tool-brush").classList.toggle("active", tool === "brush");
  $("tool-eraser").classList.toggle("active", tool === "eraser");
}

async function submit() {
  if (!S.current || !S.mask) return;
  const item = S.current;
  const off = document.createElement("canvas");
  off.width = S.w;
  off.height = S.h;
  const ctx = off.getContext("2d");
  const out = ctx.createImageData(S.w, S.h);
  for (let i = 0; i < S.mask.length; i++) {
    const v = S.mask[i];
    out.data[4 * i] = v; out.data[4 * i + 1] = v; out.data[4 * i + 2] = v; out.data[4 * i + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
  const blob = await new Promise((resolve) => off.toBlob(resolve, "image/png"));
  const query = S.fromModel ? `?model_id=${S.fromModel}` : "";
  $("submit").disabled = true;
  try {
    const stored = await getJson(`/api/labels/${item.id}${query}`,
      { method: "PUT", body: blob, headers: { "Content-Type": "image/png" } });
    message("submit-msg", `stored version ${stored.version} of ${item.name}`);
    S.queue = S.queue.filter((q) => q.id !== item.id);
    renderQueue();
    refreshCounts();
    const next = S.queue[0];
    if (next) openItem(next);  // on to the next image of my queue
  } catch (e) {
    message("submit-msg", e.message, true);
    $("submit").disabled = false;
  }
}

// -- training and the learning curve ------------------------------------------------------------------
async function train() {
  $("train").disabled = true;
  try { showJob(await getJson("/api/train", { method: "POST" })); } catch (e) { message("train-state", e.message, true); }
  pollTraining();
}

function showJob(job) {
  const running = job.state === "running";
  message("train-state", `${job.state}${job.id ? ` (job ${job.id})` : ""}: ${job.message}`, job.state === "failed");
  $("train-progress").hidden = !running;
  $("train-progress").value = job.progress || 0;
  $("train").disabled = running;
}

async function refreshTraining() {
  const job = await getJson("/api/train");
  const was = S.job;
  S.job = job;
  showJob(job);
  if (job.state === "running" && !(was && was.state === "running")) setTimeout(pollTraining, 1500);
  return job;
}

async function pollTraining() {
  let job;
  try { job = await getJson("/api/train"); } catch (e) { return; }
  S.job = job;
  showJob(job);
  if (job.state === "running") { setTimeout(pollTraining, 1500); return; }
  await refreshCurve();
  if (job.state === "done" && S.queue.length) getNext();  // the queue re-scored by the new model
}

async function refreshCurve() {
  const { rounds } = await getJson("/api/metrics");
  const fmt = (v) => (v === null || v === undefined ? "–" : v.toFixed(3));
  $("rounds").querySelector("tbody").replaceChildren(...rounds.map((r) => {
    const tr = document.createElement("tr");
    for (const v of [r.round, r.labeled, fmt(r.val_dice), fmt(r.val_miou)]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    return tr;
  }));
  drawCurve(rounds.filter((r) => r.val_dice !== null));
}

function drawCurve(points) {
  const W = 260, H = 150, L = 34, R = 10, T = 12, B = 28;
  const maxX = Math.max(1, ...points.map((r) => r.labeled));
  const sx = (v) => L + ((W - L - R) * v) / maxX, sy = (v) => H - B - (H - T - B) * v;
  let svg = `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#999"/>`
    + `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#999"/>`
    + `<text x="${(L + W - R) / 2}" y="${H - 6}" text-anchor="middle">labelled images</text>`
    + `<text x="${L + 4}" y="${T + 8}">validation Dice</text>`;
  for (const t of [0, 0.5, 1]) svg += `<text x="${L - 4}" y="${sy(t) + 3}" text-anchor="end">${t}</text>`;
  svg += `<text x="${W - R}" y="${H - B + 12}" text-anchor="end">${maxX}</text>`;
  if (points.length) {
    svg += `<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="${points.map((r) => `${sx(r.labeled)},${sy(r.val_dice)}`).join(" ")}"/>`;
    for (const r of points) svg += `<circle cx="${sx(r.labeled)}" cy="${sy(r.val_dice)}" r="3" fill="#1f77b4"><title>round ${r.round}: ${r.labeled} labelled, Dice ${r.val_dice.toFixed(3)}</title></circle>`;
  } else {
    svg += `<text x="${(L + W) / 2}" y="${H / 2}" text-anchor="middle">no validated model yet</text>`;
  }
  $("curve").innerHTML = svg;
}

// -- wiring -------------------------------------------------------------------------------------------
window.addEventListener("DOMContentLoaded", () => {
  const canvas = $("mask-canvas");
  canvas.addEventListener("pointerdown", (ev) => {
    if (!S.mask || !S.current) return;
    pushUndo();
    S.painting = true;
    S.last = null;
    canvas.setPointerCapture(ev.pointerId);
    paintTo(ev);
  });
  canvas.addEventListener("pointermove", (ev) => { if (S.painting) paintTo(ev); });
  const end = () => { S.painting = false; S.last = null; };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  for (const id of ["show-image", "show-prediction", "show-uncertainty", "show-mask", "opacity"]) {
    $(id).addEventListener("input", applyToggles);
  }
  $("brush-size").addEventListener("input", () => { $("brush-size-value").textContent = $("brush-size").value; });
  $("tool-brush").addEventListener("click", () => setTool("brush"));
  $("tool-eraser").addEventListener("click", () => setTool("eraser"));
  $("undo").addEventListener("click", undo);
  $("next").addEventListener("click", getNext);
  $("submit").addEventListener("click", submit);
  $("train").addEventListener("click", train);
  $("reset-prediction").addEventListener("click", async () => {
    if (!S.current || !S.modelId) return;
    pushUndo();
    if (await loadClassMap(`/api/images/${S.current.id}/prediction?format=labels`)) S.fromModel = S.modelId;
    drawMask();
  });
  $("clear").addEventListener("click", () => { if (S.mask) { pushUndo(); S.mask.fill(0); drawMask(); } });
  $("logout").addEventListener("click", () => signOut("Signed out."));
  $("login-form").addEventListener("submit", (ev) => { ev.preventDefault(); signIn($("token-input").value.trim()); });
  window.addEventListener("resize", () => { if (S.current) fitStack(); });
  document.addEventListener("keydown", (ev) => {
    if (ev.target.tagName === "INPUT" && ev.target.type !== "radio" && ev.target.type !== "checkbox") return;
    if ((ev.ctrlKey || ev.metaKey) && ev.key === "z") { ev.preventDefault(); undo(); }
    else if ((ev.ctrlKey || ev.metaKey) && ev.key === "Enter") { ev.preventDefault(); if (!$("submit").disabled) submit(); }
    else if (ev.key === "b") setTool("brush");
    else if (ev.key === "e") setTool("eraser");
    else if (/^[0-9]$/.test(ev.key) && S.project && Number(ev.key) < S.project.classes) {
      S.cls = Number(ev.key);
      document.querySelectorAll("#classes input").forEach((i) => { i.checked = Number(i.value) === S.cls; });
      setTool("brush");
    }
  });
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) history.replaceState(null, "", location.pathname);  // the token leaves the address bar
  const token = fromHash || localStorage.getItem("activeseg-token");
  if (token) signIn(token); else signOut();
});
