// The playground: wires the page's sections to the service's /v1 API (api.js). No framework, no build.

import * as api from "./api.js";
import { CodebookPalette, TokenEditor, codebookColors, cssColor } from "./tokens.js";
import { MaskPainter, canvasToBlob, centreCrop } from "./mask.js";

const SAMPLES = [
  { file: "astronaut.png", label: "Astronaut" },
  { file: "coffee.png", label: "Coffee" },
  { file: "cat.png", label: "Cat" },
  { file: "rocket.png", label: "Rocket" },
  { file: "heart.png", label: "Heart" },
];
const KIND_LABELS = { vae: "VAE", beta_vae: "β-VAE", vqvae: "VQ-VAE", mae: "MAE" };
const METRIC_LABELS = {
  psnr: ["PSNR", "dB"],
  ssim: ["SSIM", ""],
  elbo_bits_per_dim: ["−ELBO", "bits/dim"],
  codebook_usage: ["codebook use", "%"],
  perplexity: ["perplexity", ""],
  mig: ["MIG", ""],
  masked_psnr: ["masked PSNR", "dB"],
  mean_fill_masked_psnr: ["mean-fill PSNR", "dB"],
  telea_masked_psnr: ["Telea PSNR", "dB"],
  linear_probe_acc: ["linear probe", "%"],
  linear_probe_acc_random_init: ["probe (random init)", "%"],
};

const PREFERRED = { traverse: ["beta_vae", "vae"], interpolate: ["vae", "vqvae", "beta_vae"], sample: ["vae", "beta_vae"] };

const $ = (id) => document.getElementById(id);
const state = {
  models: [],
  image: null, // Blob of the current image
  imageName: "",
  imageUrl: "",
  bitmap: null, // decoded current image, for client-side crops
  imageSeq: 0, // which setImage call is the latest
  second: null, // {blob, url} for interpolation
  frames: [],
  playTimer: null,
  reconstructRun: 0,
};

// ---------- small DOM helpers ----------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function say(id, text, kind = "info") {
  const node = $(id);
  node.textContent = text;
  node.dataset.kind = kind;
}

function fail(id, error) {
  const text = error instanceof api.ApiError && error.status === 401
    ? "The server needs an API key: enter it at the top of the page."
    : `Error: ${error.message || error}`;
  say(id, text, "error");
}

/** Run `task` with `button` disabled and a busy message; errors land in the section's message. */
async function busy(button, msgId, text, task) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  say(msgId, text, "busy");
  try {
    await task();
  } catch (error) {
    fail(msgId, error);
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

/** A number input's value; `fallback` when it is empty; an error naming its label when out of bounds. */
function numberField(id, fallback) {
  const input = $(id);
  if (input.value.trim() === "" && !input.validity.badInput) return fallback;
  if (!input.validity.valid) {
    const label = input.closest("label")?.firstChild?.textContent?.trim() || id;
    throw new Error(`${label}: ${input.validationMessage}`);
  }
  return Number(input.value);
}

const fmt = (x, digits = 2) => (Number.isFinite(x) ? x.toFixed(digits) : x === Infinity ? "∞" : "–");
const withOp = (op) => state.models.filter((m) => m.status === "ready" && (m.operations || []).includes(op));
const describeInput = (m) => (m.input ? `${m.input.width}×${m.input.height} ${m.input.channels === 1 ? "gray" : "RGB"}` : "");

function providerOf(model) {
  const providers = [...new Set(Object.values(model.graphs || {}).map((g) => g.provider))];
  return providers.map((p) => p.replace("ExecutionProvider", "")).join(", ") || "–";
}

// ---------- API key ----------

function showKeyState() {
  const key = api.getKey();
  $("key-state").textContent = key ? "key set for this tab" : "no key";
  $("api-key").value = key;
}

function setupKey() {
  showKeyState();
  api.onUnauthorized(() => {
    $("auth-prompt").hidden = false;
    say("status", api.getKey() ? "The API key was refused. Check it and try again." : "This server needs an API key.", "error");
  });
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    api.setKey($("api-key").value.trim());
    showKeyState();
    $("auth-prompt").hidden = true;
    say("status", "Key saved for this tab. Reloading models…");
    start();
  });
  $("key-forget").addEventListener("click", () => {
    api.setKey("");
    showKeyState();
    say("status", "Key forgotten.");
  });
}

