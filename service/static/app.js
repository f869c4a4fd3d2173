// clipsearch page: builds a search request from the form, renders the ranked grid.
"use strict";
const $ = (id) => document.getElementById(id);
const HIDDEN_COLUMNS = new Set(["id", "path", "model", "loaded_at", "modified_at", "embedding", "camera", "taken_at"]);
const CARD_SKIP = new Set(["id", "path", "score", "model", "loaded_at", "modified_at", "file_size", "format", "camera",
                           "taken_at", "width", "height"]);
let queryFile = null;     // an uploaded query image
let queryImageId = null;  // "more like this": a stored image as the query
let columns = [];

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
  columns = (await res.json()).columns.filter((c) => !HIDDEN_COLUMNS.has(c.name));
  const box = $("filters");
  box.innerHTML = "";
  for (const c of columns) {
    const div = document.createElement("div");
    div.className = "filter";
    if (c.kind === "number") {
      div.innerHTML = `<label>${c.name}</label><input data-col="${c.name}" data-op=">=" type="number" placeholder="min ${c.min ?? ""}">
        &ndash;<input data-col="${c.name}" data-op="<=" type="number" placeholder="max ${c.max ?? ""}">`;
    } else if (c.kind === "text" && c.values) {
      const opts = c.values.map((v) => `<option>${escapeHtml(v)}</option>`).join("");
      div.innerHTML = `<label>${c.name}</label><select data-col="${c.name}" data-op="="><option value="">any</option>${opts}</select>`;
    } else if (c.kind === "text") {
      div.innerHTML = `<label>${c.name}</label><input data-col="${c.name}" data-op="=" placeholder="equals">`;
    } else continue;
    box.appendChild(div);
  }
}

function filters() {
  const out = [];
  for (const el of $("filters").querySelectorAll("[data-col]")) {
    if (el.value === "") continue;
    const numeric = el.type === "number";
    out.push({ column: el.dataset.col, op: el.dataset.op, value: numeric ? Number(el.value) : el.value });
  }
  return out;
}

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
  for (const f of filters()) params.append("filter", `${f.column}${f.op}${f.value}`);
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
  weights();
  for (const el of $("filters").querySelectorAll("[data-col]")) el.value = "";
  for (const f of params.getAll("filter")) {
    const m = f.match(/^([A-Za-z_][A-Za-z0-9_]*)(>=|<=|=)(.*)$/);
    const el = m && $("filters").querySelector(`[data-col="${m[1]}"][data-op="${m[2]}"]`);
    if (el) el.value = m[3];
  }
  updateWeightRow();
  return Boolean(params.get("q") || params.get("image_id"));
}

async function search() {
  if (!queryFile) {
    const address = "?" + searchParams().toString();
    if (address !== location.search) history.pushState(null, "", address);
  }
  const text = $("text").value.trim();
  const k = Number($("k").value);
  let res;
  $("status").className = "";
  $("status").textContent = "Searching…";
  if (queryFile) {
    const form = new FormData();
    form.append("image", queryFile);
    form.append("text", text);
    form.append("k", k);
    form.append("filters", JSON.stringify(filters()));
    form.append("weights", JSON.stringify(weights()));
    res = await fetch("/api/search", { method: "POST", body: form });
  } else {
    const body = { text: text || null, image_id: queryImageId, k, filters: filters(), weights: weights() };
    res = await fetch("/api/search", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  }
  const data = await res.json();
  if (!res.ok) {
    $("status").className = "error";
    $("status").textContent = data.error;
    $("results").innerHTML = "";
    return;
  }
  render(data);
}

function render(data) {
  const t = data.took_ms;
  $("status").textContent = `${data.results.length} results (${data.kind}, ${data.strategy}) in ${t.total.toFixed(0)} ms ` +
    `(encode ${t.encode.toFixed(0)} ms, ClickHouse ${t.query.toFixed(0)} ms)`;
  const params = Object.fromEntries(Object.entries(data.sql.params).map(([k, v]) =>
    [k, Array.isArray(v) && v.length > 6 ? `[${v.slice(0, 4).map((x) => x.toFixed(4)).join(", ")}, … ${v.length} floats]` : v]));
  $("sql").textContent = data.sql.query + "\n\n-- parameters\n" + JSON.stringify(params, null, 2);
  $("sql-row").hidden = false;
  const grid = $("results");
  grid.innerHTML = "";
  for (const r of data.results) {
    const card = document.createElement("div");
    card.className = "card";
    const chips = Object.entries(r).filter(([k, v]) => !CARD_SKIP.has(k) && v !== null && v !== "")
      .map(([k, v]) => `<span>${escapeHtml(k)}: ${escapeHtml(v)}</span>`).join("");
    const name = r.path.split("/").pop();
    card.innerHTML = `<div class="thumb"><a href="/api/images/${r.id}/file" target="_blank">
        <img loading="lazy" src="/api/images/${r.id}/file?size=thumb" alt="${escapeHtml(name)}"></a></div>
      <div class="meta"><div class="score">${r.score.toFixed(3)}</div><div title="${escapeHtml(r.path)}">${escapeHtml(name)}</div>
        <div>${r.width}&times;${r.height} ${escapeHtml(r.format)}</div><div class="chips">${chips}</div></div>
      <button type="button">More like this</button>`;
    card.querySelector("button").addEventListener("click", () => {
      queryFile = null;
      queryImageId = r.id;
      $("text").value = "";  // a fresh "more like this" search, not mixed with the typed text
      setQueryImage(`/api/images/${r.id}/file?size=thumb`);
      search();
    });
    grid.appendChild(card);
  }
}

function useFile(file) {
  if (!file) return;
  queryFile = file;
  queryImageId = null;
  setQueryImage(URL.createObjectURL(file));
}

$("search-form").addEventListener("submit", (e) => { e.preventDefault(); search(); });
$("text").addEventListener("input", updateWeightRow);
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

// The address runs its search on load (links, bookmarks, screenshots) and on back/forward.
window.addEventListener("popstate", () => {
  const params = new URLSearchParams(location.search);
  if (params.get("tab") && params.get("tab") !== "search") return;  // the SQL or Dashboard tab's address (console.js)
  if (restore(params)) search();
});
(async () => {
  await loadColumns();
  weights();
  if (restore(new URLSearchParams(location.search))) search();
})();
