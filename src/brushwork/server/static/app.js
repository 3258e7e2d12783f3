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
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.hash === `#${name}`);
  const load = { gallery: loadGallery, results: loadResults, study: loadArtworks }[name];
  if (load) load();
}

// ------------------------------------------------------------------------------------------------ stylise

/** Each picker holds a sample, an uploaded file, or a stored image (chosen from the gallery). */
const pickers = {};

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
  file.addEventListener("change", () => {
    if (!file.files.length) return select.dispatchEvent(new Event("change"));
    select.value = "";
    picker.show({ file: file.files[0], preview: URL.createObjectURL(file.files[0]) });
  });
  select.dispatchEvent(new Event("change"));
  pickers[role] = picker;
}

async function setUpStylise() {
  const [samples, models] = await Promise.all([api("/api/samples"), api("/api/models")]);
  for (const fieldset of document.querySelectorAll(".picker")) setUpPicker(fieldset, samples);
  const modelSelect = document.getElementById("model");
  for (const model of models.filter((m) => m.kind === "model")) {
    modelMethods[model.name] = model.method;
    const notes = [model.default ? "default" : "", model.method === "gatys" ? "slow" : "",
                   model.available ? "" : "not installed"].filter(Boolean).join(", ");
    modelSelect.append(el("option", { value: model.name, selected: model.default }, model.name + (notes ? ` (${notes})` : "")));
  }
  const form = document.getElementById("stylise-form");
  for (const [input, output] of [[form.alpha, "alpha-value"], [document.getElementById("mix"), "mix-value"]]) {
    input.addEventListener("input", () => { document.getElementById(output).textContent = input.value; });
  }
  form.addEventListener("submit", (event) => { event.preventDefault(); stylise(form); });
}

async function stylise(form) {
  const body = new FormData();
  const content = pickers.content.choice;
  // A per-style network (johnson) has its style in its weights: it takes no style image.
  const perStyle = modelMethods[form.model.value] === "johnson";
  const styles = perStyle ? [] : [pickers.style.choice, pickers.style2.choice].filter(Boolean);
  if (!content || (!perStyle && !styles.length)) return say("stylise-status", "Pick a content and a style image.", true);
  if (content.file) body.append("content", content.file);
  else body.append("content_ref", content.ref);
  // The API takes uploaded styles first, then references: send them in that order, weights to match.
  const ordered = [...styles.filter((s) => s.file), ...styles.filter((s) => !s.file)];
  for (const style of ordered) {
    if (style.file) body.append("style", style.file);
    else body.append("style_ref", style.ref);
  }
  if (ordered.length === 2) {
    const second = Number(document.getElementById("mix").value);
    const share = (style) => (style === pickers.style2.choice ? second : 1 - second);
    body.append("style_weights", ordered.map(share).join(","));
  }
  for (const name of ["model", "alpha", "preserve_color", "size", "format", "title"]) body.append(name, form[name].value);

  const button = document.getElementById("stylise-button");
  button.disabled = true;
  const started = performance.now();
  const timer = setInterval(() => say("stylise-status", `Painting… ${((performance.now() - started) / 1000).toFixed(0)} s`), 500);
  say("stylise-status", "Painting…");
  try {
    const result = await api("/api/stylize", { method: "POST", body });
    say("stylise-status", `Done in ${result.seconds.toFixed(2)} s (${((performance.now() - started) / 1000).toFixed(2)} s with upload and queue).`);
    const target = document.getElementById("stylise-result");
    target.replaceChildren(el("figure", { "data-id": result.id },
      el("img", { src: result.url, alt: "stylised result" }),
      el("figcaption", {}, settingsText(result), " ",
         el("a", { href: result.url, download: result.download_name, class: "download" }, "Download"))));
  } catch (error) {
    say("stylise-status", error.message, true);
  } finally {
    clearInterval(timer);
    button.disabled = false;
  }
}

// ------------------------------------------------------------------------------------------------ gallery

let galleryOffset = 0;

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
  return el("figure", { class: "card", "data-id": result.id },
    el("a", { href: result.url, target: "_blank" }, el("img", { src: result.url, alt: result.title || `result ${result.id}`, loading: "lazy" })),
    el("figcaption", {},
      el("strong", {}, result.title || `#${result.id}`), el("br"),
      settingsText(result), el("br"),
      el("span", { class: "inputs" }, "from ",
         el("img", { src: result.content.url, alt: result.content.ref, title: result.content.ref }), " in the style of ",
         result.styles.map((s) => el("img", { src: s.url, alt: s.ref, title: s.ref }))),
      el("time", { datetime: result.created }, new Date(result.created).toLocaleString())),
    el("div", { class: "actions" },
      el("a", { href: result.url, download: result.download_name }, "Download"),
      el("button", { onclick: useAs("content") }, "Use as content"),
      el("button", { onclick: useAs("style") }, "Use as style"),
      el("button", { class: "delete", onclick: () => deleteResult(result.id) }, "Delete")));
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
setUpStylise().catch((error) => say("stylise-status", error.message, true));
loadAbout().catch((error) => document.getElementById("models").replaceChildren(el("p", { class: "error" }, error.message)));
showPage();
