// The study page's sharing and consultation panels: who the study is shared with (other
// organisations), share links for patients ("cloud film"), and the threaded comments. All text
// from the page's labels; comments are shown as text, never as markup.
"use strict";
(() => {
  const L = Pulmo.labels();
  const el = Pulmo.el;
  const data = JSON.parse(document.getElementById("study-data").content.textContent);
  const id = data.study.id;
  const canShare = data.own && (data.role === "radiologist" || data.role === "clinician");
  const lang = document.documentElement.lang;
  const when = (iso) => iso ? new Date(iso).toLocaleString(lang) : "–";
  const shortWhen = (iso) => iso ? new Date(iso).toLocaleString(lang, { dateStyle: "short", timeStyle: "short" }) : "–";

  // ------------------------------------------------------------ participants (other organisations)
  async function loadShares() {
    const box = document.getElementById("consultation-shares");
    let people = [];
    try { people = await Pulmo.json(`/api/studies/${id}/shares`); } catch (e) { box.replaceChildren(); return; }
    const list = el("ul", { class: "plain", id: "participants" }, ...people.map(u => el("li", {},
      el("span", { text: `${u.username} · ${L[u.role] || u.role} · ${u.organisation}` }),
      canShare ? el("button", { type: "button", class: "link", text: L.remove, onclick: async () => {
        if (!confirm(L.confirm_unshare.replace("{user}", u.username))) return;
        try { await Pulmo.api(`/api/studies/${id}/shares/${u.user_id}`, { method: "DELETE" }); loadShares(); }
        catch (e) { msg.textContent = e.message; msg.className = "error"; }
      } }) : null)));
    const msg = el("span", { id: "share-msg", role: "status" });
    const parts = [el("h3", { text: L.consulted }), people.length ? list : el("p", { class: "muted", text: L.not_shared })];
    if (canShare) {
      const input = el("input", { id: "share-user", name: "username", maxlength: "100", autocomplete: "off", required: "" });
      const form = el("form", { id: "share-form", class: "row" }, el("label", { for: "share-user", text: L.share_with }), input,
        el("button", { type: "submit", text: L.invite }), msg);
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        try {
          await Pulmo.api(`/api/studies/${id}/shares`, { method: "POST", json: { username: input.value.trim() } });
          input.value = ""; await loadShares();
          const m = document.getElementById("share-msg"); m.textContent = L.shared; m.className = "ok";
        } catch (e) { msg.textContent = e.message; msg.className = "error"; }
      });
      parts.push(form);
    }
    box.replaceChildren(...parts);
  }

  // ------------------------------------------------------------ share links ("cloud film")
  async function loadLinks() {
    const box = document.getElementById("share-links");
    if (!box || !canShare) return;
    let links = [];
    try { links = await Pulmo.json(`/api/studies/${id}/share-links`); } catch (e) { box.replaceChildren(el("p", { class: "error", text: e.message })); return; }
    const msg = el("span", { id: "link-msg", role: "status" });
    const hours = el("select", { id: "link-hours", name: "hours" }, ...[[24, L.one_day], [72, L.three_days], [168, L.one_week], [720, L.thirty_days]]
      .map(([h, t]) => el("option", { value: String(h), text: t })));
    hours.value = "72";
    const pin = el("input", { id: "link-pin", name: "pin", inputmode: "numeric", maxlength: "20", autocomplete: "off", placeholder: L.optional });
    const out = el("div", { id: "link-created" });
    const form = el("form", { id: "link-form", class: "row" },
      el("label", { for: "link-hours", text: L.valid_for }), hours, el("label", { for: "link-pin", text: L.pin }), pin,
      el("button", { type: "submit", text: L.create_link }), msg);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      msg.textContent = ""; msg.className = "";
      const body = { expires_in_hours: Number(hours.value) };
      if (pin.value) body.pin = pin.value;
      try {
        const r = await Pulmo.json(`/api/studies/${id}/share-links`, { method: "POST", json: body });
        await loadLinks();
        const shown = el("input", { id: "link-url", readonly: "", value: r.url, "aria-label": L.link });
        const copy = el("button", { type: "button", text: L.copy, onclick: async () => {
          shown.select();
          try { await navigator.clipboard.writeText(r.url); } catch (e) { document.execCommand && document.execCommand("copy"); }
        } });
        document.getElementById("link-created").replaceChildren(el("p", { class: "ok", text: L.link_once }), el("div", { class: "row" }, shown, copy));
      } catch (e) { msg.textContent = e.message; msg.className = "error"; }
    });
    const rows = links.map(k => el("tr", { "data-link": String(k.id) },
      el("td", { text: k.token_hint + "…" }), el("td", { text: shortWhen(k.expires_at) }),
      el("td", { text: k.has_pin ? L.yes : L.no }),
      el("td", {}, el("span", { class: "tag link-" + k.state, text: L[k.state] || k.state })),
      el("td", {}, k.state === "active" ? el("button", { type: "button", class: "link", text: L.revoke, onclick: async () => {
        if (!confirm(L.confirm_revoke)) return;
        try { await Pulmo.api(`/api/studies/${id}/share-links/${k.id}`, { method: "DELETE" }); loadLinks(); }
        catch (e) { msg.textContent = e.message; msg.className = "error"; }
      } }) : "")));
    const table = links.length ? el("div", { class: "table-wrap" }, el("table", { class: "data", id: "links-table" },
      el("thead", {}, el("tr", {}, ...[L.link, L.expires, L.pin, L.state, ""].map(h => el("th", { text: h })))),
      el("tbody", {}, ...rows))) : el("p", { class: "muted", text: L.no_links });
    box.replaceChildren(el("h3", { text: L.share_links }), el("p", { class: "muted small", text: L.links_explained }), form, out, table);
  }

  // ------------------------------------------------------------ comments
  const form = document.getElementById("comment-form");
  const parentField = form.querySelector('[name="parent_id"]');
  const replyTo = document.getElementById("reply-to"), cancel = document.getElementById("reply-cancel");
  function answer(c) {
    parentField.value = String(c.id);
    replyTo.textContent = `${L.reply_to} ${c.author.username}`;
    cancel.hidden = false;
    document.getElementById("comment-body").focus();
  }
  cancel.addEventListener("click", () => { parentField.value = ""; replyTo.textContent = ""; cancel.hidden = true; });

  async function loadComments() {
    const box = document.getElementById("consultation-thread");
    let all = [];
    try { all = await Pulmo.json(`/api/studies/${id}/comments`); } catch (e) { box.replaceChildren(el("p", { class: "error", text: e.message })); return; }
    const children = new Map();
    for (const c of all) {
      const k = c.parent_id ?? 0;
      if (!children.has(k)) children.set(k, []);
      children.get(k).push(c);
    }
    const known = new Set(all.map(c => c.id));
    const node = (c, depth) => el("li", { class: "comment", id: `comment-${c.id}` },
      el("div", { class: "comment-head muted small" },
        el("strong", { text: c.author.username }), ` · ${L[c.author.role] || c.author.role} · ${c.author.organisation} · ${when(c.created_at)} `,
        el("button", { type: "button", class: "link", text: L.reply, onclick: () => answer(c) })),
      el("p", { class: "comment-body", text: c.body }),
      (children.get(c.id) || []).length ? el("ul", { class: "thread" + (depth >= 4 ? " flat" : "") }, ...children.get(c.id).map(x => node(x, depth + 1))) : null);
    const roots = all.filter(c => !c.parent_id || !known.has(c.parent_id));
    box.replaceChildren(roots.length ? el("ul", { class: "thread", id: "comments" }, ...roots.map(c => node(c, 0)))
      : el("p", { class: "muted", text: L.no_comments }));
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const msg = document.getElementById("comment-msg");
    const text = document.getElementById("comment-body");
    msg.textContent = ""; msg.className = "";
    const body = { body: text.value };
    if (parentField.value) body.parent_id = Number(parentField.value);
    try {
      await Pulmo.api(`/api/studies/${id}/comments`, { method: "POST", json: body });
      text.value = ""; cancel.click();
      await loadComments();
    } catch (e) { msg.textContent = e.message; msg.className = "error"; }
  });

  loadShares();
  loadLinks();
  loadComments();
  setInterval(loadComments, 30000);   // colleagues' answers appear without reloading
})();