// ---------- models ----------

function modelCard(m) {
  const metrics = Object.entries(m.metrics || {}).filter(([, v]) => typeof v === "number");
  const list = el("dl", { class: "metrics" });
  for (const [key, value] of metrics) {
    const [label, unit] = METRIC_LABELS[key] || [key, ""];
    const shown = unit === "%" && value <= 1 ? fmt(value * 100, 1) : fmt(value, value > 100 ? 0 : 3 - Math.min(2, Math.floor(Math.log10(Math.abs(value) + 1))));
    list.append(el("div", {}, el("dt", { text: label }), el("dd", { text: `${shown}${unit ? ` ${unit}` : ""}` })));
  }
  if (!metrics.length) list.append(el("div", { class: "muted" }, el("dt", { text: "metrics" }), el("dd", { text: "not evaluated yet" })));
  const latent = m.latent?.shape ? `latent ${m.latent.shape.join("×")}` : "";
  const codes = m.latent?.codebook_size ? ` · ${m.latent.codebook_size} codes` : "";
  return el(
    "article",
    { class: `model-card ${m.status === "ready" ? "" : "unavailable"}`, "data-model": m.name },
    el("header", {},
      el("h3", { text: m.name }),
      el("span", { class: `badge kind-${m.kind}`, text: KIND_LABELS[m.kind] || m.kind || "?" })),
    el("p", { class: "facts" }, `${describeInput(m)}${latent ? ` · ${latent}` : ""}${codes}`),
    el("p", { class: "facts" }, "Provider: ", el("strong", { class: "provider", text: providerOf(m) })),
    m.status === "ready" ? null : el("p", { class: "reason", text: `Unavailable: ${m.reason || "unknown reason"}` }),
    list,
  );
}

async function loadModels() {
  const answer = await api.listModels();
  state.models = answer.models || [];
  const list = $("model-list");
  list.replaceChildren(...state.models.map(modelCard));
  if (!state.models.length) list.append(el("p", { class: "placeholder-text", text: "The service has no models. Put artifact folders in its model directory." }));
  fillModelSelects();
}

function fillModelSelects() {
  const spec = [
    ["tokens-model", "tokens", "tokens"],
    ["interp-model", "interpolate", "interpolate"],
    ["traverse-model", "traverse", "traverse"],
    ["sample-model", "sample", "sample"],
    ["inpaint-model", "inpaint", "inpaint"],
  ];
  for (const [id, op, section] of spec) {
    const select = $(id);
    const previous = select.value;
    const models = withOp(op);
    // The kind each section shows best first: a β-VAE for traversals, photo models elsewhere.
    const rank = (m) => (PREFERRED[op] || []).indexOf(m.kind) >>> 0;
    models.sort((a, b) => rank(a) - rank(b));
    select.replaceChildren(...models.map((m) => el("option", { value: m.name, text: `${m.name} (${KIND_LABELS[m.kind] || m.kind})` })));
    if (models.some((m) => m.name === previous)) select.value = previous;
    $(section).classList.toggle("no-models", models.length === 0);
    select.disabled = models.length === 0;
    $(section).querySelectorAll(".controls button").forEach((b) => (b.disabled = models.length === 0));
    if (!models.length) say(`${section === "interpolate" ? "interp" : section}-msg`, `No loaded model supports ${op}.`);
  }
}

// ---------- the current image ----------

async function setImage(blob, name) {
  const seq = ++state.imageSeq; // an image chosen while an older one still decodes wins over it
  state.image = blob;
  state.imageName = name;
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.imageUrl = URL.createObjectURL(blob);
  const img = $("current-image");
  img.src = state.imageUrl;
  img.alt = `Current image: ${name}`;
  img.hidden = false;
  $("drop-zone").classList.add("has-image");
  $("interp-a").src = state.imageUrl;
  let bitmap = null;
  try {
    bitmap = await createImageBitmap(blob);
  } catch {
    bitmap = null;
  }
  if (seq !== state.imageSeq) return;
  state.bitmap = bitmap;
  if (bitmap) say("image-info", `${name} — ${bitmap.width}×${bitmap.height} px`);
  else say("image-info", `${name} — the browser cannot decode it; the service may still`, "error");
  document.querySelectorAll(".sample-button").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.name === name)));
  runReconstruct();
  runTokens();
  prepareMask();
}

