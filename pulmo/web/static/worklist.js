// The worklist: filters, paging, and live updates (re-read every few seconds while studies run).
"use strict";
(() => {
  const L = Pulmo.labels();
  const tbody = document.querySelector("#worklist tbody");
  const form = document.getElementById("filters");
  const live = document.getElementById("live");
  let offset = 0, total = 0, timer = null, last = "";
  const limit = 50;
  const myOrg = document.getElementById("worklist").dataset.org || "";   // studies of others: shared for consultation
  const fmt = (v, d = 1) => (v === null || v === undefined) ? "–" : Number(v).toFixed(d);
  function row(s) {
    const name = s.patient.name || s.patient.key;
    const cells = [
      Pulmo.el("td", { class: "patient" }, Pulmo.el("a", { href: "/studies/" + s.id, text: name }),
        s.synthetic ? Pulmo.el("span", { class: "tag synthetic", text: L.synthetic }) : null,
        myOrg && String(s.organisation_id) !== myOrg ? Pulmo.el("span", { class: "tag consult", text: L.consultation }) : null),
      Pulmo.el("td", { class: "wrap", text: [s.study_date, s.description].filter(Boolean).join(" · ") }),
      Pulmo.el("td", {}, Pulmo.el("span", { class: "tag status-" + s.status, text: L[s.status] || s.status })),
      Pulmo.el("td", {}, s.flag ? Pulmo.el("span", { class: "tag flag-" + s.flag, text: L[s.flag] || s.flag }) : "–"),
      Pulmo.el("td", { class: "num", text: fmt(s.percent_involved) }),
      Pulmo.el("td", { class: "num", text: s.severity === null ? "–" : `${s.severity}/${s.severity_max}` }),
      Pulmo.el("td", {}, s.triage_risk ? Pulmo.el("span", { class: "tag risk-" + s.triage_risk, text: L[s.triage_risk] }) : "–"),
      Pulmo.el("td", { text: new Date(s.received_at).toLocaleString(document.documentElement.lang) }),
    ];
    return Pulmo.el("tr", { class: "prio-" + s.priority, "data-id": s.id }, ...cells);
  }
  async function load() {
    const params = new URLSearchParams(new FormData(form));
    for (const [k, v] of [...params]) if (!v) params.delete(k);
    params.set("limit", limit); params.set("offset", offset);
    const data = await Pulmo.json("/api/studies?" + params);
    total = data.total;
    const key = JSON.stringify(data.items.map(s => [s.id, s.status, s.flag, s.triage_risk]));
    if (key !== last) {
      tbody.replaceChildren(...(data.items.length ? data.items.map(row)
        : [Pulmo.el("tr", {}, Pulmo.el("td", { colspan: 8, class: "muted", text: L.none }))]));
      if (last) live.textContent = L.updated + " " + new Date().toLocaleTimeString(document.documentElement.lang);
      last = key;
    }
    document.getElementById("page").textContent = total ? `${offset + 1}–${Math.min(offset + limit, total)} ${L.of} ${total}` : "";
    const busy = data.items.some(s => s.status === "queued" || s.status === "running");
    clearTimeout(timer);
    timer = setTimeout(load, busy ? 2000 : 10000);
  }
  form.addEventListener("input", () => { offset = 0; load(); });
  form.addEventListener("submit", (e) => { e.preventDefault(); });
  document.getElementById("prev").addEventListener("click", () => { offset = Math.max(0, offset - limit); load(); });
  document.getElementById("next").addEventListener("click", () => { if (offset + limit < total) { offset += limit; load(); } });
  load();
})();
