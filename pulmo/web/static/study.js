// The study page: status with live refresh, the viewer (viewer.js), the report panel (findings per
// lung and region, key images, comparison with the earlier study, impression, triage and the
// clinical data form). Everything comes from the JSON API; text from the page's labels.
"use strict";
(() => {
  const L = Pulmo.labels();
  const el = Pulmo.el;
  const data = JSON.parse(document.getElementById("study-data").content.textContent);
  let study = data.study;
  const id = study.id;
  const api = data.api || `/api/studies/${id}`;   // a share link's page reads /api/share/{token}
  let viewer = null, pollTimer = null;
  const tr = (s) => (s && L.names && L.names[s]) || s;
  const fmt = (v, d = 1) => (v === null || v === undefined || Number.isNaN(Number(v))) ? "–" : Number(v).toFixed(d);
  const signed = (v, d = 1) => (v === null || v === undefined) ? "–" : (v > 0 ? "+" : v < 0 ? "−" : "±") + Math.abs(Number(v)).toFixed(d);
  const pct = (v) => (v === null || v === undefined) ? "–" : (100 * v).toFixed(1) + " %";
  const tag = (cls, text) => el("span", { class: "tag " + cls, text });
  const table = (head, rows, cls = "data") => el("div", { class: "table-wrap" }, el("table", { class: cls },
    el("thead", {}, el("tr", {}, ...head.map(h => el("th", { text: h })))),
    el("tbody", {}, ...rows)));
  const td = (text, cls) => el("td", cls ? { class: cls, text } : { text });
  const num = (text) => td(text, "num");
  const date = (d) => (d && d.length === 8) ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}` : (d || "–");

  // ---------------------------------------------------------------- status and live refresh
  function showStatus() {
    const s = document.getElementById("status");
    s.className = "tag status-" + study.status;
    s.textContent = L[study.status] || study.status;
    const line = document.getElementById("status-line");
    line.textContent = study.status === "queued" ? L.waiting : study.status === "running" ? L.analysing : "";
    const err = document.getElementById("error");
    err.hidden = study.status !== "failed";
    err.textContent = study.status === "failed" ? `${L.failed_text} ${study.error || ""}` : "";
    document.body.dataset.status = study.status;
  }

  async function poll() {
    clearTimeout(pollTimer);
    try {
      const s = await Pulmo.json(`${api}/status`);
      if (s.status !== study.status) {
        if (s.status === "done") {
          study = await Pulmo.json(api);
          showStatus();
          renderAll();
          return;
        }
        study.status = s.status; study.error = s.error;
        showStatus();
      }
    } catch (e) { /* a network hiccup: try again */ }
    if (study.status === "queued" || study.status === "running") pollTimer = setTimeout(poll, 2000);
  }

  // ---------------------------------------------------------------- findings
  function renderFindings() {
    const box = document.getElementById("findings-body");
    const q = study.results && study.results.quantification;
    if (!q) {
      box.replaceChildren(el("p", { class: "muted", text: study.status === "failed" ? L.no_results : L.results_later }));
      return;
    }
    const pn = q.pneumonia || {}, sev = q.severity || {};
    const flag = pn.flag === true ? "positive" : pn.flag === false ? "negative" : pn.flag ? String(pn.flag) : "";
    const summary = el("dl", { class: "summary" },
      el("div", {}, el("dt", { text: L.pneumonia_flag }), el("dd", {}, flag ? tag("flag-" + flag, L[flag] || flag) : "–",
        pn.score !== undefined ? el("span", { class: "muted", text: ` ${fmt(pn.score, 2)} % (${L.threshold} ${fmt(pn.threshold, 1)} %)` }) : null)),
      el("div", {}, el("dt", { text: L.severity }), el("dd", {},
        el("strong", { text: sev.value === null || sev.value === undefined ? "–" : `${sev.value} / ${sev.max}` }),
        sev.name ? el("div", { class: "muted small", text: tr(sev.name) }) : null,
        sev.reason ? el("div", { class: "muted small", text: sev.reason }) : null)),
      el("div", {}, el("dt", { text: L.percent_involved }), el("dd", {}, el("strong", { text: fmt(q.lungs.total.percent_involved, 2) + " %" }))),
    );
    const note = pn.note ? el("p", { class: "muted small flag-note", text: tr(pn.note) }) : null;
    const rows = [];
    const line = (name, st, score, cls) => el("tr", cls ? { class: cls } : {}, td(name), num(fmt(st.volume_ml, 0)),
      num(fmt(st.lesion_ml, 1)), num(fmt(st.percent_involved, 2)), num(fmt(st.ggo_ml, 1)), num(fmt(st.consolidation_ml, 1)),
      num(score === null || score === undefined ? "–" : String(score)));
    const regions = q.regions || [];
    for (const [side, name] of [["right", L.right_lung], ["left", L.left_lung]]) {
      const own = regions.filter(r => (r.name || "").startsWith(side));
      const score = own.length && own.every(r => r.score !== null && r.score !== undefined) ? own.reduce((a, r) => a + r.score, 0) : null;
      rows.push(line(name, q.lungs[side], score, "lung"));
      for (const r of own) rows.push(line("\u2003" + tr(r.name), r, r.score, "region"));
    }
    rows.push(line(L.both_lungs, q.lungs.total, sev.value, "total"));
    const tbl = table([L.region, L.volume_ml, L.lesion_ml, L.percent_short, L.ggo_ml, L.consolidation_ml, L.score], rows, "data findings-table");
    const parts = [summary, note, tbl];
    const cov = q.coverage || {};
    if (cov.complete === false) parts.push(el("p", { class: "warn", text: L.partial_coverage }));
    const nodules = q.nodules || [];
    parts.push(el("h3", { text: `${L.nodules} (${nodules.length})` }));
    if (nodules.length) {
      parts.push(table([L.number, L.kind, L.diameter_mm, L.volume_ml, L.mean_hu, L.location, ""], nodules.map(n => el("tr", {},
        td(String(n.number)), td(L[n.kind] || n.kind), num(fmt(n.diameter_mm, 1)), num(fmt(n.volume_ml, 2)), num(fmt(n.mean_hu, 0)),
        td(tr(n.region) || (n.lung === "right" ? L.right_lung : L.left_lung)),
        el("td", {}, goto(n)))), "data nodules-table"));
    } else parts.push(el("p", { class: "muted", text: L.none_found }));
    const warns = study.results.warnings || [];
    if (warns.length) {
      parts.push(el("h3", { text: L.warnings }));
      parts.push(el("ul", { class: "warnings" }, ...warns.map(w => el("li", { text: w.message || w.code || String(w) }))));
    }
    box.replaceChildren(...parts.filter(Boolean));
  }

  function goto(n) {
    const c = n.centre_index_zyx || [];
    return el("button", { type: "button", class: "link-button", text: L.go_to_slice, "data-z": c[0], onclick: () => {
      if (viewer) viewer.goTo(c[0], c[1]);
    } });
  }

  function renderNoduleList(meta) {
    const box = document.getElementById("viewer-nodules");
    const list = meta.nodules || [];
    if (!list.length) { box.replaceChildren(); return; }
    box.replaceChildren(el("h3", { text: L.nodules }), el("ul", { class: "nodule-list" }, ...list.map(n => el("li", {},
      el("span", { class: "swatch sw-nodules" }),
      `${L.nodule} ${n.number}${n.kind === "mass" ? " (" + L.mass + ")" : ""}: ${fmt(n.diameter_mm, 1)} mm` +
        (n.region ? `, ${tr(n.region)} ` : " "), goto(n)))));
  }

  // ---------------------------------------------------------------- key images
  function renderKeyImages() {
    const sec = document.getElementById("key-images");
    if (study.status !== "done") { sec.hidden = true; return; }
    sec.hidden = false;
    const box = document.getElementById("key-body");
    const fig = (view, title) => el("figure", {}, el("img", { src: `${api}/key-image.png?view=${view}`, alt: title, loading: "lazy" }),
      el("figcaption", { text: title }));
    box.replaceChildren(fig("axial", L.axial), fig("coronal", L.coronal), el("p", { class: "muted small", id: "key-caption" }));
    Pulmo.json(`${api}/key-slices`).then(k => {
      const cap = document.getElementById("key-caption");
      if (cap) cap.textContent = tr(k.caption);
    }).catch(() => {});
  }

  // ---------------------------------------------------------------- comparison
  let comparisonTries = 0;
  async function loadComparison() {
    const sec = document.getElementById("comparison"), box = document.getElementById("comparison-body");
    if (study.status !== "done" || data.share) { sec.hidden = true; return; }   // a share link shows one study only
    let c;
    try { c = await Pulmo.json(`${api}/comparison`); } catch (e) { sec.hidden = true; return; }
    sec.dataset.status = c.status;
    if (c.status === "none") { sec.hidden = true; return; }
    sec.hidden = false;
    const prior = c.prior || {};
    const priorName = `${L.study_of} ${date(prior.study_date)}`;
    const priorRef = prior.openable ? el("a", { href: `/studies/${prior.id}`, text: priorName }) : document.createTextNode(priorName);
    if (c.status === "pending") {
      box.replaceChildren(el("p", { class: "muted" }, L.comparison_pending + " ", priorRef));
      if (comparisonTries++ < 60) setTimeout(loadComparison, 5000);
      return;
    }
    if (c.status === "failed") {
      box.replaceChildren(el("p", {}, L.compared_with + " ", priorRef), el("p", { class: "error", text: `${L.comparison_failed} ${c.error || ""}` }));
      return;
    }
    const [before, now] = [c.time_points[c.time_points.length - 2], c.time_points[c.time_points.length - 1]];
    const v = c.verdict || {};
    const vt = (x) => x ? tag("verdict-" + x, L[x] || x) : "–";
    const row = (name, b, n, d, verdict, cls) => el("tr", cls ? { class: cls } : {}, td(name), num(fmt(b && b.lesion_ml, 1)),
      num(fmt(n && n.lesion_ml, 1)), num(signed(d && d.lesion_ml, 1)), num(signed(d && d.percent_involved, 2)), el("td", {}, vt(verdict)));
    const rows = [];
    for (const [side, name] of [["right", L.right_lung], ["left", L.left_lung]]) {
      rows.push(row(name, before.lungs[side], now.lungs[side], c.change.lungs[side], v.lungs && v.lungs[side], "lung"));
      for (const r of Object.keys(c.change.regions || {}).filter(k => k.startsWith(side))) {
        rows.push(row("\u2003" + tr(r), before.regions[r], now.regions[r], c.change.regions[r], v.regions && v.regions[r], "region"));
      }
    }
    rows.push(row(L.both_lungs, before.lungs.total, now.lungs.total, c.change.lungs.total, v.overall, "total"));
    const parts = [
      el("p", {}, L.compared_with + " ", priorRef, ` (${date(prior.study_date)} → ${date(study.study_date)})`),
      el("p", { class: "verdict" }, L.overall + ": ", vt(v.overall)),
      el("p", { class: "muted small wide-only", text: L.lesion_volume }),
      table([L.region, L.before_ml, L.now_ml, L.change_ml, L.change_pct, L.verdict], rows, "data comparison-table"),
    ];
    const tx = c.transitions_ml || {};
    const moved = Object.entries(tx).filter(([, ml]) => ml > 0);
    if (moved.length) parts.push(el("p", { class: "muted small", text: moved.map(([k, ml]) => `${tr(k)}: ${fmt(ml, 1)} mL`).join(" · ") }));
    if (v.thresholds) parts.push(el("p", { class: "muted small", text: L.verdict_rule.replace("{ml}", fmt(v.thresholds.stable_ml, 0)).replace("{pct}", fmt(100 * v.thresholds.stable_fraction, 0)) }));
    for (const w of c.warnings || []) parts.push(el("p", { class: "warn small", text: w.message || w.code }));
    box.replaceChildren(...parts);
  }

  // ---------------------------------------------------------------- report (impression, signing, PDF)
  async function loadReport() {
    const box = document.getElementById("report-body");
    let r;
    try { r = await Pulmo.json(`${api}/report`); } catch (e) {
      box.replaceChildren(el("p", { class: "muted", text: e.status === 404 || e.status === 405 ? L.report_unavailable : `${L.report_error} ${e.message}` }),
        el("p", { class: "statement", text: L.research_tool }));
      box.dataset.state = "unavailable";
      return;
    }
    renderReport(r);
  }

  function renderReport(r) {
    const box = document.getElementById("report-body");
    box.dataset.state = r.status;
    const draft = r.status !== "signed";
    if (data.share) {   // a share link's holder reads the signed report only
      box.replaceChildren(el("p", {}, el("strong", { text: L.impression }), " ", draft ? tag("report-draft", L.not_signed_yet) : tag("report-signed", L.signed)),
        draft ? el("p", { class: "muted", text: L.report_not_signed }) : el("p", { id: "impression", class: "impression-text", text: r.impression }),
        draft ? "" : el("div", { class: "row form-actions" }, el("a", { href: `${api}/report.pdf`, class: "button", id: "report-pdf", text: L.pdf })),
        el("p", { class: "statement", text: L.research_tool }));
      return;
    }
    const text = el("textarea", { id: "impression", rows: "6", "aria-label": L.impression, maxlength: "20000" });
    text.value = r.impression || "";
    text.readOnly = !(r.can_edit && draft);
    const msg = el("span", { id: "report-msg", role: "status" });
    const act = async (fn, done) => {
      msg.textContent = ""; msg.className = "";
      try { await reloadReport(done, await fn()); } catch (e) {
        msg.textContent = e.message; msg.className = "error";
      }
    };
    const save = () => Pulmo.api(`${api}/report`, { method: "PUT", json: { impression: text.value } });
    const buttons = [];
    if (r.can_edit && draft) buttons.push(el("button", { type: "button", id: "report-save", text: L.save, onclick: () => act(save, L.saved) }));
    if (r.can_sign && draft) buttons.push(el("button", { type: "button", id: "report-sign", class: "primary", text: L.sign, onclick: () => act(async () => {
      if (r.can_edit && text.value !== (r.impression || "")) await save();
      return Pulmo.api(`${api}/report/sign`, { method: "POST" });
    }, L.signed_msg) }));
    const canAmend = r.can_amend !== undefined ? r.can_amend : (data.own && data.role === "radiologist");
    if (!draft && canAmend) buttons.push(el("button", { type: "button", id: "report-amend", text: L.amend, onclick: () => act(
      () => Pulmo.api(`${api}/report/amend`, { method: "POST" }), L.amended) }));
    buttons.push(el("a", { href: `${api}/report.pdf`, class: "button", id: "report-pdf", text: L.pdf }));
    const state = draft ? tag("report-draft", L.draft) : tag("report-signed", L.signed);
    const who = r.signed_by ? el("span", { class: "muted small", text: ` ${L.signed_by} ${r.signed_by}${r.signed_at ? " · " + new Date(r.signed_at).toLocaleString(document.documentElement.lang) : ""}` }) : null;
    box.replaceChildren(el("p", {}, el("label", { for: "impression", text: L.impression }), " ", state, who), text,
      el("div", { class: "row form-actions" }, ...buttons, msg), el("p", { class: "statement", text: L.research_tool }));
  }

  // Show the report as the last answer gave it (the API answers with the report), else read it again.
  async function reloadReport(done, response) {
    let r = null;
    if (response) { try { r = await response.json(); } catch (e) { r = null; } }
    if (!r || typeof r.status !== "string" || !("impression" in r)) r = await Pulmo.json(`${api}/report`);
    renderReport(r);
    const m = document.getElementById("report-msg");
    if (m && done) { m.textContent = done; m.className = "ok"; }
  }

  // ---------------------------------------------------------------- triage and clinical data
  function renderTriage() {
    const box = document.getElementById("triage-body");
    if (!box) return;   // not on a share link's page
    const c = study.clinical;
    if (!c || !c.triage) {
      box.replaceChildren(el("p", { class: "muted", text: data.can_clinical ? L.no_clinical_enter : L.no_clinical }));
      return;
    }
    const t = c.triage, p = t.prediction, parts = [];
    if (p && !p.error) {
      parts.push(el("p", {}, L.risk_group + ": ", p.risk_group ? tag("risk-" + p.risk_group, L[p.risk_group] || p.risk_group) : "–"));
      parts.push(table([L.horizon, L.probability, L.interval], (p.probabilities || []).map(q => el("tr", {},
        td(L.days.replace("{n}", fmt(q.days, 0))), num(pct(q.value)), num(q.low === q.high ? "–" : `${pct(q.low)} – ${pct(q.high)}`)))));
      if (p.imputed && p.imputed.length) parts.push(el("p", { class: "muted small", text: `${L.imputed}: ${p.imputed.join(", ")}` }));
      for (const w of p.warnings || []) parts.push(el("p", { class: "warn small", text: w }));
    } else if (p && p.error) {
      parts.push(el("p", { class: "error", text: `${L.not_scored} ${p.error}` }));
    } else {
      parts.push(el("p", { class: "muted", text: L.no_model }));
    }
    const scores = Object.values(t.scores || {}).filter(s => s && s.title);
    if (scores.length) {
      parts.push(el("h3", { text: L.classic_scores }));
      const cell = (s) => {
        if (s.mortality !== null && s.mortality !== undefined) return String(s.mortality);
        return s.missing && s.missing.length ? `${L.missing}: ${s.missing.length}` : "–";
      };
      parts.push(table([L.score_name, L.total, L.band, L.mortality], scores.map(s => el("tr", {}, td(s.title),
        num(s.total === null || s.total === undefined ? "–" : String(s.total)), td(s.band || "–"), td(cell(s))))));
    }
    parts.push(el("p", { class: "small" }, el("a", { href: `/triage?study=${id}`, text: L.open_calculator })));
    box.replaceChildren(...parts);
  }

  function bindClinical() {
    const form = document.getElementById("clinical-form");
    if (!form) return;
    const fields = data.clinical_fields;
    const fill = () => {
      const f = (study.clinical && study.clinical.features) || {};
      for (const d of fields) {
        const v = f[d.name];
        form.elements[d.name].value = v === null || v === undefined ? "" : (d.kind === "yes/no" ? String(Number(Boolean(Number(v)))) : String(v));
      }
    };
    fill();
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const msg = document.getElementById("clinical-msg");
      msg.textContent = ""; msg.className = "";
      const features = { ...((study.clinical && study.clinical.features) || {}) };
      const bad = [];
      for (const d of fields) {
        const input = form.elements[d.name], raw = input.value.trim();
        input.removeAttribute("aria-invalid");
        if (raw === "") { features[d.name] = null; continue; }
        const v = Number(raw);
        if (!Number.isFinite(v) || v < Number(d.min) || v > Number(d.max)) { bad.push(input); input.setAttribute("aria-invalid", "true"); continue; }
        features[d.name] = v;
      }
      if (bad.length) { msg.textContent = L.check_values; msg.className = "error"; bad[0].focus(); return; }
      try {
        const result = await Pulmo.json(`${api}/clinical`, { method: "PUT", json: features });
        study.clinical = { features, triage: result };
        renderTriage();
        msg.textContent = L.saved; msg.className = "ok";
      } catch (e) { msg.textContent = e.message; msg.className = "error"; }
    });
  }

  // ---------------------------------------------------------------- viewer
  async function startViewer() {
    if (viewer || study.status !== "done") return;
    const root = document.getElementById("viewer");
    let meta, key = null;
    try {
      [meta, key] = await Promise.all([Pulmo.json(`${api}/viewer`),
        Pulmo.json(`${api}/key-slices`).catch(() => null)]);
    } catch (e) {
      document.getElementById("viewer-wait").textContent = `${L.no_images} ${e.message}`;
      return;
    }
    document.getElementById("viewer-wait").hidden = true;
    root.hidden = false;
    const regionsLabel = document.getElementById("regions-label");
    if (regionsLabel && meta.region_kind === "lobes") regionsLabel.textContent = L.lobes;
    else if (regionsLabel && meta.region_kind === "zones") regionsLabel.textContent = L.zones;
    viewer = PulmoViewer.create(root, { studyId: id, base: `${api}/viewer`, meta, labels: L,
      start: { axial: meta.key_slice, coronal: key ? key.coronal : undefined } });
    renderNoduleList(meta);
    window.pulmoViewer = viewer;   // for tests and the console
    root.dataset.ready = "1";
  }

  function renderAll() {
    renderFindings();
    renderKeyImages();
    renderTriage();
    loadComparison();
    startViewer();
  }

  showStatus();
  renderAll();
  loadReport();
  bindClinical();
  if (study.status === "queued" || study.status === "running") pollTimer = setTimeout(poll, 1500);
})();
