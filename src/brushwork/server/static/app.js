// The brushwork page: plain JavaScript over the REST API (/docs describes it). No build step.

const PAGE_SIZE = 12;

// ------------------------------------------------------------------------------------------------ helpers

/** An element with attributes (on* are listeners) and children (strings become text, never HTML). */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value);
  }
  node.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return node;
}

/** JSON from the API; a failed request throws an Error with the server's one-line message. */
/** Method of each model by name (from /api/models). */
const modelMethods = {};

async function api(path, options = {}) {
  const response = await fetch(path, options);
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).detail || message; } catch { /* not JSON */ }
    throw Object.assign(new Error(message), { status: response.status });
  }
  return response.status === 204 ? null : response.json();
}

function postJSON(path, body, headers = {}) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json", ...headers },
                     body: JSON.stringify(body) });
}

function say(id, text, isError = false) {
  const node = document.getElementById(id);
  node.textContent = text;
  node.classList.toggle("error", isError);
}

const percent = (value) => (value === null ? "–" : `${(100 * value).toFixed(1)}%`);

function settingsText(result) {
  const parts = [result.model, `alpha ${result.alpha}`];
  if (result.preserve_color) parts.push(`colours: ${result.preserve_color}`);
  if (result.style_weights) parts.push(`weights ${result.style_weights.join(", ")}`);
  parts.push(`${result.width}×${result.height}`, `${result.seconds.toFixed(2)} s`);
  return parts.join(" · ");
}

// ------------------------------------------------------------------------------------------------ pages

function showPage() {
  const name = (location.hash || "#stylise").slice(1);
  for (const page of document.querySelectorAll(".page")) page.hidden = page.id !== name;
  if (name !== "live" && live.socket) stopLive();  // the camera runs only while its tab is shown
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.hash === `#${name}`);
  const load = { gallery: loadGallery, results: loadResults, study: loadArtworks }[name];
  if (load) load();
}

// ------------------------------------------------------------------------------------------------ stage

/** A painting fitted to its viewport (or at 100 %), over the photo it came from, with a draggable divider
 * between the two (pointer or keyboard) when comparing. */
class Stage {
  constructor(root) {
    this.root = root;
    const parts = document.getElementById("stage-parts").content.cloneNode(true);
    const viewport = parts.querySelector(".viewport");
    root.querySelector(".stage-bar > :first-child").after(...[...parts.children].filter((part) => part !== viewport));
    root.append(viewport);
    const after = root.dataset.after;
    viewport.querySelector(".after").alt = after;
    viewport.querySelector(".divider").setAttribute("aria-label", `Divider between the photo (left) and ${after} (right)`);
    this.viewport = root.querySelector(".viewport");
    this.frame = root.querySelector(".frame");
    this.before = root.querySelector(".before");
    this.after = root.querySelector(".after");
    this.divider = root.querySelector(".divider");
    this.zoomButton = root.querySelector(".zoom");
    this.compareBox = root.querySelector(".compare");
    this.split = 50;
    this.after.addEventListener("load", () => this.fit());
    new ResizeObserver(() => this.fit()).observe(this.viewport);
    this.zoomButton.addEventListener("click", () => this.zoom(!this.root.classList.contains("actual-size")));
    this.compareBox.addEventListener("change", () => this.compare(this.compareBox.checked));
    this.divider.addEventListener("pointerdown", (event) => {
      event.preventDefault();  // no text selection while dragging
      const move = (e) => this.setSplit(this.percentAt(e.clientX));
      const stop = () => { window.removeEventListener("pointermove", move); window.removeEventListener("pointerup", stop); };
      window.addEventListener("pointermove", move);
      window.addEventListener("pointerup", stop);
    });
    this.frame.addEventListener("click", (event) => {
      if (this.root.classList.contains("comparing") && event.target !== this.divider) this.setSplit(this.percentAt(event.clientX));
    });
    this.divider.addEventListener("keydown", (event) => {
      const step = event.shiftKey ? 10 : 2;
      const next = { ArrowLeft: this.split - step, ArrowRight: this.split + step, Home: 0, End: 100 }[event.key];
      if (next === undefined) return;
      event.preventDefault();
      this.setSplit(next);
    });
    this.setSplit(50);
  }

