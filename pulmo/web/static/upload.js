// The upload page: files chosen or dropped, sent to POST /api/studies with a progress bar (and
// the clinical data, when given); then the studies made, with links. Text from the labels.
"use strict";
(() => {
  const L = Pulmo.labels();
  const el = Pulmo.el;
  const fmt = (s, v) => s.replace(/\{(\w+)\}/g, (_, k) => (k in v ? String(v[k]) : ""));
  const form = document.getElementById("upload-form"), input = document.getElementById("files");
  const msg = document.getElementById("upload-msg"), bar = document.getElementById("upload-progress");
  const zone = document.getElementById("dropzone"), chosen = document.getElementById("chosen");
  let files = [];
  const say = (text, cls) => { msg.textContent = text; msg.className = cls || ""; };
  const show = () => {
    const mb = files.reduce((a, f) => a + f.size, 0) / 2 ** 20;
    chosen.textContent = files.length ? fmt(L.files, { n: files.length, mb: mb.toFixed(1) }) : "";
  };
  input.addEventListener("change", () => { files = [...input.files]; show(); say(""); });
  form.addEventListener("input", (e) => { if (e.target !== input) say(""); });
  for (const ev of ["dragenter", "dragover"]) zone.addEventListener(ev, e => { e.preventDefault(); zone.classList.add("over"); });
  for (const ev of ["dragleave", "drop"]) zone.addEventListener(ev, e => { e.preventDefault(); zone.classList.remove("over"); });
  zone.addEventListener("drop", e => { files = [...e.dataTransfer.files]; show(); say(""); });

  function clinical() {
    const box = document.getElementById("clinical");
    if (!box) return null;
    const out = {}, bad = [];
    for (const f of box.querySelectorAll("input, select")) {
      f.classList.remove("invalid");
      if (f.value === "") continue;
      const v = Number(f.value);
      if (!Number.isFinite(v) || (f.min !== "" && v < Number(f.min)) || (f.max !== "" && v > Number(f.max))) { f.classList.add("invalid"); bad.push(f); continue; }
      out[f.name] = v;
    }
    if (bad.length) { box.open = true; bad[0].focus(); throw new Error(L.check_values); }
    return Object.keys(out).length ? out : null;
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!files.length) { say(L.choose, "error"); return; }
    let features;
    try { features = clinical(); } catch (e) { say(e.message, "error"); return; }
    const total = files.reduce((a, f) => a + f.size, 0);
    if (total > L.max_mb * 2 ** 20) { say(fmt(L.too_big, { mb: L.max_mb }), "error"); return; }
    const data = new FormData();
    for (const f of files) data.append("file", f, f.name);
    if (features) data.append("clinical", JSON.stringify(features));
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/studies");
    xhr.setRequestHeader("X-CSRF-Token", Pulmo.csrf());
    xhr.upload.addEventListener("progress", e => { if (e.lengthComputable) bar.value = Math.round(100 * e.loaded / e.total); if (e.loaded === e.total) say(L.storing, "muted"); });
    xhr.addEventListener("load", () => {
      document.getElementById("upload-button").disabled = false;
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status === 401) { location.href = "/login?next=/upload"; return; }
      if (xhr.status < 200 || xhr.status >= 300) {
        const detail = body && (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
        say(`${L.failed} ${detail || xhr.statusText}`, "error"); bar.hidden = true; return;
      }
      say(L.done, "ok"); bar.value = 100;
      const items = (body.studies || []).map(s => el("li", {},
        el("a", { href: `/studies/${s.id}`, text: `${L.study} #${s.id}` }), " ",
        el("span", { class: "muted", text: fmt(L.stored, { n: s.new_instances }) })));
      const facts = [fmt(L.stored, { n: body.stored })];
      if (body.duplicates) facts.push(fmt(L.duplicates, { n: body.duplicates }));
      if (body.ignored && body.ignored.length) facts.push(fmt(L.ignored, { n: body.ignored.length }));
      document.getElementById("upload-result").replaceChildren(el("p", { id: "upload-facts", text: facts.join(" · ") }), el("ul", { class: "plain", id: "upload-studies" }, ...items));
      files = []; input.value = ""; show();
    });
    xhr.addEventListener("error", () => { document.getElementById("upload-button").disabled = false; say(`${L.failed} ${xhr.statusText || "network"}`, "error"); bar.hidden = true; });
    document.getElementById("upload-button").disabled = true;
    bar.hidden = false; bar.value = 0; say(L.uploading, "muted");
    xhr.send(data);
  });
})();
