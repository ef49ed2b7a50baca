// The study page's "Results sent to PACS" panel: where the SEG, SR and Secondary Capture of the
// analysis were sent (destination nodes of the organisation), whether it worked, and a resend.
"use strict";
(() => {
  const L = Pulmo.labels();
  const el = Pulmo.el;
  const data = JSON.parse(document.getElementById("study-data").content.textContent);
  const id = data.study.id;
  const sec = document.getElementById("deliveries"), msg = document.getElementById("deliveries-msg");
  const when = (iso) => iso ? new Date(iso.endsWith("Z") ? iso : iso + "Z").toLocaleString(document.documentElement.lang) : "–";
  let timer = null;

  async function load() {
    clearTimeout(timer);
    let rows;
    try { rows = await Pulmo.json(`/api/studies/${id}/deliveries`); } catch (e) { return; }
    sec.hidden = rows.length === 0;
    document.querySelector("#deliveries-table tbody").replaceChildren(...rows.map(d => el("tr", { "data-status": d.status },
      el("td", { text: d.node }),
      el("td", {}, el("span", { class: "tag " + (d.status === "sent" ? "status-done" : d.status === "failed" ? "status-failed" : "status-running"),
        text: L[d.status] || d.status }), d.status === "pending" && d.next_attempt_at ? el("span", { class: "muted small", text: ` ${L.next_try} ${when(d.next_attempt_at)}` }) : null),
      el("td", { class: "num", text: String(d.attempts) }), el("td", { text: when(d.sent_at) }),
      el("td", { class: "wrap small", text: d.last_error || "" }))));
    if (rows.some(d => d.status === "pending")) timer = setTimeout(load, 5000);
  }
  const resend = document.getElementById("resend");
  if (resend) resend.addEventListener("click", async () => {
    try { await Pulmo.api(`/api/studies/${id}/deliveries/resend`, { method: "POST" }); msg.textContent = L.resent; msg.className = "ok"; load(); }
    catch (e) { msg.textContent = e.message; msg.className = "error"; }
  });
  load();
})();
