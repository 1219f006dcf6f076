// gbgate console: plain JavaScript over the node's HTTP API. The token
// stays in this tab's sessionStorage and goes only to this node.
"use strict";

const state = { me: null, cells: [], selected: 0, layout: 4 };
// Timings a test or a curious operator can read (ms since page start).
window.gbgateTimes = {};

const $ = (sel) => document.querySelector(sel);
const token = () => sessionStorage.getItem("gbgate-token") || "";

async function api(method, path, body) {
  const headers = {};
  if (token()) headers["Authorization"] = "Bearer " + token();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let data = text;
  try { data = JSON.parse(text); } catch (_) { /* a text/plain refusal */ }
  return { status: r.status, data };
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

// ------------------------------------------------------------------ login

async function signIn() {
  const r = await api("GET", "/api/v1/me");
  if (r.status !== 200) {
    $("#login-error").textContent = typeof r.data === "string" ? r.data : "refused";
    sessionStorage.removeItem("gbgate-token");
    return;
  }
  state.me = r.data;
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#whoami").textContent = state.me.policy
    ? `${state.me.user} (dept:${state.me.department})${state.me.admin ? " admin" : ""}`
    : "open node (no sharing policy)";
  for (const a of document.querySelectorAll(".admin-only")) {
    a.hidden = state.me.policy && !state.me.admin;
  }
  setLayout(4);
  loadTree($("#tree"), { region: "" });
  route();
  pollAlarms();
}

$("#login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("gbgate-token", $("#token").value.trim());
  signIn();
});
$("#logout").addEventListener("click", () => {
  sessionStorage.removeItem("gbgate-token");
  location.reload();
});

// ------------------------------------------------------------------ pages

function route() {
  const page = (location.hash || "#cameras").slice(1);
  for (const p of document.querySelectorAll(".page")) p.hidden = p.id !== "page-" + page;
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", a.getAttribute("href") === "#" + page);
  }
  if (page === "audit") loadAudit();
  if (page === "requests") loadRequests();
  if (page === "topology") loadTopology();
}
window.addEventListener("hashchange", route);

// ------------------------------------------------------------------ tree

function label(b) {
  const name = b.name || b.key;
  const count = b.kind === "camera" ? "" : ` (${b.online}/${b.cameras})`;
  const span = el("span", { class: b.status === "OFF" ? "off" : b.status === "VLOST" ? "lost" : "" }, name);
  if (b.status === "VLOST") span.title = "online, but its video does not decode (VLOST)";
  span.append(el("span", { class: "count" }, count));
  return span;
}

async function loadTree(ul, query) {
  const qs = new URLSearchParams(query).toString();
  const r = await api("GET", "/api/v1/tree?" + qs);
  ul.replaceChildren();
  if (r.status !== 200) {
    ul.append(el("li", { class: "error" }, typeof r.data === "string" ? r.data : "refused"));
    return;
  }
  for (const b of r.data.branches) ul.append(treeItem(b));
  if (!r.data.branches.length) ul.append(el("li", { class: "off" }, "nothing here you may see"));
}

function treeItem(b) {
  if (b.kind === "camera") {
    const li = el("li", { class: "camera", "data-id": b.key, title: b.key }, label(b));
    li.firstChild.addEventListener("click", () => play(b.key, b.name || b.key));
    return li;
  }
  const li = el("li", { class: "branch", "data-key": b.key, "data-kind": b.kind }, label(b));
  const kids = el("ul", { class: "tree" });
  li.append(kids);
  li.firstChild.addEventListener("click", () => {
    if (li.classList.toggle("open")) {
      loadTree(kids, b.kind === "region" ? { region: b.key } : { parent: b.key });
    } else {
      kids.replaceChildren();
    }
  });
  return li;
}

let searchTimer = null;
$("#search").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(async () => {
    const q = $("#search").value.trim();
    const ul = $("#search-results");
    if (q.length < 2) return ul.replaceChildren();
    await loadTree(ul, { q, limit: 50 });
  }, 250);
});

// ------------------------------------------------------------------ player

function setLayout(n) {
  for (const c of state.cells) stop(c);
  state.layout = n;
  const side = Math.sqrt(n);
  const grid = $("#grid");
  grid.style.gridTemplateColumns = `repeat(${side}, 1fr)`;
  grid.replaceChildren();
  state.cells = [];
  for (let i = 0; i < n; i++) {
    const video = el("video", { muted: true, autoplay: true, playsInline: true });
    const cell = el("div", { class: "cell" }, video, el("span", { class: "caption" }, ""));
    cell.addEventListener("click", () => select(i));
    grid.append(cell);
    state.cells.push({ div: cell, video, player: null, channel: null });
  }
  select(0);
}
for (const n of [1, 4, 9, 16]) $("#layout-" + n).addEventListener("click", () => setLayout(n));