  /** Show the painting at ``afterUrl`` over the photo at ``beforeUrl``. */
  show(afterUrl, beforeUrl) {
    if (beforeUrl !== undefined && this.before.getAttribute("src") !== beforeUrl) this.before.src = beforeUrl;
    this.after.src = afterUrl;
  }

  percentAt(clientX) {
    const box = this.frame.getBoundingClientRect();
    return (100 * (clientX - box.left)) / box.width;
  }

  setSplit(percent) {
    this.split = Math.round(Math.min(100, Math.max(0, percent)));
    this.frame.style.setProperty("--split", `${this.split}%`);
    this.divider.setAttribute("aria-valuenow", this.split);
    this.divider.setAttribute("aria-valuetext", `photo to ${this.split} %, painting after`);
  }

  compare(on) {
    this.compareBox.checked = on;
    this.root.classList.toggle("comparing", on);
    if (!on) this.frame.style.setProperty("--split", "0%");
    else this.setSplit(this.split);
  }

  zoom(actualSize) {
    this.root.classList.toggle("actual-size", actualSize);
    this.zoomButton.setAttribute("aria-pressed", actualSize);
    this.zoomButton.textContent = actualSize ? "Fit to the window" : "Zoom to 100 %";
    this.fit();
  }

  /** The frame at the painting's size (100 %) or as large as the viewport holds, its shape kept. */
  fit() {
    const { naturalWidth: width, naturalHeight: height } = this.after;
    if (!width) return;
    const scale = this.root.classList.contains("actual-size") ? 1
      : Math.min(this.viewport.clientWidth / width, this.viewport.clientHeight / height);
    this.frame.style.width = `${Math.floor(width * scale)}px`;
    this.frame.style.height = `${Math.floor(height * scale)}px`;
  }
}

// ------------------------------------------------------------------------------------------------ studio

/** Each picker holds a sample or a stored image (a reference: uploads are stored once, when chosen), and the
 * chosen file when there is one (sent again on saving, which makes an uploaded style a study artwork). */
const pickers = {};
/** Identifies this page's previews: the server keeps their encodings, and drops one superseded by a newer. */
const CLIENT_ID = crypto.randomUUID().replaceAll("-", "");
const PREVIEW_SIZE = 512;
let studio;

function setUpPicker(fieldset, samples) {
  const role = fieldset.dataset.role;
  const select = fieldset.querySelector("select");
  const file = fieldset.querySelector("input[type=file]");
  const preview = fieldset.querySelector(".preview");
  const picker = { choice: null };
  const defaults = { content: "sample:chelsea", style: "sample:ihc", style2: "" };
  select.append(fieldset.hasAttribute("data-optional") ? el("option", { value: "" }, "none")
    : el("option", { value: "", disabled: true }, "an uploaded or gallery image"));
  for (const sample of samples) select.append(el("option", { value: sample.ref }, sample.description));
  select.value = defaults[role];

  picker.show = (choice) => {
    picker.choice = choice;
    preview.hidden = !choice;
    if (choice) preview.src = choice.preview;
    if (role === "style2") document.querySelector(".needs-style2").hidden = !choice;
    document.dispatchEvent(new Event("settings-changed"));
  };
  picker.useRef = (ref, url) => {
    file.value = "";
    select.value = "";
    picker.show({ ref, preview: url });
  };
  select.addEventListener("change", () => {
    file.value = "";
    const sample = samples.find((s) => s.ref === select.value);
    picker.show(sample ? { ref: sample.ref, preview: sample.url } : null);
  });
  file.addEventListener("change", async () => {
    if (!file.files.length) return select.dispatchEvent(new Event("change"));
    const chosen = file.files[0];
    select.value = "";
    const body = new FormData();
    body.append("file", chosen);
    try {
      const image = await api("/api/images", { method: "POST", body });
      picker.show({ file: chosen, ref: image.ref, preview: URL.createObjectURL(chosen) });
    } catch (error) {
      say("stylise-status", error.message, true);
    }
  });
  select.dispatchEvent(new Event("change"));
  pickers[role] = picker;
}

