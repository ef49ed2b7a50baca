// The triage calculator: the form (units, checks in the browser and the API's own messages), the
// results (probabilities with their interval, risk group, survival curve and feature contributions
// as inline SVG, classic scores), the CSV batch upload, and the link to a study's clinical data.
"use strict";
(() => {
  const L = Pulmo.labels();
  const D = JSON.parse(document.getElementById("triage-data").innerHTML);
  const el = Pulmo.el;
  const SVG = "http://www.w3.org/2000/svg";
  const form = document.getElementById("triage-form");
  const msg = document.getElementById("form-msg");
  const box = document.getElementById("results-body");
  const specs = [...D.fields.model.map(f => ({ ...f, model: true })), ...D.fields.scores.flatMap(g => g.fields)];
  const byName = Object.fromEntries(specs.map(f => [f.name, f]));
  const study = D.study && D.study.id ? D.study : null;
  let last = null;   // the last result shown (charts are redrawn at the new width)

  const fmt = (v, d = 1) => (v === null || v === undefined || Number.isNaN(v)) ? "–" : Number(v).toFixed(d);
  const pct = (v, d = 1) => (v === null || v === undefined) ? "–" : `${(100 * v).toFixed(d)} %`;
  const fill = (text, values) => text.replace(/\{(\w+)\}/g, (m, k) => (k in values ? values[k] : m));
  const tag = (cls, text) => el("span", { class: "tag " + cls, text });
  const label = (name) => (L.fields && L.fields[name]) || name;
  const svg = (tagName, attrs = {}, ...children) => {
    const e = document.createElementNS(SVG, tagName);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  };

  // ------------------------------------------------------------------ the form
  const input = (name) => form.elements[name];
  const unitSelect = (name) => form.querySelector(`select[data-unit-for="${name}"]`);

  function setRange(f) {
    // the input's min/max in the unit chosen (the model's other units convert; the scores' are fields of their own)
    const i = input(f.name), sel = unitSelect(f.name);
    if (!i || i.dataset.kind !== "number") return;
    let lo = f.min, hi = f.max;
    if (sel && sel.value) {
      const u = f.units.find(x => x.key === sel.value);
      if (u && u.factor) { lo = f.min === null ? null : f.min / u.factor; hi = f.max === null ? null : f.max / u.factor; }
      else if (u) { lo = u.min; hi = u.max; }
    }
    if (lo === null || lo === undefined) i.removeAttribute("min"); else i.min = +lo.toPrecision(6);
    if (hi === null || hi === undefined) i.removeAttribute("max"); else i.max = +hi.toPrecision(6);
  }

  function showError(name, text) {
    const i = input(name) || document.getElementById("f-" + name);
    const e = document.getElementById("err-" + name);
    if (i) i.setAttribute("aria-invalid", "true");
    if (e) { e.textContent = text; e.hidden = false; }
  }
  function clearErrors() {
    form.querySelectorAll("[aria-invalid]").forEach(i => i.removeAttribute("aria-invalid"));
    form.querySelectorAll(".field-error").forEach(e => { e.hidden = true; e.textContent = ""; });
    msg.textContent = ""; msg.className = "";
  }

  // The features to send: every field (empty = missing), in the model's and the scores' own names and units.
  function read() {
    const features = study ? { ...(study.extra || {}) } : {};
    const bad = [];
    for (const f of specs) {
      const i = input(f.name);
      if (!i) continue;
      const raw = i.value.trim();
      const sel = unitSelect(f.name);
      for (const u of f.units || []) delete features[u.key];
      if (raw === "") { features[f.name] = null; continue; }
      if (i.dataset.kind === "yesno") { features[f.name] = Number(raw); continue; }
      if (i.dataset.kind === "text") { features[f.name] = raw; continue; }
      const v = Number(raw);
      if (!Number.isFinite(v) || !i.checkValidity()) {
        const range = (i.min !== "" && i.max !== "") ? fill(L.out_of_range, { min: i.min, max: i.max }) : L.not_number;
        bad.push([f.name, range]);
        continue;
      }
      const u = sel && sel.value ? f.units.find(x => x.key === sel.value) : null;
      if (u && u.factor) features[f.name] = +(v * u.factor).toPrecision(10);
      else if (u) { delete features[f.name]; features[u.key] = v; }
      else features[f.name] = v;
    }
    return { features, bad };
  }

  function prefill(features) {
    for (const f of specs) {
      const i = input(f.name);
      if (!i) continue;
      const sel = unitSelect(f.name);
      let v = features[f.name], unit = "";
      for (const u of f.units || []) {
        if (!u.factor && features[u.key] !== null && features[u.key] !== undefined && (v === null || v === undefined)) { v = features[u.key]; unit = u.key; }
      }
      if (sel) { sel.value = unit; setRange(f); }
      if (v === null || v === undefined || v === "") { i.value = ""; continue; }
      if (i.dataset.kind === "yesno") {
        const s = String(v).trim().toLowerCase();
        i.value = ["1", "1.0", "yes", "y", "true", "t"].includes(s) ? "1" : (["0", "0.0", "no", "n", "false", "f"].includes(s) ? "0" : "");
      } else if (f.kind === "sex") {
        const s = String(v).trim().toLowerCase();
        i.value = s.startsWith("m") ? "male" : (s.startsWith("f") ? "female" : "");
      } else if (f.kind === "acvpu") {
        i.value = String(v).trim().slice(0, 1).toUpperCase();
      } else i.value = String(v);
    }
  }

  async function send(path, method, body) {
    const r = await fetch(path, {
      method, credentials: "same-origin", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", "X-CSRF-Token": Pulmo.csrf() },
    });
    if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); throw new Error("signed out"); }
    let j = null;
    try { j = await r.json(); } catch (e) { /* not JSON */ }
    if (!r.ok) {
      const detail = j && j.detail;
      const err = new Error(typeof detail === "string" ? detail : (Array.isArray(detail) ? detail.map(d => d.msg).join("; ") : r.statusText));
      err.status = r.status; err.fields = (j && j.fields) || {};
      throw err;
    }
    return j;
  }

  async function calculate(save) {
    clearErrors();
    const { features, bad } = read();
    if (bad.length) {
      for (const [name, text] of bad) showError(name, text);
      msg.textContent = L.check_values; msg.className = "error";
      input(bad[0][0]).focus();
      return;
    }
    msg.textContent = L.calculating; msg.className = "muted";
    try {
      const out = save ? await send(`/api/studies/${study.id}/clinical`, "PUT", features)
        : await send("/api/triage/predict", "POST", features);
      if (save) { study.extra = Object.fromEntries(Object.entries(features).filter(([k]) => !byName[k])); }
      msg.textContent = save ? L.saved : ""; msg.className = save ? "ok" : "";
      show(out);
      if (window.matchMedia("(max-width: 999px)").matches) document.getElementById("triage-results").scrollIntoView({ behavior: "smooth", block: "start" });
    } catch (e) {
      for (const [name, text] of Object.entries(e.fields || {})) if (name !== "_") showError(name, text);
      msg.textContent = e.message; msg.className = "error";
      const first = Object.keys(e.fields || {}).find(n => input(n));
      if (first) input(first).focus();
    }
  }

  // ------------------------------------------------------------------ results
  function table(head, rows, cls = "") {
    return el("div", { class: "table-wrap" }, el("table", { class: "data " + cls },
      el("thead", {}, el("tr", {}, ...head.map(h => el("th", { text: h })))), el("tbody", {}, ...rows)));
  }
  const td = (text, cls) => el("td", cls ? { class: cls, text } : { text });

  function show(out) {
    last = out;
    const parts = [];
    const p = out.prediction;
    if (p && !p.error) {
      parts.push(el("p", { class: "risk-line" }, L.risk_group + ": ",
        p.risk_group ? tag("risk-" + p.risk_group + " big", L[p.risk_group] || p.risk_group) : "–"));
      parts.push(table([L.horizon, L.probability, L.interval], (p.probabilities || []).map(q => el("tr", {},
        td(fill(L.days, { n: fmt(q.days, 0) })), td(pct(q.value), "num"),
        td(q.low === q.high ? "–" : `${pct(q.low)} – ${pct(q.high)}`, "num"))), "probs"));
      if (p.imputed && p.imputed.length) parts.push(el("p", { class: "muted small", text: `${L.imputed}: ${p.imputed.map(label).join(L.list_sep)}` }));
      for (const w of p.warnings || []) parts.push(el("p", { class: "warn small", text: w }));
      if (p.survival_curve && p.survival_curve.length) {
        parts.push(el("h3", { text: L.curve_title }));
        parts.push(el("div", { class: "chart", id: "curve" }));
        parts.push(el("p", { class: "muted small", text: L.curve_note }));
      }
      if (p.contributions && Object.keys(p.contributions).length) {
        parts.push(el("h3", { text: L.contrib_title }));
        parts.push(el("div", { class: "chart", id: "contributions" }));
        parts.push(el("p", { class: "muted small", text: `${L.contrib_note} ${L.score_final}: ${fmt(p.score_final, 2)}.` }));
      }
    } else if (p && p.error) {
      parts.push(el("p", { class: "error", text: `${L.not_scored} ${p.error}` }));
    } else {
      parts.push(el("p", { class: "note", id: "no-model-result", text: L.no_model_result }));
    }
    parts.push(el("h3", { text: L.scores_title }));
    parts.push(scoresTable(out.scores || {}));
    box.replaceChildren(...parts);
    box.dataset.state = p && !p.error ? "model" : "scores";
    drawCharts();
  }

  function missingCell(missing) {
    if (!missing.length) return ["–"];
    const names = missing.map(m => m.split(" or ").map(label).join(" / "));
    if (names.length <= 3) return [`${L.not_computable} ${names.join(L.list_sep)}`];
    return [el("details", { class: "missing" }, el("summary", { text: fill(L.missing_n, { n: names.length }) }),
      el("span", { text: names.join(L.list_sep) }))];
  }

  function scoresTable(scores) {
    if (scores.error) return el("p", { class: "error", text: `${L.score_error} ${scores.error}` });
    const rows = Object.entries(scores).filter(([, s]) => s && s.title).map(([key, s]) => {
      const band = s.band ? el("td", {}, tag("band", L[s.band] || s.band),
        s.band_text ? el("div", { class: "muted small", text: (L.band_texts && L.band_texts[s.band_text]) || s.band_text }) : null)
        : el("td", { class: "muted small" }, ...missingCell(s.missing || []));
      return el("tr", { "data-score": key }, td(s.title), td(s.total === null || s.total === undefined ? "–" : String(s.total), "num"),
        band, td(s.mortality || "–", "num"));
    });
    const warnings = Object.values(scores).flatMap(s => (s && s.warnings) || []);
    const uniq = [...new Set(warnings)];
    const t = table([L.score, L.points, L.band, L.mortality], rows, "scores");
    return uniq.length ? el("div", {}, t, ...uniq.map(w => el("p", { class: "warn small", text: w }))) : t;
  }

  // Survival curve (as the probability of critical illness by day) with the interval band, the risk cut-offs.
  function drawCurve(host, p) {
    const pts = p.survival_curve.filter(r => r.prob_critical !== null);
    const W = Math.max(280, Math.min(host.clientWidth || 560, 760)), H = W < 420 ? 210 : 250;
    const m = { l: 46, r: 14, t: 12, b: 34 };
    const days = pts[pts.length - 1].day;
    const model = D.model || {};
    const top = Math.max(...pts.map(r => r.prob_critical_high ?? r.prob_critical), 0.001);
    const steps = [0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1];
    const ymax = steps.find(s => s >= top * 1.12) || 1;
    const x = d => m.l + (W - m.l - m.r) * d / days, y = v => m.t + (H - m.t - m.b) * (1 - Math.min(v, ymax) / ymax);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": fill(L.curve_label, { n: days }), class: "curve" },
      svg("title", {}, fill(L.curve_label, { n: days })));
    const tick = ymax / 5;
    for (let k = 0; k <= 5; k++) {
      const v = tick * k;
      root.append(svg("line", { x1: m.l, x2: W - m.r, y1: y(v), y2: y(v), class: "grid" }));
      root.append(svg("text", { x: m.l - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, `${+(100 * v).toFixed(tick < 0.01 ? 1 : 0)}%`));
    }
    for (let d = 0; d <= days; d += days > 15 ? 5 : 1) {
      root.append(svg("line", { x1: x(d), x2: x(d), y1: H - m.b, y2: H - m.b + 4, class: "axis-line" }));
      root.append(svg("text", { x: x(d), y: H - m.b + 17, "text-anchor": "middle", class: "axis" }, String(d)));
    }
    root.append(svg("text", { x: W - m.r, y: H - 3, "text-anchor": "end", class: "axis" }, L.day));
    // step paths: a value holds until the next day's
    const step = (key) => pts.map((r, i) => (i === 0 ? `M${x(r.day)},${y(r[key] ?? r.prob_critical)}` : `H${x(r.day)}V${y(r[key] ?? r.prob_critical)}`)).join("");
    const hasBand = pts.some(r => r.prob_critical_high !== r.prob_critical_low);
    if (hasBand) {
      // the step curves of the interval's bounds: each value holds until the next day
      const edge = (key) => pts.flatMap((r, i) => (i + 1 < pts.length ? [[x(r.day), y(r[key])], [x(pts[i + 1].day), y(r[key])]] : [[x(r.day), y(r[key])]]));
      const poly = [...edge("prob_critical_high"), ...edge("prob_critical_low").reverse()];
      root.append(svg("path", { d: "M" + poly.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join("L") + "Z", class: "band" }));
    }
    for (const [key, cls, text] of [["risk_low_max", "cut low", L.cutoff_low], ["risk_high_min", "cut high", L.cutoff_high]]) {
      const v = model[key];
      if (v === undefined || v > ymax) continue;
      root.append(svg("line", { x1: m.l, x2: W - m.r, y1: y(v), y2: y(v), class: cls }));
      root.append(svg("text", { x: m.l + 4, y: y(v) - 4, class: "axis " + cls }, `${text} ${pct(v)}`));
    }
    root.append(svg("path", { d: step("prob_critical"), class: "line" }));
    for (const q of p.probabilities || []) {
      if (q.days > days) continue;
      root.append(svg("circle", { cx: x(q.days), cy: y(q.value), r: 4, class: "dot" }, svg("title", {}, `${fill(L.days, { n: fmt(q.days, 0) })}: ${pct(q.value)}`)));
      root.append(svg("text", { x: Math.min(x(q.days), W - m.r - 20), y: y(q.value) - 8, "text-anchor": "middle", class: "value" }, pct(q.value)));
    }
    host.replaceChildren(root);
  }

  // Contributions to the risk score: one bar per feature, from zero; red raises the risk, green lowers it.
  function drawContributions(host, p) {
    const items = Object.entries(p.contributions).filter(([, v]) => v !== null).sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]));
    const W = Math.max(280, Math.min(host.clientWidth || 560, 760));
    const rowH = 24, m = { t: 6, b: 22 };
    const labelW = Math.min(150, Math.round(W * 0.36));
    const H = m.t + m.b + rowH * items.length;
    const span = Math.max(...items.map(([, v]) => Math.abs(v)), 0.05) * 1.25;
    const plotL = labelW + 6, plotR = W - 8;
    const zero = (plotL + plotR) / 2;
    const x = v => zero + (plotR - plotL) / 2 * v / span;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": L.contrib_label, class: "contrib" },
      svg("title", {}, L.contrib_label));
    const names = [];
    root.append(svg("line", { x1: zero, x2: zero, y1: m.t, y2: H - m.b + 4, class: "axis-line" }));
    items.forEach(([name, v], i) => {
      const yc = m.t + rowH * i + rowH / 2;
      const g = svg("g", { class: v >= 0 ? "up" : "down", "data-feature": name },
        svg("title", {}, `${label(name)}: ${v >= 0 ? "+" : ""}${v.toFixed(3)}`));
      const nameText = svg("text", { x: labelW, y: yc + 4, "text-anchor": "end", class: "axis name" }, label(name));
      g.append(nameText);
      names.push(nameText);
      const x0 = Math.min(x(0), x(v)), w = Math.max(1, Math.abs(x(v) - x(0)));
      g.append(svg("rect", { x: x0, y: yc - 8, width: w, height: 16, rx: 2 }));
      const inside = w > 44;
      g.append(svg("text", { x: v >= 0 ? (inside ? x(v) - 4 : x(v) + 4) : (inside ? x(v) + 4 : x(v) - 4), y: yc + 4,
        "text-anchor": (v >= 0) === inside ? "end" : "start", class: "value" + (inside ? " inside" : "") }, `${v >= 0 ? "+" : "−"}${Math.abs(v).toFixed(2)}`));
      root.append(g);
    });
    root.append(svg("text", { x: zero, y: H - 6, "text-anchor": "middle", class: "axis" }, "0"));
    host.replaceChildren(root);
    for (const t of names) fitText(t, labelW - 2);
  }

  // A label wider than its room: its abbreviation in brackets when it has one, else cut with "…".
  function fitText(t, room) {
    if (t.getComputedTextLength() <= room) return;
    const full = t.textContent, abbr = full.match(/[（(]([^）)]+)[）)]\s*$/);
    if (abbr) { t.textContent = abbr[1]; if (t.getComputedTextLength() <= room) return; }
    let s = full;
    while (s.length > 1 && t.getComputedTextLength() > room) { s = s.slice(0, -1); t.textContent = s + "…"; }
  }

  function drawCharts() {
    const p = last && last.prediction;
    if (!p || p.error) return;
    const c = document.getElementById("curve"), k = document.getElementById("contributions");
    if (c) drawCurve(c, p);
    if (k) drawContributions(k, p);
  }
  let resizeTimer = null;
  window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(drawCharts, 150); });

  // ------------------------------------------------------------------ batch (CSV)
  function parseCSV(text, limit = 12) {
    const rows = []; let row = [], cell = "", q = false;
    for (let i = 0; i < text.length && rows.length < limit; i++) {
      const ch = text[i];
      if (q) { if (ch === '"') { if (text[i + 1] === '"') { cell += '"'; i++; } else q = false; } else cell += ch; }
      else if (ch === '"') q = true;
      else if (ch === ",") { row.push(cell); cell = ""; }
      else if (ch === "\n") { row.push(cell.replace(/\r$/, "")); rows.push(row); row = []; cell = ""; }
      else cell += ch;
    }
    if ((cell || row.length) && rows.length < limit) { row.push(cell); rows.push(row); }
    return rows;
  }

  function preview(text) {
    const rows = parseCSV(text);
    const host = document.getElementById("batch-preview");
    if (rows.length < 2) { host.replaceChildren(); return; }
    const head = rows[0];
    const want = ["patient_id", "prob_critical_5d", "prob_critical_10d", "prob_critical_30d", "risk_group",
      "curb65_points", "crb65_points", "qsofa_points", "news2_points", "psi_band", "isaric4c_points", "error"];
    const cols = want.map(c => head.indexOf(c)).filter(i => i >= 0);
    const names = { patient_id: L.row, error: L.error, risk_group: L.risk_group };
    const title = (c) => names[c] || c.replace(/^prob_critical_(\d+)d$/, (m, n) => fill(L.days, { n })).replace(/_points$/, "").replace(/_band$/, "");
    const cell = (c, v) => /^prob_critical_\d+d$/.test(c) && v !== "" ? pct(Number(v)) : (c === "risk_group" ? (L[v] || v) : v);
    host.replaceChildren(el("h3", { text: L.preview }), table(cols.map(i => title(head[i])),
      rows.slice(1).map(r => el("tr", {}, ...cols.map(i => td(cell(head[i], r[i] ?? ""))))), "batch"));
  }

  let batchUrl = null;
  document.getElementById("batch-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const file = document.getElementById("batch-file").files[0];
    const bm = document.getElementById("batch-msg"), link = document.getElementById("batch-download");
    link.hidden = true;
    if (!file) { bm.textContent = L.choose_file; bm.className = "error"; return; }
    bm.textContent = L.uploading; bm.className = "muted";
    const body = new FormData();
    body.append("file", file);
    try {
      const r = await Pulmo.api("/api/triage/batch", { method: "POST", body });
      const text = await r.text();
      if (batchUrl) URL.revokeObjectURL(batchUrl);
      batchUrl = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
      link.href = batchUrl;
      link.download = file.name.replace(/\.csv$/i, "") + "-" + L.copy_of + ".csv";
      link.hidden = false;
      bm.textContent = fill(L.rows_done, { rows: r.headers.get("X-Pulmo-Rows") || "?", failed: r.headers.get("X-Pulmo-Failed") || "0" });
      bm.className = "ok";
      preview(text);
    } catch (e) { bm.textContent = e.message; bm.className = "error"; document.getElementById("batch-preview").replaceChildren(); }
  });
  document.getElementById("batch-template").addEventListener("click", (ev) => {
    const cols = ["patient_id", ...D.fields.model.map(f => f.name), "respiratory_rate", "systolic_bp", "diastolic_bp",
      "urea_mmol_l", "confusion"];
    const example = ["example-1", "66", "1", "1", "2", "0", "0", "7.5", "410", "", "150", "24", "118", "72", "6.5", "0"];
    const order = ["patient_id", "age", "xray_abnormality", "dyspnea", "comorbidities", "malignancy", "copd", "nlr", "ldh", "direct_bilirubin", "creatine_kinase"];
    const row = cols.map(c => { const i = order.indexOf(c); return i >= 0 ? example[i] : example[11 + ["respiratory_rate", "systolic_bp", "diastolic_bp", "urea_mmol_l", "confusion"].indexOf(c)]; });
    const a = ev.currentTarget;
    a.href = URL.createObjectURL(new Blob([cols.join(",") + "\n" + row.join(",") + "\n"], { type: "text/csv" }));
    a.download = "triage-template.csv";
  });

  // ------------------------------------------------------------------ wiring
  for (const f of specs) {
    const sel = unitSelect(f.name);
    if (sel) sel.addEventListener("change", () => { setRange(f); });
  }
  const neut = document.getElementById("f-neutrophils"), lymph = document.getElementById("f-lymphocytes");
  const counts = () => {
    const n = Number(neut.value), l = Number(lymph.value);
    if (neut.value !== "" && lymph.value !== "" && n >= 0 && l > 0) input("nlr").value = String(+(n / l).toFixed(2));
  };
  if (neut && lymph) { neut.addEventListener("input", counts); lymph.addEventListener("input", counts); }
  form.addEventListener("input", (ev) => {
    const name = ev.target.name;
    if (name && ev.target.getAttribute("aria-invalid")) {
      ev.target.removeAttribute("aria-invalid");
      const e = document.getElementById("err-" + name);
      if (e) e.hidden = true;
    }
  });
  form.addEventListener("submit", (ev) => { ev.preventDefault(); calculate(false); });
  const save = document.getElementById("save-study");
  if (save) save.addEventListener("click", () => calculate(true));
  document.getElementById("clear").addEventListener("click", () => {
    form.reset(); clearErrors();
    for (const f of specs) setRange(f);
    last = null;
    box.replaceChildren(el("p", { class: "muted", text: L.enter_values }));
  });

  for (const f of specs) setRange(f);
  if (study) {
    prefill(study.features || {});
    if (study.triage) show(study.triage);
  }
  document.body.dataset.ready = "1";
})();
