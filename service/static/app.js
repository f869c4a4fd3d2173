// clipsearch page: builds a search request from the form, renders the ranked grid.
"use strict";
const $ = (id) => document.getElementById(id);
const HIDDEN_COLUMNS = new Set(["id", "path", "model", "loaded_at", "modified_at", "embedding", "camera", "latitude",
                                "longitude", "orientation", "exif_date", "ocr_engine", "video", "start", "end"]);
const CARD_SKIP = new Set(["id", "path", "score", "picture_score", "match", "words_version", "ocr_engine", "model", "loaded_at", "modified_at", "file_size", "format", "camera",
                           "taken_at", "exif_date", "orientation", "width", "height", "latitude", "longitude",
                           "media", "video", "start", "end", "codec", "duration"]);
// A moment's time in its video: 75.5 -> "1:15.5"
function clock(s) { return `${Math.floor(s / 60)}:${(s % 60).toFixed(1).padStart(4, "0")}`; }
const FIELD_NAMES = { name: "file or folder name", title: "catalogue text", meta: "photo's metadata",
                      ocr: "text in the picture", label: "labels" };
let queryFile = null;     // an uploaded query image
let queryImageId = null;  // "more like this": a stored image as the query
let columns = [];
let facetColumns = [];    // counted with every search, shown as clickable filters
let facetFilters = [];    // filters added by clicking a facet: {column, op, value}
let nextPage = null;      // loads the next page of the current search (offset), or null after the last
let shown = new Set();    // ids on the grid, so a page never shows one twice
let total = null;         // with a min score: how many match (from the facet counts)

function setQueryImage(src) {
  $("preview").src = src || "";
  $("preview").hidden = !src;
  $("drop-label").hidden = !!src;
  $("clear-image").hidden = !src;
  updateWeightRow();
}
function updateWeightRow() {
  $("weight-row").hidden = !((queryFile || queryImageId) && $("text").value.trim());
}
function weights() {
  const w = $("weight").value / 100;
  $("weight-value").textContent = `image ${w.toFixed(2)} / text ${(1 - w).toFixed(2)}`;
  return { image: w, text: 1 - w };
}

async function loadColumns() {
  const res = await fetch("/api/columns");
  if (!res.ok) return;
  const all = (await res.json()).columns;
  columns = all.filter((c) => !HIDDEN_COLUMNS.has(c.name));
  // Facets: the columns with a short list of values, and the year of taken_at.
  facetColumns = columns.filter((c) => c.kind === "text" && c.values).map((c) => c.name)
    .concat(all.some((c) => c.name === "taken_at") ? ["taken_at"] : []).slice(0, 8);
  const box = $("filters");
  box.innerHTML = "";
  for (const c of columns) {
    const div = document.createElement("div");
    div.className = "filter";
    if (c.kind === "number") {
      div.innerHTML = `<label>${c.name}</label><input data-col="${c.name}" data-role="from" type="number" placeholder="min ${c.min ?? ""}">
        &ndash;<input data-col="${c.name}" data-role="to" type="number" placeholder="max ${c.max ?? ""}">`;
    } else if (c.kind === "text" && c.values) {
      const opts = c.values.map((v) => `<option>${escapeHtml(v)}</option>`).join("");
      div.innerHTML = `<label>${c.name}</label><select data-col="${c.name}" data-role="value"><option value="">any</option>${opts}</select>`;
    } else if (c.kind === "text") {
      div.innerHTML = `<label>${c.name}</label><input data-col="${c.name}" data-role="contains" placeholder="contains">`;
    } else if (c.kind === "time") {  // 2024, 2024-06 or 2024-06-01: "to" includes the whole period
      div.innerHTML = `<label>${c.name}</label><input data-col="${c.name}" data-role="from" placeholder="from 2024-06">
        &ndash;<input data-col="${c.name}" data-role="to" placeholder="to 2024-08">`;
    } else continue;
    box.appendChild(div);
  }
  if (all.some((c) => c.name === "latitude")) {
    const div = document.createElement("div");
    div.className = "filter";
    div.innerHTML = `<label title="taken within KM of a place (EXIF GPS)">near</label>
      <input class="wide" data-col="near" data-role="value" placeholder="lat,lon,km">`;
    box.appendChild(div);
  }
}