async function setUpStudio() {
  const [samples, models] = await Promise.all([api("/api/samples"), api("/api/models")]);
  studio = new Stage(document.getElementById("studio-stage"));
  const modelSelect = document.getElementById("model");
  for (const model of models.filter((m) => m.kind === "model")) {
    modelMethods[model.name] = model.method;
    const notes = [model.default ? "default" : "", model.method === "gatys" ? "slow, not live" : "",
                   model.available ? "" : "not installed"].filter(Boolean).join(", ");
    modelSelect.append(el("option", { value: model.name, selected: model.default }, model.name + (notes ? ` (${notes})` : "")));
  }
  for (const fieldset of document.querySelectorAll(".picker")) setUpPicker(fieldset, samples);
  const form = document.getElementById("stylise-form");
  for (const [input, output] of [[form.alpha, "alpha-value"], [document.getElementById("mix"), "mix-value"]]) {
    input.addEventListener("input", () => { document.getElementById(output).textContent = input.value; });
  }
  // A slider repaints when released (and while dragged, as fast as the previews come back); a menu at once.
  for (const control of [form.alpha, document.getElementById("mix")]) {
    control.addEventListener("input", () => requestPreview());
    control.addEventListener("change", () => requestPreview());
  }
  for (const control of [form.model, form.preserve_color, document.getElementById("live-preview")]) {
    control.addEventListener("change", () => requestPreview());
  }
  document.addEventListener("settings-changed", () => requestPreview());
  form.addEventListener("submit", (event) => { event.preventDefault(); save(form); });
  setUpLive(samples, models);
  requestPreview();
}

/** The studio's settings: content, styles (in order) and their weights, model, alpha, colours. */
function studioSettings(form) {
  const content = pickers.content?.choice;
  // A per-style network (johnson) has its style in its weights: it takes no style image.
  const perStyle = modelMethods[form.model.value] === "johnson";
  const styles = perStyle ? [] : [pickers.style?.choice, pickers.style2?.choice].filter(Boolean);
  const second = Number(document.getElementById("mix").value);
  const weights = styles.length === 2 ? styles.map((s) => (s === pickers.style2.choice ? second : 1 - second)) : null;
  const ready = Boolean(content && content.ref && (perStyle || styles.length) && styles.every((s) => s.ref));
  return { ready, content, styles, weights, perStyle, model: form.model.value, alpha: Number(form.alpha.value),
           preserve_color: form.preserve_color.value };
}

/** One preview at a time: a change while one is painted asks for another once it is back (the newest settings
 * only, so a dragged slider never queues up stale work). */
const previewState = { busy: false, again: false, shown: null, painted: null };

async function requestPreview() {
  if (previewState.busy) { previewState.again = true; return; }
  const form = document.getElementById("stylise-form");
  const settings = studioSettings(form);
  if (!settings.ready || !document.getElementById("live-preview").checked || modelMethods[settings.model] === "gatys") {
    if (modelMethods[settings.model] === "gatys") say("preview-status", "Gatys is too slow to preview: save to paint it.");
    return;
  }
  const body = { client: CLIENT_ID, content: settings.content.ref, styles: settings.styles.map((s) => s.ref),
                 style_weights: settings.weights, model: settings.model, alpha: settings.alpha,
                 preserve_color: settings.preserve_color, size: PREVIEW_SIZE };
  const key = JSON.stringify(body);
  if (key === previewState.painted) return;  // on screen already (a slider's release after its last input, say)
  previewState.busy = true;
  previewState.again = false;
  studio.root.classList.add("updating");
  const started = performance.now();
  try {
    const response = await fetch("/api/preview", { method: "POST", headers: { "Content-Type": "application/json" },
                                                   body: JSON.stringify(body) });
    if (response.ok) {
      const url = URL.createObjectURL(await response.blob());
      const loaded = new Promise((resolve) => studio.after.addEventListener("load", resolve, { once: true }));
      studio.show(url, settings.content.preview);
      await loaded;
      if (previewState.shown) URL.revokeObjectURL(previewState.shown);
      previewState.shown = url;
      previewState.painted = key;
      const painted = Number(response.headers.get("X-Paint-Seconds"));
      say("preview-status", `Preview ${studio.after.naturalWidth}×${studio.after.naturalHeight}: painted in ` +
          `${(painted * 1000).toFixed(0)} ms, on screen in ${(performance.now() - started).toFixed(0)} ms`);
      // For measurements (the browser test): when the new pixels were ready, with the settings they show.
      document.dispatchEvent(new CustomEvent("preview-shown", { detail: { at: performance.now(), alpha: settings.alpha } }));
    } else if (response.status !== 409) {  // 409: superseded by a newer preview, which is on its way
      let message = `${response.status} ${response.statusText}`;
      try { message = (await response.json()).detail || message; } catch { /* not JSON */ }
      say("preview-status", message, true);
    }
  } catch (error) {
    say("preview-status", error.message, true);
  } finally {
    previewState.busy = false;
    studio.root.classList.remove("updating");
    if (previewState.again) requestPreview();
  }
}

