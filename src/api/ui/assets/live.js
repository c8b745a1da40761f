// vmshot's live page: plain JavaScript, no build step. The HTML is rendered
// on the host; this only keeps it current and sends the page's actions.
"use strict";

const csrf = document.querySelector('meta[name="vmshot-csrf"]').content;

function post(url) {
  return fetch(url, { method: "POST", headers: { "X-Vmshot-Csrf": csrf }, credentials: "same-origin" })
    .then((r) => r.json().then((body) => { if (!r.ok) throw new Error(body.error ? body.error.message : r.status); return body; }));
}

function unchanged(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 60) return "unchanged for " + seconds + " s";
  if (seconds < 3600) return "unchanged for " + Math.floor(seconds / 60) + " min";
  return "unchanged for " + Math.floor(seconds / 3600) + " h";
}

// The wall: tiles' thumbnails load lazily; every few seconds the list is
// read again, and only visible tiles whose screen changed fetch a new one.
function wall(root) {
  const visible = new Set();
  const observer = new IntersectionObserver((entries) => {
    for (const e of entries) (e.isIntersecting ? visible.add(e.target) : visible.delete(e.target));
  });
  const tiles = new Map();
  for (const tile of root.querySelectorAll(".tile")) { tiles.set(tile.dataset.uuid, tile); observer.observe(tile); }
  async function refresh() {
    try {
      const domains = await (await fetch("/v1/domains", { credentials: "same-origin" })).json();
      for (const d of domains) {
        const tile = tiles.get(d.uuid);
        if (!tile) continue;
        tile.querySelector(".state").textContent = d.state || "unknown";
        tile.querySelector(".unchanged").textContent = unchanged(d.screen.unchanged_seconds);
        const badge = tile.querySelector(".badge");
        const verdict = d.diagnosis ? d.diagnosis.verdict : "";
        badge.textContent = verdict; badge.className = "badge verdict-" + verdict; badge.hidden = !verdict;
        const img = tile.querySelector("img.thumb");
        const gen = String(d.screen.generation);
        if (img && visible.has(tile) && tile.dataset.gen !== gen) {
          tile.dataset.gen = gen;
          img.src = d.links.thumbnail + "?g=" + encodeURIComponent(gen === "null" ? Date.now() : gen);
        }
      }
    } catch (e) { /* the next round tries again */ }
  }
  setInterval(refresh, 5000);
}

// One domain: its screen follows the server's change events; only one
// screenshot is in flight, and the latest change wins.
function domainPage(root) {
  const base = "/v1/domains/" + root.dataset.uuid;
  const screen = document.getElementById("screen");
  let loading = false, again = false;
  function load() {
    if (loading) { again = true; return; }
    loading = true;
    const next = new Image();
    next.onload = next.onerror = () => {
      if (next.naturalWidth) { screen.src = next.src; screen.dataset.loads = String(Number(screen.dataset.loads || 0) + 1); }
      loading = false;
      if (again) { again = false; load(); }
    };
    next.src = base + "/screenshot?t=" + Date.now();
  }
  const events = new EventSource(base + "/screen/events");
  events.addEventListener("screen", (e) => {
    const s = JSON.parse(e.data);
    document.getElementById("unchanged").textContent = unchanged(s.unchanged_seconds);
    load();
  });
  const status = document.getElementById("status");
  const say = (text) => { status.textContent = text; };
  document.getElementById("key").addEventListener("click", () =>
    post(base + "/keys").then((r) => say(r.pressed ? "key pressed" : "nothing to press it on"), (e) => say(e.message)));
  const record = document.getElementById("record");
  if (record) record.addEventListener("click", () => {
    say("recording 10 s…");
    post(base + "/recordings?max_duration_seconds=60")
      .then((rec) => new Promise((ok) => setTimeout(() => ok(rec), 10000)))
      .then((rec) => post("/v1/recordings/" + rec.id + "/stop"))
      .then(() => location.reload(), (e) => say(e.message));
  });
  const consolePre = document.getElementById("console");
  if (consolePre) setInterval(async () => {
    try {
      const r = await fetch(base + "/console?bytes=16384", { credentials: "same-origin" });
      if (r.ok) {
        const atEnd = consolePre.scrollTop + consolePre.clientHeight >= consolePre.scrollHeight - 4;
        consolePre.textContent = (await r.json()).output;
        if (atEnd) consolePre.scrollTop = consolePre.scrollHeight;
      }
    } catch (e) { /* next time */ }
  }, 3000);
}

const root = document.querySelector("main");
if (root.classList.contains("wall-page")) wall(root);
if (root.classList.contains("domain-page")) domainPage(root);