async function fetchSample(file) {
  const response = await fetch(`/static/samples/${file}`);
  if (!response.ok) throw new Error(`sample ${file}: ${response.status}`);
  return response.blob();
}

function setupImagePicker() {
  const list = $("sample-list");
  for (const s of SAMPLES) {
    const button = el("button", { type: "button", class: "sample-button", "data-name": s.label, "aria-pressed": "false" },
      el("img", { src: `/static/samples/${s.file}`, alt: "", width: 56, height: 56 }),
      el("span", { text: s.label }));
    button.addEventListener("click", async () => setImage(await fetchSample(s.file), s.label));
    list.append(button);
  }
  const input = $("file-input");
  input.addEventListener("change", () => input.files[0] && setImage(input.files[0], input.files[0].name));
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    // an unknown type (a file without an extension) goes to the service, which knows images by content
    const file = [...(e.dataTransfer?.files || [])].find((f) => f.type.startsWith("image/") || f.type === "");
    if (file) setImage(file, file.name);
    else say("image-info", "That was not an image file.", "error");
  });
}

function imageForm(extra = {}, blob = state.image, name = state.imageName) {
  const form = new FormData();
  form.append("image", blob, name || "image.png");
  for (const [k, v] of Object.entries(extra)) form.append(k, String(v));
  return form;
}

// ---------- reconstruction ----------

function tile(title, sub, img, extraClass = "") {
  return el("figure", { class: `tile ${extraClass}` }, img, el("figcaption", {}, el("strong", { text: title }), sub));
}

async function runReconstruct() {
  if (!state.image) return;
  const run = ++state.reconstructRun; // a newer image's run owns the message; older ones fall silent
  const models = withOp("reconstruct");
  const grid = $("recon-grid");
  const original = tile("Original", el("span", { class: "muted", text: state.imageName }),
    el("img", { src: state.imageUrl, alt: `Original: ${state.imageName}`, class: "tile-img original" }));
  const slots = models.map((m) => {
    const img = el("img", { class: "tile-img placeholder", alt: `Reconstruction by ${m.name}, loading`, src: "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7" });
    const figure = el("span", { class: "psnr", text: "…" });
    const node = tile(m.name, el("span", {}, el("span", { class: "muted", text: `${KIND_LABELS[m.kind] || m.kind} · ` }), figure), img, "recon");
    node.dataset.model = m.name;
    return { m, img, figure, node };
  });
  grid.replaceChildren(original, ...slots.map((s) => s.node));
  if (!models.length) return say("reconstruct-msg", "No loaded model can reconstruct.");
  say("reconstruct-msg", `Reconstructing with ${models.length} model${models.length > 1 ? "s" : ""}…`, "busy");
  const results = await Promise.allSettled(slots.map(async ({ m, img, figure }) => {
    const answer = await api.operate(m.name, "reconstruct", imageForm());
    img.src = api.imageUrl(answer.image ?? answer.images?.[0]);
    img.classList.remove("placeholder");
    img.alt = `Reconstruction of ${state.imageName} by ${m.name}`;
    const psnr = answer.psnr ?? Infinity; // the service sends null for an exact reconstruction
    figure.textContent = `PSNR ${fmt(psnr)} dB`;
    figure.dataset.psnr = String(psnr);
  }));
  const failed = results.map((r, i) => [r, slots[i]]).filter(([r]) => r.status === "rejected");
  failed.forEach(([r, s]) => {
    s.figure.textContent = "failed";
    s.node.classList.add("failed");
    s.node.title = r.reason?.message || "";
  });
  if (run !== state.reconstructRun) return;
  if (failed.length) fail("reconstruct-msg", failed[0][0].reason);
  else say("reconstruct-msg", `Done: ${models.length} reconstruction${models.length > 1 ? "s" : ""}.`, "ok");
}

// ---------- VQ-VAE tokens ----------

const tokenView = { editor: null, palette: null, colors: {}, model: null, run: 0, uneditedUrl: null };