function select(i) {
  state.selected = i;
  state.cells.forEach((c, k) => c.div.classList.toggle("selected", k === i));
}

function stop(c) {
  if (c.player) {
    c.player.destroy();
    c.player = null;
  }
  c.channel = null;
}

async function play(channel, name) {
  const c = state.cells[state.selected];
  stop(c);
  $("#play-status").textContent = "opening " + name + "…";
  const clicked = performance.now();
  // HTTP-FLV or MPEG-TS: mpegts.js plays both.
  const format = $("#format").value === "ts" ? "ts" : "flv";
  let url = `/live/${channel}.${format}`;
  if (state.me.policy) {
    const r = await api("POST", "/api/v1/streams", { channel, action: "live" });
    if (r.status !== 200) {
      $("#play-status").textContent = typeof r.data === "string" ? r.data : "refused";
      return;
    }
    url = r.data[format];
  }
  if (typeof mpegts === "undefined" || !mpegts.getFeatureList().mseLivePlayback) {
    $("#play-status").textContent = "this browser cannot play HTTP-FLV here (no MSE, or the player library was not built in: run make deps)";
    return;
  }
  c.channel = channel;
  c.div.querySelector(".caption").textContent = name;
  c.player = mpegts.createPlayer(
    { type: format === "ts" ? "mpegts" : "flv", isLive: true, url: new URL(url, location.href).href },
    { enableStashBuffer: false, liveBufferLatencyChasing: true });
  c.player.attachMediaElement(c.video);
  c.player.load();
  c.video.muted = true;
  c.video.play().catch(() => {});
  c.video.addEventListener("playing", () => {
    window.gbgateTimes.firstFrameMs = performance.now() - clicked;
    $("#play-status").textContent = `${name}: first frame in ${Math.round(performance.now() - clicked)} ms`;
  }, { once: true });
  // Next click fills the next cell.
  select((state.selected + 1) % state.cells.length);
}

// ------------------------------------------------------------------ recordings

const pb = { session: null, channel: null, records: [] };
const unix = (gbLocal) => Math.floor(new Date(gbLocal).getTime() / 1000);

$("#rec-day").value = new Date().toISOString().slice(0, 10);

$("#rec-search").addEventListener("click", async () => {
  const channel = ptzTarget();
  if (!channel) return ($("#rec-status").textContent = "play a camera first");
  const day = $("#rec-day").value;
  const qs = new URLSearchParams({ start: `${day}T00:00:00`, end: `${day}T23:59:59` });
  $("#rec-status").textContent = "asking the device…";
  const r = await api("GET", `/api/v1/devices/${channel}/records?${qs}`);
  if (r.status !== 200) return ($("#rec-status").textContent = String(r.data));
  pb.channel = channel;
  pb.records = r.data.records.filter((x) => x.start_time && x.end_time);
  $("#rec-status").textContent = `${pb.records.length} recordings${r.data.complete ? "" : " (incomplete answer)"}`;
  const midnight = unix(`${day}T00:00:00`);
  const tl = $("#timeline");
  const list = $("#rec-list");
  tl.replaceChildren();
  list.replaceChildren();
  for (const rec of pb.records) {
    const s = unix(rec.start_time), e = unix(rec.end_time);
    const seg = el("div", { class: "segment", title: `${rec.start_time} – ${rec.end_time}` });
    seg.style.left = `${((s - midnight) / 864).toFixed(3)}%`;
    seg.style.width = `${((e - s) / 864).toFixed(3)}%`;
    tl.append(seg);
    const li = el("li", { class: "record" }, `${rec.start_time.slice(11)} – ${rec.end_time.slice(11)}${rec.type ? " " + rec.type : ""}`);
    li.addEventListener("click", () => playRecord(channel, s, e));
    list.append(li);
  }
  tl.onclick = (ev) => {
    // Seek: play the recording under the click from that second on.
    const at = midnight + Math.floor((ev.offsetX / tl.clientWidth) * 86400);
    const rec = pb.records.find((x) => unix(x.start_time) <= at && at < unix(x.end_time));
    if (rec) playRecord(channel, at, unix(rec.end_time));
  };
});