function filters() {
  const out = [];
  for (const el of $("filters").querySelectorAll("[data-col]")) {
    if (el.value === "") continue;
    const numeric = el.type === "number";
    out.push({ column: el.dataset.col, op: roles[el.dataset.role], value: numeric ? Number(el.value) : el.value });
  }
  return out.concat(facetFilters);
}
// The filter operators as the server defines them (GET /api/filters), so the page reads an address's filters
// as the CLI does; the longest first, so `>=` is not read as `>` and a value starting with `=`. `roles` names
// the operator each field (data-role) and facet chip writes: {value, null, from, to, contains}.
let operators = [];
let roles = {};
async function loadOperators() {
  const res = await fetch("/api/filters");
  if (!res.ok) return;
  const served = await res.json();
  operators = served.operators.filter((o) => o.cli).sort((a, b) => b.op.length - a.op.length);
  roles = served.roles;
}
const roleOf = (op) => Object.keys(roles).find((role) => roles[role] === op);
const escapeRegExp = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const takesNone = (op) => operators.some((o) => o.op === op && o.takes === "none");  // `COL is null`
// A filter as the CLI writes it (the address's filter=...), and back.
const filterText = (f) => takesNone(f.op) ? `${f.column} ${f.op}` : `${f.column}${f.op}${f.value}`;
function parseFilter(text) {
  for (const o of operators) {
    const none = o.takes === "none";
    const op = o.op.split(" ").map(escapeRegExp).join("\\s+");
    const m = text.match(new RegExp(none ? `^([A-Za-z_][A-Za-z0-9_]*)\\s+${op}$` : `^([A-Za-z_][A-Za-z0-9_]*)${op}(.*)$`,
                                    none ? "i" : "s"));
    if (m) return { column: m[1], op: o.op, value: none ? null : m[2] };
  }
  return null;
}
// "night, sunset:0.5" -> [{text: "night", weight: 1}, {text: "sunset", weight: 0.5}] (times sign)
function terms(text, sign) {
  return text.split(",").map((t) => t.trim()).filter(Boolean).map((t) => {
    const m = t.match(/^(.+):(\d+(?:\.\d*)?|\.\d+)$/);
    return m ? { text: m[1], weight: sign * Number(m[2]) } : { text: t, weight: sign };
  });
}
function allTerms() { return terms($("plus").value, 1).concat(terms($("minus").value, -1)); }
function minScore() { return $("min-score").value === "" ? null : Number($("min-score").value); }

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[ch]));
}

// The search as an address (?q=&image_id=&k=&w=&filter=col>=v...), so it can be bookmarked and shared.
// An uploaded file cannot travel in an address: such a search keeps the address it had.
function searchParams() {
  const params = new URLSearchParams();
  const text = $("text").value.trim();
  if (text) params.set("q", text);
  if (queryImageId) params.set("image_id", queryImageId);
  if ($("k").value !== "24") params.set("k", $("k").value);
  if (queryImageId && text) params.set("w", $("weight").value);
  if ($("plus").value.trim()) params.set("plus", $("plus").value.trim());
  if ($("minus").value.trim()) params.set("minus", $("minus").value.trim());
  if ($("min-score").value !== "") params.set("min_score", $("min-score").value);
  if ($("match").value !== "both") params.set("match", $("match").value);
  for (const f of filters()) params.append("filter", filterText(f));
  return params;
}