function chooseCode(code) {
  const size = tokenView.palette.colors.length;
  const c = Math.max(0, Math.min(size ? size - 1 : code, Number(code) || 0));
  $("tokens-code").value = c;
  tokenView.editor.code = c;
  tokenView.palette.select(c);
  $("tokens-swatch").style.background = cssColor(tokenView.palette.colors[c] || [128, 128, 128]);
}

async function colorsFor(name) {
  if (!tokenView.colors[name]) {
    const model = state.models.find((m) => m.name === name);
    let codebook = null;
    try {
      codebook = (await api.getCodebook(name)).codebook;
    } catch (error) {
      if (error.status === 401) throw error; // elsewhere we fall back to hues without the codebook
    }
    tokenView.colors[name] = codebookColors(codebook, model?.latent?.codebook_size || 512);
  }
  return tokenView.colors[name];
}

async function runTokens() {
  const name = $("tokens-model").value;
  if (!name || !state.image) return;
  const run = ++tokenView.run;
  await busy($("tokens-encode"), "tokens-msg", "Encoding to tokens…", async () => {
    const [answer, colors] = await Promise.all([api.operate(name, "tokens", imageForm()), colorsFor(name)]);
    if (run !== tokenView.run) return; // a newer image or model was chosen meanwhile
    const grid = answer.tokens?.[0]?.[0]?.length !== undefined ? answer.tokens[0] : answer.tokens;
    tokenView.model = name;
    tokenView.palette.setColors(colors);
    tokenView.editor.setGrid(grid, colors);
    chooseCode(Number($("tokens-code").value) || 0);
    $("tokens-code").max = colors.length - 1;
    const [h, w] = tokenView.editor.gridShape;
    const distinct = new Set(grid.flat()).size;
    $("token-canvas").setAttribute("aria-label", `Token grid of ${h}×${w} codes, ${distinct} distinct`);
    $("token-caption").textContent = `${h}×${w} tokens · ${distinct} distinct of ${colors.length}`;
    const recon = answer.image ?? answer.reconstruction;
    if (recon) showDecoded(api.imageUrl(recon), "Decoded tokens (unedited)", true);
    else await decodeTokens(true);
    say("tokens-msg", "Tokens ready. Paint on the grid, then decode.", "ok");
  });
}

function showDecoded(url, caption, unedited = false) {
  if (unedited) tokenView.uneditedUrl = url;
  const img = $("tokens-decoded");
  img.src = url;
  img.classList.remove("placeholder");
  img.alt = caption;
  $("tokens-decoded-caption").textContent = caption;
}

async function decodeTokens(quiet = false) {
  const { editor } = tokenView;
  if (!editor.tokens) throw new Error("encode an image first");
  const answer = await api.operate(tokenView.model, "decode", { tokens: [editor.tokens] });
  const edits = editor.edits;
  showDecoded(api.imageUrl(answer.image ?? answer.images?.[0]), edits ? `Decoded with ${edits} edited token${edits > 1 ? "s" : ""}` : "Decoded tokens (unedited)", !edits);
  if (!quiet) say("tokens-msg", `Decoded ${edits} edit${edits === 1 ? "" : "s"}.`, "ok");
}

function setupTokens() {
  tokenView.editor = new TokenEditor($("token-canvas"), {
    onPick: (code) => chooseCode(code),
    onEdit: (n) => say("tokens-msg", n ? `${n} token${n > 1 ? "s" : ""} edited — press “Decode edited tokens”.` : "No edits."),
  });
  tokenView.palette = new CodebookPalette($("codebook-canvas"), chooseCode);
  $("tokens-code").addEventListener("input", (e) => chooseCode(e.target.value));
  $("tokens-tool").addEventListener("change", (e) => (tokenView.editor.tool = e.target.value));
  $("tokens-model").addEventListener("change", runTokens);
  $("tokens-encode").addEventListener("click", runTokens);
  $("tokens-reset").addEventListener("click", () => {
    tokenView.editor.reset();
    if (tokenView.uneditedUrl) showDecoded(tokenView.uneditedUrl, "Decoded tokens (unedited)");
  });
  const button = $("tokens-decode");
  button.addEventListener("click", () => busy(button, "tokens-msg", "Decoding…", () => decodeTokens(false)));
}

// ---------- interpolation ----------