async function save(form) {
  const settings = studioSettings(form);
  if (!settings.content || (!settings.perStyle && !settings.styles.length)) {
    return say("stylise-status", "Pick a content and a style image.", true);
  }
  const body = new FormData();
  if (settings.content.file) body.append("content", settings.content.file);
  else body.append("content_ref", settings.content.ref);
  // The API takes uploaded styles first, then references: send them in that order, weights to match.
  const order = [...settings.styles.keys()].sort((a, b) => Boolean(settings.styles[b].file) - Boolean(settings.styles[a].file));
  for (const index of order) {
    const style = settings.styles[index];
    if (style.file) body.append("style", style.file);
    else body.append("style_ref", style.ref);
  }
  if (settings.weights) body.append("style_weights", order.map((index) => settings.weights[index]).join(","));
  for (const name of ["model", "alpha", "preserve_color", "size", "format", "title"]) body.append(name, form[name].value);

  const button = document.getElementById("stylise-button");
  button.disabled = true;
  const started = performance.now();
  const timer = setInterval(() => say("stylise-status", `Painting… ${((performance.now() - started) / 1000).toFixed(0)} s`), 500);
  say("stylise-status", "Painting…");
  try {
    const result = await api("/api/stylize", { method: "POST", body });
    say("stylise-status", `Done in ${result.seconds.toFixed(2)} s (${((performance.now() - started) / 1000).toFixed(2)} s with upload and queue). Saved to the gallery.`);
    studio.show(result.url, settings.content.preview);
    say("preview-status", `Saved result ${result.width}×${result.height}`);
    document.getElementById("stylise-result").replaceChildren(el("figure", { "data-id": result.id },
      el("img", { src: result.url, alt: "saved result" }),
      el("figcaption", {}, `#${result.id} · `, settingsText(result), " ",
         el("a", { href: result.url, download: result.download_name, class: "download" }, "Download"), " ",
         el("button", { type: "button", onclick: () => openViewer(result) }, "Open"))));
  } catch (error) {
    say("stylise-status", error.message, true);
  } finally {
    clearInterval(timer);
    button.disabled = false;
  }
}

// ------------------------------------------------------------------------------------------------ live

/** The camera painted through the server's WebSocket: one frame out, the next sent when it is back. */
const live = { socket: null, stream: null, canvas: document.createElement("canvas"), painted: [], waiting: false,
               shown: null, lastSent: 0, timer: null,
               // the least time between frames: within the server's frame-rate limit (told with the settings' answer)
               interval: 1000 / 20 };

function setUpLive(samples, models) {
  const style = document.getElementById("live-style");
  for (const sample of samples) style.append(el("option", { value: sample.ref }, sample.description));
  style.value = "sample:ihc";
  const model = document.getElementById("live-model");
  for (const m of models.filter((m) => m.kind === "model" && m.method !== "gatys")) {
    model.append(el("option", { value: m.name, selected: m.default }, m.name + (m.available ? "" : " (not installed)")));
  }
  for (const [input, output] of [["live-alpha", "live-alpha-value"], ["live-smooth", "live-smooth-value"]]) {
    const node = document.getElementById(input);
    node.addEventListener("input", () => { document.getElementById(output).textContent = node.value; });
  }
  for (const id of ["live-style", "live-model", "live-alpha", "live-smooth"]) {
    document.getElementById(id).addEventListener("change", sendLiveSettings);
  }
  document.getElementById("live-start").addEventListener("click", startLive);
  document.getElementById("live-stop").addEventListener("click", stopLive);
  document.getElementById("live-snapshot").addEventListener("click", snapshot);
}