function restore(params) {
  $("text").value = params.get("q") || "";
  queryFile = null;
  queryImageId = params.get("image_id");
  setQueryImage(queryImageId ? `/api/images/${queryImageId}/file?size=thumb` : null);
  if (params.get("k")) {
    if (![...$("k").options].some((o) => o.value === params.get("k"))) $("k").add(new Option(params.get("k")));
    $("k").value = params.get("k");
  }
  if (params.get("w")) $("weight").value = params.get("w");
  $("plus").value = params.get("plus") || "";
  $("minus").value = params.get("minus") || "";
  $("min-score").value = params.get("min_score") || "";
  $("match").value = ["pictures", "words"].includes(params.get("match")) ? params.get("match") : "both";
  weights();
  for (const el of $("filters").querySelectorAll("[data-col]")) el.value = "";
  facetFilters = [];
  for (const text of params.getAll("filter")) {
    const f = parseFilter(text);
    if (!f) continue;
    const el = $("filters").querySelector(`[data-col="${f.column}"][data-role="${roleOf(f.op)}"]`);
    if (el && !el.value) el.value = f.value;
    else facetFilters.push(f);  // set by a facet click: shown as a removable chip
  }
  showActiveFilters();
  updateWeightRow();
  return Boolean(params.get("q") || params.get("image_id") || params.get("plus"));
}

// One page of the current search: the form as a JSON body, or a multipart form with the dropped file.
async function fetchPage(offset) {
  if (!restoreable()) {  // no query: the library, newest first, with its facets
    const params = new URLSearchParams({ k: $("k").value, offset });
    for (const f of filters()) params.append("filter", filterText(f));
    if (offset === 0) for (const c of facetColumns) params.append("facet", c);
    return fetch("/api/library?" + params.toString());
  }
  const text = $("text").value.trim();
  const request = { k: Number($("k").value), offset, filters: filters().map(filterText), terms: allTerms(),
                    min_score: minScore(), match: $("match").value,
                    facets: offset === 0 ? facetColumns : [] };
  if (queryFile) {
    const form = new FormData();
    form.append("image", queryFile);
    form.append("text", text);
    form.append("weights", JSON.stringify(weights()));
    for (const [key, value] of Object.entries(request)) {
      if (value !== null) form.append(key, typeof value === "number" ? value : JSON.stringify(value));
    }
    return fetch("/api/search", { method: "POST", body: form });
  }
  const body = { text: text || null, image_id: queryImageId, weights: weights(), ...request };
  return fetch("/api/search", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

async function search(push = true) {
  if (push && !queryFile) {
    const address = "?" + searchParams().toString();
    if (address !== location.search) history.pushState(null, "", address);
  }
  nextPage = null;
  $("status").className = "";
  $("status").textContent = "Searching…";
  const res = await fetchPage(0);
  const data = await res.json();
  if (!res.ok) {
    $("status").className = "error";
    $("status").textContent = data.error;
    $("results").innerHTML = "";
    $("facets").innerHTML = "";
    return;
  }
  render(data, false);
}

// The next page, when the end of the grid scrolls into view.
async function loadMore() {
  if (nextPage === null) return;
  const offset = nextPage;
  nextPage = null;  // one request at a time
  const res = await fetchPage(offset);
  const data = await res.json();
  if (res.ok) render(data, true);
}
new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting)) loadMore(); },
                         { rootMargin: "400px" }).observe($("more"));

function showActiveFilters() {
  const box = $("active-filters");
  box.innerHTML = "";
  facetFilters.forEach((f, i) => {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "chip";
    chip.title = "Remove this filter";
    chip.textContent = `${filterText(f)} ×`;
    chip.addEventListener("click", () => { facetFilters.splice(i, 1); showActiveFilters(); search(); });
    box.appendChild(chip);
  });
}

function renderFacets(facets) {
  const box = $("facets");
  box.innerHTML = "";
  for (const [column, counts] of Object.entries(facets || {})) {
    // one value for every match narrows nothing (a photo library's `media`, `codec`): shown only while chosen
    if (!counts.length || (counts.length === 1 && !facetFilters.some((f) => f.column === column))) continue;
    const div = document.createElement("div");
    div.className = "facet";
    div.innerHTML = `<span class="facet-name">${escapeHtml(column === "taken_at" ? "year taken" : column)}</span>`;
    for (const { value, count } of counts.slice(0, 12)) {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "chip";
      chip.innerHTML = `${escapeHtml(value === null || value === "" ? "(none)" : value)} <b>${count}</b>`;
      chip.addEventListener("click", () => {
        facetFilters = facetFilters.filter((f) => f.column !== column);
        facetFilters.push(value === null || value === "" ? { column, op: roles.null, value: null } : { column, op: roles.value, value });
        showActiveFilters();
        search();
      });
      div.appendChild(chip);
    }
    box.appendChild(div);
  }
}