function setFrame(index) {
  const frames = state.frames;
  if (!frames.length) return;
  const i = Math.max(0, Math.min(frames.length - 1, index));
  const img = $("interp-frame");
  img.src = frames[i];
  img.alt = `Interpolation frame ${i + 1} of ${frames.length}`;
  $("interp-slider").value = String(i);
  $("interp-frame-no").textContent = `${i + 1} / ${frames.length}`;
  document.querySelectorAll("#interp-strip img").forEach((f, k) => f.classList.toggle("current", k === i));
}

function stopPlaying() {
  clearInterval(state.playTimer);
  state.playTimer = null;
  $("interp-play").textContent = "Play";
  $("interp-play").setAttribute("aria-pressed", "false");
}

function togglePlay() {
  if (state.playTimer) return stopPlaying();
  let direction = 1;
  state.playTimer = setInterval(() => {
    // ping-pong, so the loop has no jump from the last frame back to the first
    let i = Number($("interp-slider").value) + direction;
    if (i >= state.frames.length || i < 0) {
      direction = -direction;
      i += 2 * direction;
    }
    setFrame(i);
  }, 160);
  $("interp-play").textContent = "Pause";
  $("interp-play").setAttribute("aria-pressed", "true");
}

async function secondImage() {
  const choice = $("interp-second").value;
  if (choice === "__file") {
    if (!state.second) throw new Error("choose the second image file first");
    return state.second;
  }
  const sample = SAMPLES.find((s) => s.file === choice);
  const blob = await fetchSample(sample.file);
  return { blob, name: sample.label, url: `/static/samples/${sample.file}` };
}

async function runInterpolate() {
  if (!state.image) throw new Error("choose an image first");
  const b = await secondImage();
  $("interp-b").src = b.url;
  const form = new FormData();
  form.append("start", state.image, state.imageName || "start.png");
  form.append("end", b.blob, b.name || "end.png");
  const query = { steps: numberField("interp-steps", 9), method: $("interp-method").value };
  const answer = await api.operate($("interp-model").value, "interpolate", form, query);
  stopPlaying();
  state.frames = (answer.frames ?? answer.images ?? []).map((f) => api.imageUrl(f));
  const slider = $("interp-slider");
  slider.max = String(state.frames.length - 1);
  slider.disabled = false;
  $("interp-play").disabled = false;
  $("interp-frame").classList.remove("placeholder");
  $("interp-strip").replaceChildren(...state.frames.map((src, k) => {
    const img = el("img", { src, alt: `Frame ${k + 1}`, tabindex: "0" });
    img.addEventListener("click", () => (stopPlaying(), setFrame(k)));
    img.addEventListener("keydown", (e) => (e.key === "Enter" || e.key === " ") && (stopPlaying(), setFrame(k)));
    return img;
  }));
  setFrame(0);
  say("interp-msg", `${state.frames.length} frames. Drag the slider or press Play.`, "ok");
}

function setupInterpolate() {
  const select = $("interp-second");
  select.replaceChildren(...SAMPLES.map((s) => el("option", { value: s.file, text: s.label })),
    el("option", { value: "__file", text: "A file…" }));
  select.value = "coffee.png";
  const file = el("input", { type: "file", accept: "image/*", class: "visually-hidden", id: "interp-file", tabindex: "-1", "aria-label": "Second image file" });
  const choose = el("button", { type: "button", id: "interp-choose", text: "Choose a file…" });
  select.closest("label").after(choose, file);
  choose.addEventListener("click", () => file.click());
  const showEnd = () => {
    const sample = SAMPLES.find((s) => s.file === select.value);
    $("interp-b").src = sample ? `/static/samples/${sample.file}` : state.second?.url || "";
  };
  select.addEventListener("change", () => (select.value === "__file" && !state.second ? file.click() : showEnd()));
  file.addEventListener("change", () => {
    const f = file.files[0];
    if (!f) return;
    if (state.second) URL.revokeObjectURL(state.second.url);
    state.second = { blob: f, name: f.name, url: URL.createObjectURL(f) };
    select.querySelector('option[value="__file"]').textContent = `File: ${f.name}`;
    select.value = "__file";
    showEnd();
  });
  $("interp-b").src = "/static/samples/coffee.png";
  $("interp-slider").addEventListener("input", (e) => (stopPlaying(), setFrame(Number(e.target.value))));
  $("interp-play").addEventListener("click", togglePlay);
  const button = $("interp-run");
  button.addEventListener("click", () => busy(button, "interp-msg", "Interpolating…", runInterpolate));
}