function liveSettings() {
  const model = document.getElementById("live-model").value;
  const perStyle = modelMethods[model] === "johnson";
  return { model, styles: perStyle ? [] : [document.getElementById("live-style").value],
           alpha: Number(document.getElementById("live-alpha").value),
           smooth: Number(document.getElementById("live-smooth").value) };
}

function sendLiveSettings() {
  if (live.socket?.readyState === WebSocket.OPEN) live.socket.send(JSON.stringify(liveSettings()));
}

async function startLive() {
  say("live-status", "Asking for the camera…");
  try {
    live.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (error) {
    return say("live-status", `No camera: ${error.message}`, true);
  }
  const video = document.getElementById("live-video");
  video.srcObject = live.stream;
  await video.play();
  const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/live`);
  socket.binaryType = "blob";
  live.socket = socket;
  live.painted = [];
  socket.addEventListener("open", () => {
    sendLiveSettings();
    say("live-status", "Painting the camera.");
    sendFrame();
  });
  socket.addEventListener("message", (event) => {
    if (typeof event.data === "string") {
      const message = JSON.parse(event.data);
      if (message.error) say("live-status", message.error, true);
      if (message.limits) live.interval = 1000 / (0.8 * message.limits.max_fps);
      if (!live.waiting || message.settings) return;
    } else {
      showPainted(event.data);
    }
    live.waiting = false;
    sendFrame();
  });
  socket.addEventListener("close", (event) => {
    if (live.socket === socket) {
      say("live-status", event.reason ? `Stopped: ${event.reason}` : "Stopped.", Boolean(event.reason));
      stopLive(false);
    }
  });
  document.getElementById("live-start").disabled = true;
  document.getElementById("live-stop").disabled = false;
  document.getElementById("live-snapshot").disabled = false;
}

/** The camera's current picture, its shorter side at the chosen frame size, as a JPEG. */
function grabFrame(quality = 0.85) {
  const video = document.getElementById("live-video");
  if (!video.videoWidth) return Promise.resolve(null);
  const side = Number(document.getElementById("live-size").value);
  const scale = side / Math.min(video.videoWidth, video.videoHeight);
  live.canvas.width = Math.round(video.videoWidth * scale);
  live.canvas.height = Math.round(video.videoHeight * scale);
  live.canvas.getContext("2d").drawImage(video, 0, 0, live.canvas.width, live.canvas.height);
  return new Promise((resolve) => live.canvas.toBlob(resolve, "image/jpeg", quality));
}

async function sendFrame() {
  if (live.socket?.readyState !== WebSocket.OPEN || live.waiting || live.timer) return;
  const wait = live.lastSent + live.interval - performance.now();
  if (wait > 0) {  // faster than the server's frame-rate limit: the next frame a little later
    live.timer = setTimeout(() => { live.timer = null; sendFrame(); }, wait);
    return;
  }
  const socket = live.socket;
  live.waiting = true;
  const frame = await grabFrame();
  if (live.socket !== socket || socket.readyState !== WebSocket.OPEN) return;  // stopped meanwhile
  if (!frame) { live.waiting = false; return setTimeout(sendFrame, 100); }
  live.lastSent = performance.now();
  socket.send(frame);
}

function showPainted(blob) {
  const output = document.getElementById("live-output");
  const url = URL.createObjectURL(blob);
  output.src = url;
  if (live.shown) URL.revokeObjectURL(live.shown);
  live.shown = url;
  const now = performance.now();
  live.painted.push(now);
  while (live.painted.length && live.painted[0] < now - 3000) live.painted.shift();
  if (live.painted.length > 1) {
    const rate = (live.painted.length - 1) / ((now - live.painted[0]) / 1000);
    document.getElementById("live-rate").textContent = `${rate.toFixed(1)} frames/s at ${live.canvas.width}×${live.canvas.height}`;
  }
}

function stopLive(close = true) {
  const socket = live.socket;
  live.socket = null;
  live.waiting = false;
  clearTimeout(live.timer);
  live.timer = null;
  if (close && socket) socket.close(1000);
  for (const track of live.stream?.getTracks() || []) track.stop();
  live.stream = null;
  document.getElementById("live-start").disabled = false;
  document.getElementById("live-stop").disabled = true;
  document.getElementById("live-snapshot").disabled = true;
  if (close) say("live-status", "Stopped.");
}

/** The camera's picture and its painting into the gallery, at the live frame size. */
async function snapshot() {
  const frame = await grabFrame(0.92);
  if (!frame) return;
  const settings = liveSettings();
  const body = new FormData();
  body.append("content", frame, "camera.jpg");
  for (const style of settings.styles) body.append("style_ref", style);
  body.append("model", settings.model);
  body.append("alpha", settings.alpha);
  body.append("size", Math.min(live.canvas.width, live.canvas.height));
  body.append("format", "jpg");
  body.append("title", "Live snapshot");
  try {
    const result = await api("/api/stylize", { method: "POST", body });
    say("live-status", `Snapshot saved to the gallery as #${result.id}.`);
  } catch (error) {
    say("live-status", error.message, true);
  }
}

