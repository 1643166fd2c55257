// Live updates from /ui/live (server-sent events): gateway states, latest values and a
// rollout's progress. The server sends translated, formatted text; this only places it.

function setState(el, state, label, prefix) {
  for (const cls of [...el.classList]) {
    if (cls.startsWith(prefix)) el.classList.remove(cls);
  }
  el.classList.add(prefix + state);
  const text = el.querySelector(".label");
  if (text) text.textContent = label;
}

function each(selector, fn) {
  for (const el of document.querySelectorAll(selector)) fn(el);
}

function apply(data) {
  for (const [id, gw] of Object.entries(data.gateways || {})) {
    each(`[data-gw-state="${CSS.escape(id)}"]`, (el) => setState(el, gw.state, gw.label, "state-"));
    each(`[data-gw-seen="${CSS.escape(id)}"]`, (el) => { el.textContent = gw.seen; });
    each(`[data-gw-reported="${CSS.escape(id)}"]`, (el) => {
      el.textContent = gw.reported === null ? "–" : String(gw.reported);
    });
  }
  const totals = {};
  for (const gw of Object.values(data.gateways || {})) totals[gw.state] = (totals[gw.state] || 0) + 1;
  each("[data-live-total]", (el) => { el.textContent = String(totals[el.dataset.liveTotal] || 0); });
  const counter = document.querySelector("[data-live-alerts]");
  if (counter && typeof data.alerts === "number") {
    counter.textContent = String(data.alerts);
    counter.hidden = data.alerts === 0;
  }
  for (const [channel, v] of Object.entries(data.values || {})) {
    each(`[data-value="${channel}"]`, (el) => { el.textContent = v.value; });
    each(`[data-value-ts="${channel}"]`, (el) => { el.textContent = v.ts; });
  }
  const r = data.rollout;
  if (r) {
    each(`[data-rollout-state="${r.id}"]`, (el) => setState(el, r.state, r.label, "rs-"));
    each(`[data-rollout-reason="${r.id}"]`, (el) => { el.textContent = r.reason ? ` – ${r.reason}` : ""; });
    for (const [state, n] of Object.entries(r.counts)) {
      each(`[data-rollout-count="${r.id}:${state}"]`, (el) => { el.textContent = String(n); });
    }
    each(`[data-rollout-bar="${r.id}"]`, (el) => { el.max = r.total || 1; el.value = r.done; });
  }
  for (const [id, tg] of Object.entries(data.targets || {})) {
    each(`[data-target-state="${CSS.escape(id)}"]`, (el) => setState(el, tg.state, tg.label, "ts-"));
  }
}

export function startLive(url) {
  if (!url || !window.EventSource) return;
  const source = new EventSource(url);
  source.addEventListener("update", (event) => {
    try {
      apply(JSON.parse(event.data));
      document.body.dataset.liveUpdates = String(Number(document.body.dataset.liveUpdates || 0) + 1);
    } catch (err) {
      console.error("live update not applied", err);
    }
  });
}