function render(data, append) {
  const t = data.took_ms;
  const grid = $("results");
  if (!append) {
    grid.innerHTML = "";
    shown = new Set();
    renderFacets(data.facets);
  }
  nextPage = data.next_offset;
  if (data.facets && minScore() !== null) {  // with a min score, the facets count every match: their total
    total = Math.max(0, ...Object.values(data.facets).map((c) => c.reduce((n, v) => n + v.count, 0)));
  } else if (!append) total = null;
  const count = shown.size + data.results.length;
  const of = nextPage !== null && total ? ` of ${total}` : "";
  showNotice(data.model_notice);
  if (data.kind === "browse") {
    $("status").textContent = `Your library, newest first: ${count} images` +
      (nextPage === null ? "" : " so far; scroll for more") + ". Type a description, drop an image, or both to search.";
  } else {
    $("status").textContent = `${count}${of} results (${data.kind}, ${data.strategy}) in ` +
      `${t.total.toFixed(0)} ms ` + (t.cached ? "(the same search a moment ago: nothing stored has changed since)"
        : `(encode ${t.encode.toFixed(0)} ms, ClickHouse ${t.query.toFixed(0)} ms)`) +
      (nextPage === null ? "" : "; scroll for more");
  }
  const params = Object.fromEntries(Object.entries(data.sql.params).map(([k, v]) =>
    [k, Array.isArray(v) && v.length > 6 ? `[${v.slice(0, 4).map((x) => x.toFixed(4)).join(", ")}, … ${v.length} floats]` : v]));
  $("sql").textContent = data.sql.query + "\n\n-- parameters\n" + JSON.stringify(params, null, 2);
  $("sql-row").hidden = false;
  for (const r of data.results) {
    if (shown.has(r.id)) continue;
    shown.add(r.id);
    const card = document.createElement("div");
    card.className = "card";
    const chips = Object.entries(r).filter(([k, v]) => !CARD_SKIP.has(k) && v !== null && v !== "")
      .map(([k, v]) => `<span>${escapeHtml(k)}: ${escapeHtml(v)}</span>`).join("");
    const name = r.path.split("/").pop();
    // Why it matched: the query's words found per field, as small highlighted tags, and its ranks
    const why = r.match || { words: {} };
    const found = Object.entries(why.words || {}).map(([field, words]) =>
      `<mark class="word" title="found in the ${escapeHtml(FIELD_NAMES[field] || field)}">` +
      `${escapeHtml(field)}: ${words.map(escapeHtml).join(" ")}</mark>`).join("");
    const ranks = [why.picture_rank ? `picture #${why.picture_rank}` : "", why.word_rank ? `words #${why.word_rank}` : ""]
      .filter(Boolean).join(", ");
    // A video's moment: its frame as the thumbnail, marked with its time; a click plays the video from there
    // (the file route answers range requests, so the player seeks without reading the whole file).
    const video = r.media === "video";
    const href = video ? `/api/images/${r.id}/file#t=${r.start}` : `/api/images/${r.id}/file`;
    const badge = video ? `<span class="moment" title="a moment of a ${clock(r.duration || 0)} video">&#9654; ` +
      `${clock(r.start)}&ndash;${clock(r.end)}</span>` : "";
    card.innerHTML = `<div class="thumb"><a href="${href}" target="_blank">
        <img loading="lazy" src="/api/images/${r.id}/file?size=thumb" alt="${escapeHtml(name)}"></a>${badge}</div>
      <div class="meta">${r.score === null ? `<div class="date">${escapeHtml(dateOf(r))}</div>` :
        `<div class="score" title="${escapeHtml(ranks)}">${r.score.toFixed(3)}</div>`}<div title="${escapeHtml(r.path)}">${escapeHtml(name)}</div>
        <div>${r.width}&times;${r.height} ${escapeHtml(r.format)}${video ? ` video, ${clock(r.duration || 0)}` : ""}</div><div class="words">${found}</div><div class="chips">${chips}</div></div>
      <button type="button">More like this</button>`;
    if (video) {
      card.dataset.media = "video";
      card.querySelector(".thumb a").addEventListener("click", (event) => {
        event.preventDefault();
        const player = document.createElement("video");
        player.controls = true;
        player.autoplay = true;
        player.src = href;   // #t=START: the player starts at the moment
        card.querySelector(".thumb").replaceChildren(player);
      });
    }
    // Whether the thumbnail arrived: a broken one says so on the card (and tests read data-shown).
    const img = card.querySelector("img");
    img.addEventListener("load", () => { img.dataset.shown = img.naturalWidth > 0 ? "yes" : "no"; });
    img.addEventListener("error", () => { img.dataset.shown = "no"; card.classList.add("broken"); });
    // Which result a person opens from which search (search_clicks): the dashboard's click-through and
    // `clipsearch eval --from-clicks`. Kept in the store, sent nowhere else.
    const rank = shown.size;
    const opened = () => {
      if (!data.search_id) return;
      fetch("/api/click", { method: "POST", keepalive: true, headers: { "Content-Type": "application/json" },
                            body: JSON.stringify({ search_id: data.search_id, image_id: r.id, rank }) }).catch(() => {});
    };
    for (const ev of ["click", "auxclick"]) card.querySelector("a").addEventListener(ev, opened);   // a middle click opens too
    card.querySelector("button").addEventListener("click", () => {
      queryFile = null;
      queryImageId = r.id;
      $("text").value = "";  // a fresh "more like this" search, not mixed with the typed text
      setQueryImage(`/api/images/${r.id}/file?size=thumb`);
      search();
    });
    grid.appendChild(card);
  }
  // The observer speaks only when the end of the grid comes into view: if it is still in view, go on.
  if (nextPage !== null && $("more").getBoundingClientRect().top < innerHeight + 400) loadMore();
}