// ------------------------------------------------------------------------------------------------ gallery

let galleryOffset = 0;
let viewer;

async function loadGallery() {
  const target = document.getElementById("gallery-items");
  try {
    const page = await api(`/api/results?offset=${galleryOffset}&limit=${PAGE_SIZE}`);
    if (!page.items.length && galleryOffset > 0) {  // the last item of a page was deleted
      galleryOffset = Math.max(0, galleryOffset - PAGE_SIZE);
      return loadGallery();
    }
    const pages = Math.max(1, Math.ceil(page.total / PAGE_SIZE));
    document.getElementById("gallery-page").textContent =
      `page ${galleryOffset / PAGE_SIZE + 1} of ${pages} (${page.total} results)`;
    for (const button of document.querySelectorAll(".pager button")) {
      const next = galleryOffset + Number(button.dataset.step) * PAGE_SIZE;
      button.disabled = next < 0 || next >= page.total;
    }
    target.replaceChildren(...(page.items.length ? page.items.map(galleryCard)
      : [el("p", {}, "Nothing here yet: stylise something first.")]));
  } catch (error) {
    target.replaceChildren(el("p", { class: "error" }, error.message));
  }
}

function galleryCard(result) {
  const useAs = (role) => () => { pickers[role].useRef(result.ref, result.url); location.hash = "#stylise"; };
  const open = (event) => { event.preventDefault(); openViewer(result); };
  return el("figure", { class: "card", "data-id": result.id },
    el("a", { href: result.url, class: "open", onclick: open, "aria-label": `open ${result.title || `result ${result.id}`} at full size` },
       el("img", { src: result.thumbnail_url, alt: result.title || `result ${result.id}`, loading: "lazy" })),
    el("figcaption", {},
      el("strong", {}, result.title || `#${result.id}`), el("br"),
      settingsText(result), el("br"),
      el("span", { class: "inputs" }, "from ",
         el("img", { src: result.content.url, alt: result.content.ref, title: result.content.ref }), " in the style of ",
         result.styles.map((s) => el("img", { src: s.url, alt: s.ref, title: s.ref }))),
      el("time", { datetime: result.created }, new Date(result.created).toLocaleString())),
    el("div", { class: "actions" },
      el("a", { href: result.url, download: result.download_name }, "Download"),
      el("button", { onclick: () => openViewer(result) }, "Open"),
      el("button", { onclick: useAs("content") }, "Use as content"),
      el("button", { onclick: useAs("style") }, "Use as style"),
      el("button", { class: "delete", onclick: () => deleteResult(result.id) }, "Delete")));
}