async function playRecord(channel, start, end) {
  const c = state.cells[state.selected];
  stop(c);
  // Our own session number: a browser's player cannot read the
  // X-Playback-Session header, and control needs it.
  const n = new Uint32Array(2);
  crypto.getRandomValues(n);
  const session = (n[0] & 0x1fffff) * 2 ** 32 + n[1] || 1;
  let url = `/playback/${channel}.flv?`;
  if (state.me.policy) {
    const r = await api("POST", "/api/v1/streams", { channel, action: "playback" });
    if (r.status !== 200) return ($("#pb-status").textContent = String(r.data));
    url = r.data.flv + "&";
  }
  url += `start=${start}&end=${end}&session=${session}`;
  c.channel = channel;
  c.div.querySelector(".caption").textContent = `${channel} ▶ ${new Date(start * 1000).toISOString().slice(11, 19)}`;
  c.player = mpegts.createPlayer({ type: "flv", isLive: true, url: new URL(url, location.href).href },
    { enableStashBuffer: false });
  c.player.attachMediaElement(c.video);
  c.player.load();
  c.video.muted = true;
  c.video.play().catch(() => {});
  pb.session = session;
  $("#pb-status").textContent = `playback session ${session}`;
  select((state.selected + 1) % state.cells.length);
}

async function playbackControl(body, done) {
  if (!pb.session) return ($("#pb-status").textContent = "play a recording first");
  const r = await api("POST", `/api/v1/playback/${pb.session}/control`, body);
  $("#pb-status").textContent = r.status === 204 ? done : String(r.data);
}
$("#pb-pause").addEventListener("click", () => playbackControl({ action: "pause" }, "paused"));
$("#pb-resume").addEventListener("click", () => playbackControl({ action: "play" }, "playing"));
$("#pb-speed").addEventListener("change", () => {
  const scale = Number($("#pb-speed").value);
  playbackControl({ action: "play", scale }, `playing at ${scale}×`);
});

// ------------------------------------------------------------------ PTZ

function ptzTarget() {
  // The cell last played into is the one before the selection.
  const n = state.cells.length;
  for (let k = 0; k < n; k++) {
    const c = state.cells[(state.selected - 1 - k + 2 * n) % n];
    if (c.channel) return c.channel;
  }
  return null;
}

async function ptz(action) {
  const channel = ptzTarget();
  if (!channel) return ($("#ptz-status").textContent = "play a camera first");
  const body = { action, speed: Number($("#ptz-speed").value), preset: Number($("#preset").value) };
  const r = await api("POST", `/api/v1/channels/${channel}/ptz`, body);
  $("#ptz-status").textContent = r.status === 200 ? `${action}: OK`
    : r.status === 409 ? r.data.message
    : typeof r.data === "string" ? r.data : `refused (${r.status})`;
}

for (const b of document.querySelectorAll("[data-ptz]")) {
  const action = b.getAttribute("data-ptz");
  const moves = !["stop", "preset_call", "preset_set"].includes(action);
  if (moves) {
    // Press and hold, as on a keyboard: move while held, stop on release.
    b.addEventListener("mousedown", () => ptz(action));
    b.addEventListener("mouseup", () => ptz("stop"));
  } else {
    b.addEventListener("click", () => ptz(action));
  }
}

$("#presets-list").addEventListener("click", async () => {
  const channel = ptzTarget();
  if (!channel) return;
  const r = await api("GET", `/api/v1/channels/${channel}/presets`);
  $("#presets").textContent = r.status === 200
    ? r.data.presets.map((p) => `${p.id}${p.name ? " " + p.name : ""}`).join(", ") || "none"
    : String(r.data);
});

// ------------------------------------------------------------------ audit

async function loadAudit() {
  const qs = new URLSearchParams({ limit: 200 });
  if ($("#audit-channel").value) qs.set("channel", $("#audit-channel").value.trim());
  if ($("#audit-subject").value) qs.set("subject", $("#audit-subject").value.trim());
  const r = await api("GET", "/api/v1/audit?" + qs);
  const body = $("#audit-table tbody");
  body.replaceChildren();
  if (r.status !== 200) return body.append(el("tr", {}, el("td", { colSpan: 8 }, String(r.data))));
  for (const a of r.data.slice().reverse()) {
    body.append(el("tr", { class: "audit-row" },
      el("td", {}, String(a.seq)), el("td", {}, new Date(a.at_ms).toISOString()),
      el("td", {}, a.subject), el("td", {}, a.on_behalf_of || ""), el("td", {}, a.object),
      el("td", {}, a.action), el("td", {}, a.outcome), el("td", {}, a.reason)));
  }
}
$("#audit-filter").addEventListener("submit", (ev) => { ev.preventDefault(); loadAudit(); });

// ------------------------------------------------------------------ access requests