// The library's cards show when the picture is from: taken, else the file's time.
function dateOf(r) {
  const when = r.taken_at || r.modified_at;
  return when ? String(when).slice(0, 10) : "";
}
// The bundled model's warning (from the server: `model_notice`), above the grid while it applies.
function showNotice(text) {
  $("model-notice").textContent = text || "";
  $("model-notice").hidden = !text;
}

function useFile(file) {
  if (!file) return;
  queryFile = file;
  queryImageId = null;
  setQueryImage(URL.createObjectURL(file));
}

$("search-form").addEventListener("submit", (e) => { e.preventDefault(); search(); });
$("text").addEventListener("input", updateWeightRow);
$("min-score").addEventListener("change", () => { if (restoreable()) search(); });
$("match").addEventListener("change", () => { if (restoreable()) search(); });
$("weight").addEventListener("input", weights);
$("file").addEventListener("change", (e) => useFile(e.target.files[0]));
$("clear-image").addEventListener("click", () => { queryFile = null; queryImageId = null; setQueryImage(null); });
$("toggle-sql").addEventListener("click", () => {
  $("sql").hidden = !$("sql").hidden;
  $("toggle-sql").textContent = $("sql").hidden ? "Show SQL" : "Hide SQL";
});
for (const ev of ["dragenter", "dragover"]) $("drop").addEventListener(ev, (e) => { e.preventDefault(); $("drop").classList.add("over"); });
for (const ev of ["dragleave", "drop"]) $("drop").addEventListener(ev, (e) => { e.preventDefault(); $("drop").classList.remove("over"); });
$("drop").addEventListener("drop", (e) => useFile(e.dataTransfer.files[0]));

function restoreable() { return Boolean($("text").value.trim() || queryFile || queryImageId || allTerms().length); }

// The address runs its search on load (links, bookmarks, screenshots) and on back/forward.
window.addEventListener("popstate", () => {
  const params = new URLSearchParams(location.search);
  if (params.get("tab") && params.get("tab") !== "search") return;  // the SQL or Dashboard tab's address (console.js)
  restore(params);
  search(false);
});
(async () => {
  await Promise.all([loadColumns(), loadOperators()]);
  weights();
  restore(new URLSearchParams(location.search));
  search(false);  // the address's search, or the library when it has none (the notice shows on every tab)
})();