/** A result at full size in a dialog: fitted or at 100 %, and compared with its photo. */
function openViewer(result) {
  const dialog = document.getElementById("viewer");
  viewer = viewer || new Stage(dialog.querySelector(".stage"));
  dialog.querySelector(".title").textContent = `${result.title || `#${result.id}`} · ${result.width}×${result.height}`;
  const download = dialog.querySelector(".download");
  download.href = result.url;
  download.download = result.download_name;
  viewer.zoom(false);
  viewer.compare(false);
  viewer.show(result.url, result.content.url);
  dialog.showModal();
}

async function deleteResult(id) {
  if (!confirm(`Delete result #${id}?`)) return;
  try {
    await api(`/api/results/${id}`, { method: "DELETE" });
  } catch (error) {
    alert(error.message);
  }
  loadGallery();
}

// ------------------------------------------------------------------------------------------------ study

const PARTICIPANT_KEY = "brushwork-participant-token";

/** This browser's participant ({token, id}): given by the server at the first trial, then kept here. */
function storedParticipant() {
  return JSON.parse(localStorage.getItem(PARTICIPANT_KEY) || "null");
}

function showParticipant() {
  const stored = storedParticipant();
  document.getElementById("participant").textContent = stored ? stored.id : "given with your first trial";
}

async function newParticipant() {
  localStorage.setItem(PARTICIPANT_KEY, JSON.stringify(await api("/api/study/participants", { method: "POST" })));
  showParticipant();
  return storedParticipant();
}

const bearer = (participant) => ({ Authorization: `Bearer ${participant.token}` });

async function startTrial(study, message = "") {
  document.getElementById("trial").replaceChildren();
  say("study-status", message);
  try {
    let participant = storedParticipant() || await newParticipant();
    let trial;
    try {
      trial = await postJSON("/api/study/trials", { study }, bearer(participant));
    } catch (error) {
      if (error.status !== 401) throw error;
      participant = await newParticipant();  // the server no longer knows this browser's token
      trial = await postJSON("/api/study/trials", { study }, bearer(participant));
    }
    showTrial(trial, participant);
  } catch (error) {
    say("study-status", error.message, true);
  }
}

function showTrial(trial, participant) {
  const preference = trial.study === "preference";
  const picked = new Set();
  const submit = el("button", { id: "submit-answer", disabled: preference }, "Submit");
  const images = trial.items.map((item) => {
    const figure = el("figure", { class: "choice", "data-position": item.position, tabindex: 0 },
      el("img", { src: item.url, alt: `image ${item.position + 1}` }),
      el("figcaption", {}, preference ? "most appealing" : "real artwork"));
    const toggle = () => {
      if (preference) {
        picked.clear();
        for (const other of document.querySelectorAll("#trial .choice")) other.classList.remove("picked");
      }
      if (picked.has(item.position)) picked.delete(item.position);
      else picked.add(item.position);
      figure.classList.toggle("picked", picked.has(item.position));
      submit.disabled = preference && picked.size !== 1;
    };
    figure.addEventListener("click", toggle);
    figure.addEventListener("keydown", (event) => { if (event.key === " " || event.key === "Enter") { event.preventDefault(); toggle(); } });
    return figure;
  });
  submit.addEventListener("click", async () => {
    submit.disabled = true;
    try {
      await postJSON(`/api/study/trials/${trial.id}/answer`, { picked: [...picked] }, bearer(participant));
      startTrial(trial.study, "Thank you! Here is the next one.");
    } catch (error) {
      say("study-status", error.message, true);
      submit.disabled = false;
    }
  });
  const question = preference ? "Click the image you find most appealing, then submit."
    : "Click every image you think is a real artwork (maybe none, maybe all), then submit.";
  document.getElementById("trial").replaceChildren(
    el("p", { class: "question" }, question), el("div", { class: "grid choices" }, images), submit);
}

async function loadArtworks() {
  const artworks = await api("/api/study/artworks");
  document.getElementById("artwork-count").textContent = artworks.length;
  document.getElementById("artwork-items").replaceChildren(...artworks.map((art) =>
    el("figure", {}, el("img", { src: art.url, alt: art.name || "artwork", loading: "lazy" }),
      el("button", { onclick: async () => { await api(`/api/study/artworks/${art.sha256}`, { method: "DELETE" }); loadArtworks(); } }, "Not an artwork"))));
}