// ---------- traversal and samples ----------

function imageGrid(containerId, urls, columns, rowLabels, altOf) {
  const container = $(containerId);
  container.style.setProperty("--columns", String(columns));
  const cells = [];
  urls.forEach((src, k) => {
    const row = Math.floor(k / columns);
    if (rowLabels && k % columns === 0) cells.push(el("span", { class: "row-label", text: rowLabels[row] }));
    cells.push(el("img", { src, alt: altOf(k, row, k % columns) }));
  });
  container.classList.toggle("labelled", Boolean(rowLabels));
  container.replaceChildren(...cells);
}

async function runTraverse() {
  const model = state.models.find((m) => m.name === $("traverse-model").value);
  if (!model) throw new Error("no loaded model supports traverse");
  const steps = numberField("traverse-steps", 7);
  const range = numberField("traverse-range", 3);
  const zdim = model.latent?.shape?.[0] || 1;
  const count = Math.min(zdim, numberField("traverse-dims", 10)); // empty: the field's default
  const query = { steps, low: -range, high: range, dims: Array.from({ length: count }, (_, d) => d).join(",") };
  // around the current image's code when there is one, else around the prior's mean (zero)
  const answer = await api.operate(model.name, "traverse", state.image ? imageForm() : undefined, query);
  const rows = answer.images;
  const frames = rows.flat().map((f) => api.imageUrl(f));
  const dims = answer.dims;
  imageGrid("traverse-grid", frames, steps, dims.map((d) => `z${d}`),
    (k, row, col) => `Dimension z${dims[row]} at ${fmt(answer.values[col], 1)}`);
  say("traverse-msg", `${dims.length} of ${zdim} dimensions × ${steps} values from ${-range} to ${range}` +
    `${state.image ? `, around the code of ${state.imageName}` : ""}.`, "ok");
}

async function runSample() {
  const name = $("sample-model").value;
  if (!name) throw new Error("no loaded model supports sample");
  const n = numberField("sample-count", 16);
  const seed = numberField("sample-seed", 0);
  const answer = await api.operate(name, "sample", undefined, { n, seed });
  const frames = (answer.images ?? []).map((f) => api.imageUrl(f));
  imageGrid("sample-grid", frames, Math.min(8, Math.ceil(Math.sqrt(frames.length))), null, (k) => `Sample ${k + 1}, seed ${seed}`);
  say("sample-msg", `${frames.length} samples with seed ${seed}.`, "ok");
}

function setupGenerators() {
  const t = $("traverse-run");
  t.addEventListener("click", () => busy(t, "traverse-msg", "Traversing…", runTraverse));
  const s = $("sample-run");
  s.addEventListener("click", () => busy(s, "sample-msg", "Sampling…", runSample));
  $("sample-reroll").addEventListener("click", () => {
    $("sample-seed").value = String(Math.floor(Math.random() * 1e6));
    s.click();
  });
}

// ---------- MAE inpainting ----------

let painter = null;
const inpaintMode = () => document.querySelector('input[name="inpaint-mode"]:checked').value;
const inpaintModel = () => state.models.find((m) => m.name === $("inpaint-model").value);

function prepareMask() {
  const m = inpaintModel();
  if (!m) return;
  if (!state.bitmap) {
    painter.clearImage(); // never keep the previous image's crop: Inpaint would send it
    $("mask-caption").textContent = state.image ? "The browser cannot decode this image, so it cannot be masked here." : "";
    return;
  }
  const crop = centreCrop(state.bitmap, m.input.width, m.input.height);
  if (m.input.channels === 1) {
    // show what the model sees
    const ctx = crop.getContext("2d");
    const data = ctx.getImageData(0, 0, crop.width, crop.height);
    for (let i = 0; i < data.data.length; i += 4) {
      const y = 0.299 * data.data[i] + 0.587 * data.data[i + 1] + 0.114 * data.data[i + 2];
      data.data[i] = data.data[i + 1] = data.data[i + 2] = y;
    }
    ctx.putImageData(data, 0, 0);
  }
  painter.setImage(crop, m.patch_size || 8);
  $("mask-caption").textContent = inpaintMode() === "paint" ? `Paint the patches to remove (${m.patch_size}×${m.patch_size} px each)` : "Random mask — drawn by the service";
}