async function loadRequests() {
  const r = await api("GET", "/api/v1/access-requests?state=all");
  const body = $("#requests-table tbody");
  body.replaceChildren();
  if (r.status !== 200) return body.append(el("tr", {}, el("td", { colSpan: 8 }, String(r.data))));
  for (const q of r.data) {
    const act = el("td", {});
    if (state.me.admin && q.state === "pending") {
      const ok = el("button", {}, "approve");
      ok.addEventListener("click", async () => {
        await api("POST", `/api/v1/access-requests/${q.id}/approve`, {});
        loadRequests();
      });
      const no = el("button", {}, "reject");
      no.addEventListener("click", async () => {
        const reason = prompt("Why?") || "rejected in the console";
        await api("POST", `/api/v1/access-requests/${q.id}/reject`, { reason });
        loadRequests();
      });
      act.append(ok, no);
    }
    body.append(el("tr", {},
      el("td", {}, String(q.id)), el("td", {}, q.state), el("td", {}, q.dept),
      el("td", {}, q.objects.join(", ")), el("td", {}, q.actions.join(", ")),
      el("td", {}, q.until), el("td", {}, q.reason), act));
  }
}

$("#request-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = {
    channels: $("#req-channels").value.split(",").map((s) => s.trim()).filter(Boolean),
    actions: [...$("#req-actions").selectedOptions].map((o) => o.value),
    until: $("#req-until").value.trim(),
    reason: $("#req-reason").value.trim(),
  };
  const r = await api("POST", "/api/v1/access-requests", body);
  $("#request-status").textContent = r.status === 201 ? `request ${r.data.id} sent` : String(r.data);
  loadRequests();
});

// ------------------------------------------------------------------ topology

async function loadTopology() {
  const r = await api("GET", "/api/v1/topology");
  if (r.status !== 200) return ($("#topo-node").textContent = String(r.data));
  const t = r.data;
  $("#topo-node").textContent = `${t.node.name} (${t.node.level}, ${t.node.id}), SIP ${t.node.sip}`;
  $("#topo-counts").textContent =
    `devices ${t.devices.online}/${t.devices.registered} online; catalog ${t.catalog.entries} entries, ` +
    `${t.catalog.channels} channels, ${t.catalog.online} ON`;
  const cert = t.certificate;
  $("#topo-cert").textContent = cert
    ? `QUIC certificate ${cert.node || ""} valid until ${cert.not_after} (${cert.days_left} days left)`
    : "no QUIC certificate (links are plain GB/T 28181)";
  $("#topo-cert").className = cert && cert.expires_soon ? "warn" : "";
  const up = $("#topo-up tbody");
  up.replaceChildren();
  for (const p of [t.parent, ...t.upper_platforms].filter(Boolean)) {
    const since = p.registered_since ? new Date(p.registered_since * 1000).toISOString() : "";
    up.append(el("tr", {}, el("td", {}, p.id), el("td", {}, p.name), el("td", {}, p.upper ? "upper platform" : "parent"),
      el("td", { class: p.state === "registered" ? "" : "warn" }, p.state),
      el("td", {}, `${p.transport} ${p.addr}`), el("td", {}, since), el("td", {}, p.last_error || "")));
  }
  const down = $("#topo-down tbody");
  down.replaceChildren();
  for (const c of t.children) {
    down.append(el("tr", {}, el("td", {}, c.id), el("td", {}, c.name || ""),
      el("td", { class: c.state === "online" ? "" : "warn" }, c.state), el("td", {}, c.addr || ""),
      el("td", {}, c.last_seen_secs == null ? "" : `${Math.round(c.last_seen_secs)} s ago`)));
  }
}

// ------------------------------------------------------------------ alarms

// Polled every 2 s: alarms and positions the node heard from below that
// this department may see, newest on top; a click plays the camera.
let alarmsAfter = 0;
async function pollAlarms() {
  if (!state.me) return;
  const r = await api("GET", `/api/v1/alarms?after=${alarmsAfter}&limit=200`);
  if (r.status !== 200) return;
  const ul = $("#alarms");
  for (const a of r.data) {
    alarmsAfter = Math.max(alarmsAfter, a.seq);
    const what = a.kind === "alarm"
      ? `P${a.priority ?? "?"} ${a.description || "alarm"}`
      : `at ${a.longitude}, ${a.latitude}`;
    const li = el("li", { class: a.kind, "data-id": a.device_id, title: a.device_id },
      `${new Date(a.at_ms).toLocaleTimeString()} ${a.device_id.slice(-7)} ${what}`);
    li.addEventListener("click", () => play(a.device_id, a.device_id));
    ul.prepend(li);
  }
  while (ul.children.length > 100) ul.lastChild.remove();
}
setInterval(pollAlarms, 2000);

// A token kept from earlier in this tab signs in again.
if (sessionStorage.getItem("gbgate-token") !== null) signIn();