async function addArtwork(input) {
  if (!input.files.length) return;
  const body = new FormData();
  body.append("file", input.files[0]);
  body.append("artwork", "true");
  try {
    await api("/api/images", { method: "POST", body });
    say("study-status", "Artwork added.");
  } catch (error) {
    say("study-status", error.message, true);
  }
  input.value = "";
  loadArtworks();
}

// ------------------------------------------------------------------------------------------------ results

function rateRow(label, rate) {
  return el("tr", {}, el("td", {}, label), el("td", {}, String(rate.shown)), el("td", {}, String(rate.picked)),
    el("td", {}, percent(rate.rate)), el("td", {}, rate.shown ? `${percent(rate.ci_low)} – ${percent(rate.ci_high)}` : "–"));
}

function table(id, headings, rows) {
  const head = el("tr", {}, headings.map((text) => el("th", {}, text)));
  const empty = el("tr", {}, el("td", { colspan: headings.length }, "no answers yet"));
  document.getElementById(id).replaceChildren(el("thead", {}, head), el("tbody", {}, rows.length ? rows : empty));
}

function rateTable(id, picked, rows) {
  table(id, ["", "shown", picked, "rate", "95% interval"], rows);
}

function participantRow(person) {
  const favourite = person.favourite ? `${person.favourite} (${percent(person.favourite_share)} of their trials)` : "–";
  return el("tr", {}, el("td", {}, person.participant), el("td", {}, String(person.preference_trials)),
    el("td", {}, favourite), el("td", {}, String(person.deception_trials)),
    el("td", {}, percent(person.stylisations_marked_real)));
}

async function loadResults() {
  const results = await api("/api/study/results");
  const { preference, deception } = results;
  rateTable("preference-table", "chosen",
    preference.conditions.map((c) => rateRow(c.condition, c)));
  const deceptionRows = deception.trials ? [
    rateRow("all stylisations (deception rate)", deception.stylisations),
    rateRow("real artworks", deception.artworks),
    ...deception.conditions.map((c) => rateRow(`stylisations: ${c.condition}`, c)),
  ] : [];
  rateTable("deception-table", "marked real", deceptionRows);
  table("participants-table", ["participant", "preference trials", "chosen most often", "deception trials",
                               "stylisations marked real"], results.participants.map(participantRow));
}

// ------------------------------------------------------------------------------------------------ about

async function loadAbout() {
  const models = await api("/api/models");
  const card = (model) => el("article", { class: "model" },
    el("h4", {}, model.name, model.default ? " (default)" : ""),
    el("p", {}, model.summary),
    el("dl", {},
      el("dt", {}, "Licence"), el("dd", {}, model.licence),
      el("dt", {}, "Source"), el("dd", {}, model.source),
      el("dt", {}, "Cite"), el("dd", {}, model.citation),
      model.notes ? [el("dt", {}, "Notes"), el("dd", {}, model.notes)] : null,
      el("dt", {}, "On this server"), el("dd", {}, model.available ? "yes" : "no: its weights are not installed")));
  document.getElementById("models").replaceChildren(...models.filter((m) => m.kind === "model").map(card));
  document.getElementById("loss-networks").replaceChildren(...models.filter((m) => m.kind !== "model").map(card));
}

// ------------------------------------------------------------------------------------------------ start

showParticipant();
document.getElementById("start-preference").addEventListener("click", () => startTrial("preference"));
document.getElementById("start-deception").addEventListener("click", () => startTrial("deception"));
document.getElementById("artwork-file").addEventListener("change", (event) => addArtwork(event.target));
for (const button of document.querySelectorAll(".pager button")) {
  button.addEventListener("click", () => { galleryOffset += Number(button.dataset.step) * PAGE_SIZE; loadGallery(); });
}
window.addEventListener("hashchange", showPage);
document.querySelector("#viewer .close").addEventListener("click", () => document.getElementById("viewer").close());
setUpStudio().catch((error) => say("stylise-status", error.message, true));
loadAbout().catch((error) => document.getElementById("models").replaceChildren(el("p", { class: "error" }, error.message)));
showPage();