function syncInpaintMode() {
  const mode = inpaintMode();
  document.querySelectorAll("#inpaint .ratio-only").forEach((n) => (n.hidden = mode !== "ratio"));
  document.querySelectorAll("#inpaint .paint-only").forEach((n) => (n.hidden = mode !== "paint"));
  painter.enabled = mode === "paint";
  $("inpaint").dataset.mode = mode;
  prepareMask();
}

async function runInpaint() {
  const m = inpaintModel();
  if (!m) throw new Error("no MAE model");
  if (!painter.image) throw new Error(state.image ? "the browser cannot decode this image; choose another" : "choose an image first");
  const mode = inpaintMode();
  const form = imageForm({}, await canvasToBlob(painter.image), "crop.png");
  let query = {};
  if (mode === "paint") {
    if (!painter.removed) throw new Error("paint at least one patch first, or switch to the random ratio");
    form.append("mask", await canvasToBlob(painter.maskImage()), "mask.png");
  } else {
    query = { mask_ratio: $("inpaint-ratio").value, seed: $("inpaint-seed").value };
  }
  const answer = await api.operate(m.name, "inpaint", form, query);
  const img = $("inpaint-result");
  img.src = api.imageUrl(answer.image ?? answer.images?.[0]);
  img.classList.remove("placeholder");
  if (Array.isArray(answer.mask)) painter.setMask(answer.mask.flat());
  const removed = painter.removed;
  img.alt = `Inpainted: ${removed} of ${painter.mask.length} patches filled by ${m.name}`;
  const errors = (answer.patch_error || []).flat().filter((_, k) => painter.mask[k]);
  const mse = errors.length ? errors.reduce((a, b) => a + b, 0) / errors.length : NaN;
  const psnr = mse > 0 ? 10 * Math.log10(1 / mse) : NaN;
  $("inpaint-caption").textContent = `Inpainted · ${removed}/${painter.mask.length} patches` +
    (Number.isFinite(psnr) ? ` · PSNR on filled patches ${fmt(psnr)} dB` : "");
  say("inpaint-msg", `Filled ${removed} patches.`, "ok");
}

function setupInpaint() {
  painter = new MaskPainter($("mask-canvas"), (n) => say("inpaint-msg", `${n} patch${n === 1 ? "" : "es"} marked for removal.`));
  document.querySelectorAll('input[name="inpaint-mode"]').forEach((r) => r.addEventListener("change", syncInpaintMode));
  $("inpaint-ratio").addEventListener("input", (e) => ($("inpaint-ratio-out").textContent = `${Math.round(e.target.value * 100)}%`));
  $("inpaint-erase").addEventListener("change", (e) => (painter.erase = e.target.checked));
  $("inpaint-clear").addEventListener("click", () => painter.clear());
  $("inpaint-model").addEventListener("change", prepareMask);
  const button = $("inpaint-run");
  button.addEventListener("click", () => busy(button, "inpaint-msg", "Inpainting…", runInpaint));
  syncInpaintMode();
}

// ---------- start ----------

async function start() {
  try {
    await loadModels();
    $("auth-prompt").hidden = true;
    const ready = state.models.filter((m) => m.status === "ready").length;
    say("status", `${ready} of ${state.models.length} models ready.`, "ok");
  } catch (error) {
    $("model-list").replaceChildren(el("p", { class: "placeholder-text", text: error.status === 401 ? "Enter the API key to see the models." : `Could not load the models: ${error.message}` }));
    if (error.status !== 401) say("status", `Could not load the models: ${error.message}`, "error");
    return;
  }
  if (state.image) {
    runReconstruct();
    runTokens();
    prepareMask();
  } else {
    await setImage(await fetchSample(SAMPLES[0].file), SAMPLES[0].label);
  }
}

setupKey();
setupImagePicker();
setupTokens();
setupInterpolate();
setupGenerators();
setupInpaint();
$("models-refresh").addEventListener("click", start);
$("reconstruct-run").addEventListener("click", runReconstruct);
start();
