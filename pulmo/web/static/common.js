// Pulmo pages: the JSON API with the session's CSRF token, small helpers. No external code.
"use strict";
const Pulmo = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";
  async function api(path, options = {}) {
    const opts = { credentials: "same-origin", ...options, headers: { ...(options.headers || {}) } };
    if (opts.method && opts.method !== "GET") opts.headers["X-CSRF-Token"] = csrf();
    if (opts.json !== undefined) {
      opts.body = JSON.stringify(opts.json);
      opts.headers["Content-Type"] = "application/json";
      delete opts.json;
    }
    const r = await fetch(path, opts);
    if (r.status === 401) {   // signed out (or, on a share link's page, its PIN is asked again)
      if (location.pathname.startsWith("/s/")) location.reload();
      else location.href = "/login?next=" + encodeURIComponent(location.pathname);
      throw new Error("signed out");
    }
    if (!r.ok) {
      let msg = r.statusText;
      try {
        const j = await r.json();
        msg = typeof j.detail === "string" ? j.detail
          : Array.isArray(j.detail) ? j.detail.map(d => `${(d.loc || []).filter(x => x !== "body").join(".")}: ${d.msg}`).join("; ")
          : JSON.stringify(j.detail);
      } catch (e) { /* not JSON */ }
      const err = new Error(msg); err.status = r.status; throw err;
    }
    return r;
  }
  const json = async (path, options) => (await api(path, options)).json();
  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }
  const labels = () => { const t = document.getElementById("labels"); return t ? JSON.parse(t.innerHTML) : {}; };
  document.addEventListener("change", (ev) => {
    if (ev.target.classList && ev.target.classList.contains("autosubmit")) ev.target.form.submit();
  });
  return { api, json, el, labels, csrf };
})();
