// The administration page: platform status, users, the triage model, the audit log. All data
// through the JSON API; all text from the page's labels; values shown as text, never markup.
"use strict";
(() => {
  const L = Pulmo.labels();
  const el = Pulmo.el;
  const fmt = (s, v) => s.replace(/\{(\w+)\}/g, (_, k) => (k in v ? String(v[k]) : ""));
  const say = (node, text, cls) => { node.textContent = text; node.className = cls || ""; };

  // ------------------------------------------------------------ health
  async function loadHealth() {
    const list = document.getElementById("health-list");
    try {
      const h = await Pulmo.json("/api/health");
      list.replaceChildren(...h.checks.map(c => el("li", { class: "check", "data-ok": String(c.ok) },
        el("span", { class: "tag " + (c.ok ? "status-done" : "status-failed"), text: c.ok ? L.ok : L.problem }),
        el("strong", { text: c.name }), el("span", { class: "muted", text: c.detail }))));
      document.getElementById("health").dataset.ok = String(h.ok);
    } catch (e) { list.replaceChildren(el("li", { class: "error", text: e.message })); }
  }
  document.getElementById("health-refresh").addEventListener("click", loadHealth);

  // ------------------------------------------------------------ users
  function roleSelect(u, change) {
    const sel = el("select", { class: "small-button", "aria-label": `${L.change_role}: ${u.username}` },
      ...["admin", "radiologist", "clinician"].map(r => { const o = el("option", { value: r, text: L[r] || r }); if (r === u.role) o.selected = true; return o; }));
    sel.addEventListener("change", () => {
      if (confirm(fmt(L.confirm_role, { user: u.username, role: L[sel.value] || sel.value }))) change(u, { role: sel.value });
      else sel.value = u.role;
    });
    return sel;
  }

  async function loadUsers() {
    const body = document.querySelector("#users-table tbody");
    let users;
    try { users = await Pulmo.json("/api/users"); } catch (e) { body.replaceChildren(el("tr", {}, el("td", { colspan: 5, class: "error", text: e.message }))); return; }
    const change = async (u, patch, msg) => {
      try { await Pulmo.api(`/api/users/${u.id}`, { method: "PATCH", json: patch }); await loadUsers(); say(document.getElementById("user-msg"), msg || L.saved, "ok"); }
      catch (e) { say(document.getElementById("user-msg"), `${u.username}: ${e.message}`, "error"); }
    };
    body.replaceChildren(...users.map(u => el("tr", { "data-user": u.username },
      el("td", { text: u.username }), el("td", { text: L[u.role] || u.role }), el("td", { text: u.organisation }),
      el("td", {}, el("span", { class: "tag " + (u.active ? "status-done" : "status-failed"), text: u.active ? L.active : L.inactive })),
      el("td", { class: "actions" },
        el("button", { type: "button", class: "small-button", "data-act": "toggle", text: u.active ? L.deactivate : L.activate, onclick: () => {
          if (!u.active || confirm(fmt(L.confirm_deactivate, { user: u.username }))) change(u, { active: !u.active });
        } }),
        roleSelect(u, change),
        el("button", { type: "button", class: "small-button", text: L.new_password, onclick: () => {
          const pw = prompt(fmt(L.password_prompt, { user: u.username }));
          if (pw) change(u, { password: pw });
        } })))));
    const orgs = [...new Set(users.map(u => u.organisation))].sort();
    document.getElementById("organisations").replaceChildren(...orgs.map(o => el("option", { value: o })));
  }
  document.getElementById("user-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target, msg = document.getElementById("user-msg");
    const body = Object.fromEntries(["username", "password", "role", "organisation"].map(k => [k, f.elements[k].value.trim()]));
    body.password = f.elements.password.value;
    try { await Pulmo.api("/api/users", { method: "POST", json: body }); f.reset(); say(msg, L.created, "ok"); await loadUsers(); }
    catch (e) { say(msg, e.message, "error"); }
  });

  // ------------------------------------------------------------ DICOM nodes
  async function loadNodes() {
    const body = document.querySelector("#nodes-table tbody"), msg = document.getElementById("node-msg");
    let nodes;
    try { nodes = await Pulmo.json("/api/dicom-nodes"); } catch (e) { body.replaceChildren(el("tr", {}, el("td", { colspan: 5, class: "error", text: e.message }))); return; }
    body.replaceChildren(...(nodes.length ? nodes.map(n => el("tr", { "data-node": n.ae_title },
      el("td", { text: n.organisation }), el("td", {}, el("code", { text: n.ae_title })), el("td", { text: n.stow_url ? `${n.stow_url} (STOW-RS)` : `${n.host}:${n.port}` }),
      el("td", { text: L[n.role] || n.role }),
      el("td", {}, el("button", { type: "button", class: "small-button", text: L.remove, onclick: async () => {
        if (!confirm(fmt(L.confirm_node, { node: `${n.ae_title} (${n.host}:${n.port})` }))) return;
        try { await Pulmo.api(`/api/dicom-nodes/${n.id}`, { method: "DELETE" }); await loadNodes(); say(msg, L.saved, "ok"); }
        catch (e) { say(msg, e.message, "error"); }
      } })))) : [el("tr", {}, el("td", { colspan: 5, class: "muted", text: L.none }))]));
  }
  document.getElementById("node-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target, msg = document.getElementById("node-msg");
    const body = { organisation: f.elements.organisation.value.trim(), ae_title: f.elements.ae_title.value.trim(),
      role: f.elements.role.value };
    const stow = f.elements.stow_url.value.trim();
    if (stow) body.stow_url = stow;
    if (!stow || f.elements.host.value.trim()) { body.host = f.elements.host.value.trim(); body.port = Number(f.elements.port.value); }
    try { await Pulmo.api("/api/dicom-nodes", { method: "POST", json: body }); f.reset(); say(msg, L.created, "ok"); await loadNodes(); }
    catch (e) { say(msg, e.message, "error"); }
  });

  // ------------------------------------------------------------ triage model
  async function loadModel() {
    const box = document.getElementById("model-info");
    try {
      const m = await Pulmo.json("/api/triage/model");
      box.dataset.installed = String(m.installed);
      box.replaceChildren(m.installed
        ? el("p", {}, el("span", { class: "tag status-done", text: L.installed }), " ", el("strong", { text: m.name || m.source }),
          el("br"), el("span", { class: "muted small", text: `${L.features}: ${m.features.join(", ")} · ${L.horizons}: ${m.horizons.join(", ")}` }))
        : el("p", { class: "muted", text: L.not_installed }));
    } catch (e) { box.replaceChildren(el("p", { class: "error", text: e.message })); }
  }
  document.getElementById("model-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const msg = document.getElementById("model-msg"), file = document.getElementById("model-file").files[0];
    if (!file) return;
    const form = new FormData(); form.append("file", file);
    say(msg, L.importing, "muted");
    try { await Pulmo.api("/api/admin/triage-model", { method: "POST", body: form }); say(msg, L.saved, "ok"); await loadModel(); }
    catch (e) { say(msg, e.message, "error"); }
  });

  // ------------------------------------------------------------ audit log
  const PAGE = 50;
  let offset = 0;
  async function loadAudit() {
    const f = document.getElementById("audit-form");
    const q = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
    for (const k of ["user", "action", "target"]) if (f.elements[k].value.trim()) q.set(k, f.elements[k].value.trim());
    if (f.elements.since.value) q.set("since", f.elements.since.value + "T00:00:00Z");
    if (f.elements.until.value) q.set("until", f.elements.until.value + "T23:59:59.999Z");
    const body = document.querySelector("#audit-table tbody");
    try {
      const page = await Pulmo.json("/api/audit?" + q.toString());
      body.replaceChildren(...(page.entries.length ? page.entries.map(e => el("tr", {},
        el("td", { class: "num", text: String(e.id) }), el("td", { text: e.at.replace("T", " ").slice(0, 19) }),
        el("td", { text: e.username || "–" }), el("td", {}, el("code", { text: e.action })),
        el("td", { text: e.target_type ? `${e.target_type} ${e.target_id}` : "" }), el("td", { text: e.address }),
        el("td", { class: "wrap detail", text: e.detail === "{}" ? "" : e.detail })))
        : [el("tr", {}, el("td", { colspan: 7, class: "muted", text: L.none }))]));
      document.getElementById("audit-page").textContent = page.entries.length ? `${offset + 1}–${offset + page.entries.length}` : "";
      document.getElementById("audit-next").disabled = page.entries.length < PAGE;
      document.getElementById("audit-prev").disabled = offset === 0;
    } catch (e) { body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "error", text: e.message }))); }
  }
  document.getElementById("audit-form").addEventListener("submit", (ev) => { ev.preventDefault(); offset = 0; loadAudit(); });
  document.getElementById("audit-prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); loadAudit(); });
  document.getElementById("audit-next").addEventListener("click", () => { offset += PAGE; loadAudit(); });
  document.getElementById("audit-verify").addEventListener("click", async () => {
    const msg = document.getElementById("verify-msg");
    try {
      const r = await Pulmo.json("/api/audit/verify");
      say(msg, r.ok ? fmt(L.chain_ok, { n: r.entries }) : fmt(L.chain_bad, { id: r.first_bad_id, reason: r.reason }), r.ok ? "ok" : "error");
    } catch (e) { say(msg, e.message, "error"); }
  });

  loadHealth(); loadUsers(); loadNodes(); loadModel(); loadAudit();
})();
