// clipsearch page: the SQL and Dashboard tabs. Every query runs through POST /api/sql (a read-only
// session); every value from a result reaches the page as text (textContent), never as HTML.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const TABS = ["search", "sql", "dashboard"];
  const PLACEHOLDER = /\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*([^{}]+?)\s*\}/g;
  const COLOURS = ["#2d6cdf", "#e8833a", "#3aa76d", "#c7423a", "#8e5bd0", "#d4a82a", "#4fb3c4", "#7a8597"];
  const MAX_CELL = 300;          // characters of a value shown in a cell (the CSV has all of it)
  const MAX_ADDRESS_SQL = 6000;  // longer SQL is not copied into the address bar
  const MAX_BARS = 10;           // bars in a horizontal bar chart (the SQL tab shows every row)
  const HOURLY_DAYS = 14;        // the per-hour charts show the last days of the log
  let shipped = null;            // [{name, sql, description, params}] from /api/queries
  let shippedLoading = null;
  let loadedName = null;         // the shipped query in the editor, while its text is unchanged
  const paramValues = {};        // placeholder name -> the value typed for it
  let searchAddress = "";        // the Search tab's address, restored when going back to it
  let dashboardDrawn = false;
  let charts = [];

  // -- tabs ------------------------------------------------------------------------------------
  function tabFrom(params) {
    const tab = params.get("tab") || location.hash.replace(/^#/, "");
    return TABS.includes(tab) ? tab : "search";
  }
  let currentTab = null;
  function showTab(tab) {
    currentTab = tab;
    for (const t of TABS) {
      $(`view-${t}`).hidden = t !== tab;
      const link = $(`tab-link-${t}`);
      link.classList.toggle("active", t === tab);
      link.setAttribute("aria-selected", String(t === tab));
    }
    $("search-controls").hidden = tab !== "search";
    document.body.dataset.tab = tab;
    if (tab === "sql") openSql(new URLSearchParams(location.search));
    if (tab === "dashboard" && !dashboardDrawn) drawDashboard();
  }
  for (const link of document.querySelectorAll("#tabs a")) {
    link.addEventListener("click", (e) => {
      if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;  // a new window: let the link do it
      e.preventDefault();
      const tab = link.dataset.tab;
      if (tab === currentTab) return;
      if (currentTab === "search") searchAddress = location.search;
      const address = tab === "search" ? (searchAddress || location.pathname) : `?tab=${tab}`;
      history.pushState(null, "", address);
      showTab(tab);
    });
  }
  window.addEventListener("popstate", () => showTab(tabFrom(new URLSearchParams(location.search))));

  // -- the SQL tab -----------------------------------------------------------------------------
  async function loadShipped() {
    if (shipped) return shipped;
    shippedLoading = shippedLoading || fetch("/api/queries").then((r) => r.json()).then((d) => {
      shipped = d.queries || [];
      PANELS = (d.dashboard || []).map(fromDefinition);
      return shipped;
    });
    return shippedLoading;
  }

  async function openSql(params) {
    const queries = await loadShipped();
    if (!$("queries").childElementCount) listQueries(queries);
    const name = params.get("query");
    const sql = params.get("sql");
    const given = {};
    for (const [key, value] of params) if (key.startsWith("param_")) given[key.slice(6)] = value;
    Object.assign(paramValues, given);
    if (name && queries.some((q) => q.name === name)) {
      if (loadedName !== name || $("sql-input").value.trim() === "") loadQuery(queries.find((q) => q.name === name), false);
    } else if (sql !== null && sql !== $("sql-input").value) {
      $("sql-input").value = sql;
      loadedName = null;
      renderParams();
    } else {
      renderParams();
      return;
    }
    if (placeholders($("sql-input").value).every(([p]) => (paramValues[p] ?? "") !== "")) run();
  }

  function listQueries(queries) {
    const list = $("queries");
    list.textContent = "";
    for (const q of queries) {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "query";
      button.dataset.name = q.name;
      const title = document.createElement("span");
      title.className = "name";
      title.textContent = q.name.replace(/\.sql$/, "");
      const about = document.createElement("span");
      about.className = "about";
      about.textContent = q.description.split(/(?<=\?)\s/)[0];
      button.title = q.description;
      button.append(title, about);
      if (q.params.length) {
        const p = document.createElement("span");
        p.className = "takes";
        p.textContent = "takes " + q.params.map((x) => x.name).join(", ");
        button.append(p);
      }
      button.addEventListener("click", () => {
        loadQuery(q, true);
        if (!q.params.length || q.params.every((p) => (paramValues[p.name] ?? "") !== "")) run();
        else $("sql-params").querySelector("input")?.focus();
      });
      item.append(button);
      list.append(item);
    }
  }

  function loadQuery(q, push) {
    $("sql-input").value = q.sql;
    loadedName = q.name;
    for (const b of $("queries").querySelectorAll("button")) b.classList.toggle("active", b.dataset.name === q.name);
    renderParams();
    if (push) history.pushState(null, "", `?tab=sql&query=${encodeURIComponent(q.name)}`);
  }

  function placeholders(sql) {
    const found = new Map();
    for (const m of sql.matchAll(PLACEHOLDER)) if (!found.has(m[1])) found.set(m[1], m[2]);
    return [...found];
  }

  function renderParams() {
    const box = $("sql-params");
    const wanted = placeholders($("sql-input").value);
    const key = wanted.map(([n, t]) => `${n}:${t}`).join(",");
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    box.textContent = "";
    for (const [name, type] of wanted) {
      const label = document.createElement("label");
      label.className = "param";
      const text = document.createElement("span");
      text.textContent = name;
      const input = document.createElement("input");
      input.dataset.param = name;
      input.placeholder = type;
      input.title = `{${name}:${type}}, bound by ClickHouse`;
      input.value = paramValues[name] ?? "";
      input.addEventListener("input", () => { paramValues[name] = input.value; });
      input.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); run(); } });
      label.append(text, input);
      box.append(label);
    }
  }

  function request(format) {
    const params = {};
    for (const [name] of placeholders($("sql-input").value)) {
      if ((paramValues[name] ?? "") !== "") params[name] = paramValues[name];
    }
    return { sql: $("sql-input").value, params, format };
  }

  function setStatus(id, text, error) {
    $(id).textContent = text;
    $(id).className = error ? "error" : "";
  }

  function rememberAddress(body) {
    if (currentTab !== "sql") return;
    const shippedQuery = loadedName && shipped.find((q) => q.name === loadedName);
    const address = new URLSearchParams({ tab: "sql" });
    if (shippedQuery && shippedQuery.sql === body.sql) address.set("query", loadedName);
    else if (body.sql.length <= MAX_ADDRESS_SQL) address.set("sql", body.sql);
    for (const [name, value] of Object.entries(body.params)) address.set(`param_${name}`, value);
    const next = "?" + address.toString();
    if (next !== location.search) history.replaceState(null, "", next);
  }

  let running = 0;
  async function run() {
    const body = request("json");
    if (!body.sql.trim()) { setStatus("sql-status", "Write a query first.", true); return; }
    const ticket = ++running;
    setStatus("sql-status", "Running…");
    $("sql-run").disabled = true;
    let res, data;
    try {
      res = await fetch("/api/sql", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      data = await res.json();
    } catch (err) {
      data = { error: `the request failed: ${err}` };
    } finally {
      $("sql-run").disabled = false;
    }
    if (ticket !== running) return;  // a newer run answers
    rememberAddress(body);
    if (!res || !res.ok) {
      setStatus("sql-status", data.error || `HTTP ${res && res.status}`, true);
      $("sql-result").textContent = "";
      $("sql-result").dataset.state = "error";
      return;
    }
    const shown = data.truncated ? `, showing the first ${data.rows.length}` : "";
    setStatus("sql-status", `${data.row_count} ${data.row_count === 1 ? "row" : "rows"} in ${data.elapsed_ms.toFixed(0)} ms${shown}` +
      (data.rows_read ? ` (ClickHouse read ${data.rows_read.toLocaleString("en")} rows)` : ""));
    renderTable(data);
  }

  function cellText(value) {
    if (value === null) return null;
    if (typeof value === "object") {
      if (Array.isArray(value) && value.length > 8) {
        return `[${value.slice(0, 4).map((v) => (typeof v === "number" ? +v.toFixed(4) : JSON.stringify(v))).join(", ")}, … ${value.length} values]`;
      }
      return JSON.stringify(value);
    }
    return String(value);
  }

  function renderTable(data) {
    const box = $("sql-result");
    box.textContent = "";
    box.dataset.state = "ok";
    box.dataset.rows = String(data.row_count);
    const table = document.createElement("table");
    table.id = "sql-table";
    const head = table.createTHead().insertRow();
    for (const c of data.columns) {
      const th = document.createElement("th");
      const name = document.createElement("span");
      name.textContent = c.name;
      const type = document.createElement("span");
      type.className = "type";
      type.textContent = c.type;
      th.append(name, type);
      head.append(th);
    }
    const numeric = data.columns.map((c) => /^(Nullable\()?(U?Int|Float|Decimal)/.test(c.type));
    const body = table.createTBody();
    for (const row of data.rows) {
      const tr = body.insertRow();
      row.forEach((value, i) => {
        const td = tr.insertCell();
        const text = cellText(value);
        if (text === null) {
          td.textContent = "NULL";
          td.className = "null";
        } else {
          td.textContent = text.length > MAX_CELL ? text.slice(0, MAX_CELL) + "…" : text;
          if (text.length > MAX_CELL) td.title = text.slice(0, 5000);
          if (numeric[i]) td.className = "num";
        }
      });
    }
    box.append(table);
  }

  async function downloadCsv() {
    const body = request("csv");
    if (!body.sql.trim()) { setStatus("sql-status", "Write a query first.", true); return; }
    setStatus("sql-status", "Preparing the CSV…");
    const res = await fetch("/api/sql", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    if (!res.ok) {
      setStatus("sql-status", (await res.json()).error, true);
      return;
    }
    const blob = await res.blob();
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = `${(loadedName || "query").replace(/\.sql$/, "")}.csv`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    setStatus("sql-status", `Downloaded ${a.download} (${blob.size.toLocaleString("en")} bytes).`);
  }

  $("sql-run").addEventListener("click", run);
  $("sql-csv").addEventListener("click", downloadCsv);
  $("sql-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); }
  });
  $("sql-input").addEventListener("input", () => {
    if (loadedName) {
      const q = shipped && shipped.find((x) => x.name === loadedName);
      if (!q || q.sql !== $("sql-input").value) {
        loadedName = null;
        for (const b of $("queries").querySelectorAll("button.active")) b.classList.remove("active");
      }
    }
    renderParams();
  });

  // -- the Dashboard tab -----------------------------------------------------------------------
  // One chart per panel, each drawn from a file of sql/queries (what /api/queries lists); a panel whose
  // query fails (e.g. no `category` column) shows the error small and the others still draw.
  // The panels come from sql/dashboard.json (GET /api/queries), which the compose Grafana dashboard is
  // written from too: one definition for both.
  let PANELS = [];
  const LABELS = { "search with filters": zeroResultLabel, month: (r) => String(r.month).slice(0, 7) };
  function fromDefinition(p) {
    const columns = Object.keys(p.y);
    return { file: p.file, title: p.title, kind: p.chart, x: p.label ? LABELS[p.label] : p.x, y: columns[0],
             series: p.series, lines: p.series ? undefined : p.y };
  }

  function zeroResultLabel(r) {
    let filters = "";
    try {
      filters = JSON.parse(r.filters || "[]").map((f) => (Array.isArray(f) ? f.join(" ") : JSON.stringify(f))).join(", ");
    } catch (err) {
      filters = String(r.filters);
    }
    return [r.text || "(image search)", filters && `[${filters}]`].filter(Boolean).join(" ");
  }

  let chartLibrary = null;
  function loadChartLibrary() {
    chartLibrary = chartLibrary || new Promise((resolve, reject) => {
      if (window.Chart) { resolve(window.Chart); return; }
      const script = document.createElement("script");
      script.src = "/static/vendor/chart.umd.min.js";
      script.onload = () => resolve(window.Chart);
      script.onerror = () => reject(new Error("the chart library did not load"));
      document.head.append(script);
    });
    return chartLibrary;
  }

  async function drawDashboard() {
    dashboardDrawn = true;
    document.body.dataset.dashboard = "loading";
    setStatus("dashboard-status", "Running the panels' queries…");
    const start = performance.now();
    for (const c of charts) c.destroy();
    charts = [];
    const box = $("panels");
    box.textContent = "";
    let Chart, queries;
    try {
      [Chart, queries] = await Promise.all([loadChartLibrary(), loadShipped()]);
    } catch (err) {
      setStatus("dashboard-status", String(err.message || err), true);
      document.body.dataset.dashboard = "error";
      return;
    }
    document.body.dataset.chartjs = Chart.version;
    const results = await Promise.all(PANELS.map(async (panel) => {
      const figure = panelFigure(panel, queries.find((q) => q.name === panel.file));
      box.append(figure);
      const query = queries.find((q) => q.name === panel.file);
      if (!query) return showNote(figure, `${panel.file} is not in sql/queries`, "error");
      try {
        const res = await fetch("/api/sql", { method: "POST", headers: { "Content-Type": "application/json" },
                                              body: JSON.stringify({ sql: query.sql, max_rows: 100000 }) });
        const data = await res.json();
        if (!res.ok) return showNote(figure, data.error, "error");
        const rows = data.rows.map((r) => Object.fromEntries(data.columns.map((c, i) => [c.name, r[i]])));
        if (!rows.length) return showNote(figure, "No data yet.", "empty");
        drawPanel(Chart, figure, panel, rows);
        return "drawn";
      } catch (err) {
        return showNote(figure, String(err.message || err), "error");
      }
    }));
    const failed = results.filter((r) => r === "error").length;
    setStatus("dashboard-status", `${PANELS.length} panels from sql/queries in ${((performance.now() - start) / 1000).toFixed(1)} s` +
      (failed ? `; ${failed} could not run (see the panel)` : ""));
    document.body.dataset.dashboard = "ready";
  }

  function panelFigure(panel, query) {
    const figure = document.createElement("figure");
    figure.className = "panel";
    figure.dataset.file = panel.file;
    figure.dataset.state = "loading";
    const caption = document.createElement("figcaption");
    const title = document.createElement("h3");
    title.textContent = panel.title;
    const source = document.createElement("a");
    source.className = "source";
    source.href = `?tab=sql&query=${encodeURIComponent(panel.file)}`;
    source.textContent = panel.file;
    source.title = (query && query.description) || "";
    caption.append(title, source);
    const chartBox = document.createElement("div");
    chartBox.className = "chart-box";
    figure.append(caption, chartBox);
    return figure;
  }

  function showNote(figure, text, state) {
    figure.dataset.state = state;
    const note = document.createElement("p");
    note.className = `note ${state}`;
    note.textContent = text;
    figure.querySelector(".chart-box").replaceWith(note);
    return state;
  }

  const value = (row, key) => (typeof key === "function" ? key(row) : row[key]);
  const shortLabel = (s) => { const t = s === null || s === undefined ? "(none)" : String(s); return t.length > 40 ? t.slice(0, 39) + "…" : t; };

  // "YYYY-MM-DD HH:MM:SS" hours from the first to the last, so hours without searches show as such.
  const hourOf = (s) => Date.UTC(+s.slice(0, 4), +s.slice(5, 7) - 1, +s.slice(8, 10), +s.slice(11, 13));
  function hoursBetween(labels) {
    const times = labels.map(hourOf).filter((t) => !Number.isNaN(t));
    if (!times.length || times.length !== labels.length) return [...new Set(labels)].sort();
    const [first, last] = times.reduce(([lo, hi], t) => [Math.min(lo, t), Math.max(hi, t)], [Infinity, -Infinity]);
    const out = [];
    for (let t = first; t <= last; t += 3600000) out.push(new Date(t).toISOString().replace("T", " ").slice(0, 19));
    return out;
  }

  function drawPanel(Chart, figure, panel, rows) {
    const canvas = document.createElement("canvas");
    canvas.setAttribute("role", "img");
    const chartBox = figure.querySelector(".chart-box");
    chartBox.append(canvas);
    let config;
    if (panel.kind === "hourly") {
      const last = rows.reduce((hi, r) => Math.max(hi, hourOf(String(r[panel.x]))), -Infinity);
      const recent = rows.filter((r) => !(hourOf(String(r[panel.x])) < last - HOURLY_DAYS * 86400000));
      if (recent.length < rows.length) {
        const more = document.createElement("span");
        more.className = "more";
        more.textContent = `the last ${HOURLY_DAYS} days`;
        figure.querySelector("figcaption h3").append(more);
        rows = recent;
      }
      const hours = hoursBetween(rows.map((r) => String(r[panel.x])));
      const labels = hours.map((h) => h.slice(5, 16));
      let datasets;
      if (panel.series) {
        const names = [...new Set(rows.map((r) => String(r[panel.series])))].sort();
        datasets = names.map((name) => {
          const byHour = new Map(rows.filter((r) => String(r[panel.series]) === name).map((r) => [String(r[panel.x]), r[panel.y]]));
          return { label: name, data: hours.map((h) => byHour.get(h) ?? 0) };
        });
      } else {
        const byHour = new Map(rows.map((r) => [String(r[panel.x]), r]));
        datasets = Object.entries(panel.lines).map(([column, label]) =>
          ({ label, data: hours.map((h) => (byHour.has(h) ? byHour.get(h)[column] : null)) }));
      }
      datasets.forEach((d, i) => Object.assign(d, { borderColor: COLOURS[i % COLOURS.length], backgroundColor: COLOURS[i % COLOURS.length],
                                                    pointRadius: hours.length > 48 ? 0 : 2, tension: 0.2, spanGaps: false }));
      config = { type: "line", data: { labels, datasets },
                 options: { scales: { y: { beginAtZero: true }, x: { ticks: { maxRotation: 0, autoSkipPadding: 14 } } },
                            plugins: { legend: { position: "bottom", labels: { boxWidth: 14 } } } } };
    } else {
      const horizontal = panel.kind === "hbar";
      const shown = horizontal ? rows.slice(0, MAX_BARS) : rows;
      if (shown.length < rows.length) {
        const more = document.createElement("span");
        more.className = "more";
        more.textContent = `the first ${shown.length} of ${rows.length}`;
        figure.querySelector("figcaption h3").append(more);
      }
      const labels = shown.map((r) => shortLabel(value(r, panel.x)));
      config = { type: "bar", data: { labels, datasets: [{ label: panel.y, data: shown.map((r) => r[panel.y]),
                                                         backgroundColor: COLOURS[PANELS.indexOf(panel) % COLOURS.length], maxBarThickness: 36 }] },
                 options: { indexAxis: horizontal ? "y" : "x", plugins: { legend: { display: false } },
                            scales: { [horizontal ? "x" : "y"]: { beginAtZero: true, ticks: { precision: 0 } } } } };
    }
    config.options.animation = false;
    config.options.responsive = true;
    config.options.maintainAspectRatio = false;
    charts.push(new Chart(canvas, config));
    const summary = `${panel.title}: ${rows.length} ${rows.length === 1 ? "row" : "rows"}`;
    canvas.setAttribute("aria-label", summary);
    canvas.textContent = summary;
    figure.dataset.state = "drawn";
    figure.dataset.rows = String(rows.length);
  }

  $("dashboard-refresh").addEventListener("click", drawDashboard);

  showTab(tabFrom(new URLSearchParams(location.search)));
})();
