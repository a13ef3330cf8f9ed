// The claudemesh UI: one page over the daemon's routes under /ui/api, kept
// live by the daemon's event stream (no polling).
//
// Rules the page keeps:
//   - Everything a peer wrote (names, summaries, bodies, state values) goes
//     into the page as text nodes or attribute values, never as markup:
//     elements are built with h() and s(), never from strings of HTML.
//   - The page holds no secret: it acts as a session by naming its id, and
//     its changes carry the CSRF token the overview gave it.
//   - A message's outbox state only moves forward: an event or a reload
//     that arrives late never turns a sent message back into a queued one.

const api = (path) => "/ui/api" + path;

const state = {
  csrf: "",
  me: "",
  meshes: [],          // overview meshes
  sessions: [],        // overview sessions
  peers: new Map(),    // mesh → peer rows
  members: new Map(),  // mesh → member rows, online or not
  peerErrors: {},
  messages: new Map(), // "in:id" / "out:id" → history message
  outbox: new Map(),   // row id → outbox row
  stateEntries: new Map(), // mesh + "\n" + key → entry
  memories: [],
  lastSeen: new Map(), // mesh + "\n" + key → ISO time a peer was last heard of
  convFilter: "all",
  outboxFilter: "all",
  replyTo: null,       // {ref, mesh} of the message being answered
  live: "connecting",
};

// Elements.

const $ = (id) => document.getElementById(id);

// h builds an element: attrs are set as properties or attributes (never
// HTML), children are nodes or strings (made text nodes).
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
}

function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  append(el, children);
  return el;
}

// Words.

function shortKey(k) {
  return k ? k.slice(0, 8) : "";
}

function clock(iso) {
  const t = new Date(iso);
  if (isNaN(t)) return "";
  const today = new Date();
  const time = t.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  return t.toDateString() === today.toDateString() ? time : t.toLocaleDateString() + " " + time;
}

function ago(iso) {
  const ms = Date.now() - new Date(iso).getTime();
  if (!isFinite(ms)) return "";
  if (ms < 60e3) return "just now";
  if (ms < 3600e3) return Math.round(ms / 60e3) + " min ago";
  if (ms < 86400e3) return Math.round(ms / 3600e3) + " h ago";
  return Math.round(ms / 86400e3) + " d ago";
}

function isKey(s) {
  return typeof s === "string" && /^[0-9a-f]{64}$/.test(s);
}

function targetWords(m) {
  if (m.to_name) return m.to_name;
  if (m.to === "*") return "everyone";
  if (isKey(m.to)) return nameOf(m.mesh, m.to);
  return m.to || "?";
}

// nameOf is what a key goes by: a session here, the member, a peer.
function nameOf(mesh, key) {
  for (const se of state.sessions) if (se.session_pubkey === key) return se.display_name;
  for (const me of state.meshes) if (me.member_pubkey === key) return state.me;
  for (const p of state.peers.get(mesh) || []) if (p.pubkey === key || p.memberPubkey === key) return p.displayName;
  return shortKey(key);
}

function localKeys() {
  const keys = new Set();
  for (const se of state.sessions) if (se.session_pubkey) keys.add(se.session_pubkey);
  for (const me of state.meshes) keys.add(me.member_pubkey);
  return keys;
}

// deliveryState is the one place a message's delivery is put into words:
// everything that shows how far a message got asks it.
function deliveryState(m) {
  if (m.direction === "in") {
    if (m.surfaced) return surfacedState(m.surfaced, m.received_by);
    return m.seen_at ? { label: "read", cls: "seen", title: "seen " + clock(m.seen_at) }
      : { label: "unread", cls: "unread", title: "received " + clock(m.at) + ", not shown to a model yet" };
  }
  const o = m.outbox || {};
  const deliveries = m.deliveries || [];
  switch (o.status) {
    case "pending":
      return o.last_error ? { label: "stuck", cls: "stuck", title: o.last_error } : { label: "queued", cls: "queued", title: "in the outbox" };
    case "inflight":
      return { label: "sending", cls: "queued", title: "sent to the broker, waiting for its ack" };
    case "dead":
      return { label: "dead", cls: "dead", title: o.last_error || "gave up" };
    case "aborted":
      return { label: "requeued", cls: "seen", title: "replaced by a new send" };
    case "done": {
      const l = o.ladder;
      if (l && l.recipients.some((r) => rungRank[r.rung] >= rungRank.delivered)) return ladderState(l, m);
      const shown = deliveries.filter((d) => d.surfaced);
      if (shown.length && shown.length === deliveries.length) {
        return { ...surfacedState(shown[0].surfaced, shown.map((d) => d.to_name).join(", ")), title: shown.map((d) =>
          surfacedState(d.surfaced, d.to_name).title).join("; ") };
      }
      if (deliveries.length) {
        const names = deliveries.map((d) => d.to_name).join(", ");
        return { label: "delivered", cls: "done", title: "delivered to " + names + (shown.length ? "; shown to " + shown.map((d) => d.to_name).join(", ") : "") };
      }
      if (l && l.rung === "expired") return { label: "expired", cls: "dead", title: "no recipient took it before the broker let it go" };
      return { label: "sent", cls: "done", title: "the broker has it" + (o.delivered_at ? " since " + clock(o.delivered_at) : "") +
        (l && l.receipts === "off" ? "; its broker relays no receipts, so no more is known" : "") };
    }
  }
  return { label: o.status || "?", cls: "queued", title: "" };
}

// rungRank orders the rungs a recipient climbs.
const rungRank = { queued: 0, sent: 1, delivered: 2, surfaced: 3, replied: 4 };

// ladderState words a sent message's receipt ladder: a DM's recipient's
// highest rung, or a broadcast's summary ("3/4 surfaced"); the title has
// each recipient's rung.
function ladderState(l, m) {
  const title = l.recipients.map((r) => rungWords(r, r.name || (l.summary ? shortKey(r.pubkey) : targetWords(m)))).join("; ");
  if (l.summary) {
    const all = l.recipients.length >= (l.expected || 0) && l.recipients.every((r) => rungRank[r.rung] >= rungRank.surfaced);
    return { label: l.summary, cls: all ? "done" : "queued", title };
  }
  const r = l.recipients[0];
  switch (r.rung) {
    case "replied": return { label: "replied", cls: "done", title };
    case "surfaced": return { label: r.confirmed ? "shown" : "shown?", cls: r.confirmed ? "done" : "queued", title };
  }
  return { label: "delivered", cls: "done", title };
}

// rungWords is one recipient's rung in words.
function rungWords(r, who) {
  const after = (ms) => ms === undefined || ms === null ? "" : ms < 1000 ? " in " + ms + " ms" : " in " + (ms / 1000).toFixed(1) + " s";
  switch (r.rung) {
    case "replied": return who + " replied" + after(r.replied_ms);
    case "surfaced": return "shown to " + who + " via " + (r.via === "pull" ? "claudemesh inbox" : r.via === "hooks" ? "a hook" : r.via) +
      after(r.surfaced_ms) + (r.confirmed ? "" : ", not confirmed yet");
    case "delivered": return "delivered to " + who + "'s daemon" + after(r.delivered_ms) +
      (r.shares === "delivered" ? "; " + who + " does not share more" : "; not shown to its model yet");
    case "expired": return who + " never took it";
  }
  return "not delivered to " + who + " yet";
}

// surfacedState words how a message was shown to a model: by which path,
// and whether that is confirmed.
function surfacedState(sf, who) {
  const confirmed = sf.surfaced_confirmed;
  return { label: confirmed ? "shown" : "shown?", cls: confirmed ? "done" : "queued",
    title: "shown to " + (who || "the model") + " via " + (sf.surfaced_via || "an unrecorded path") + " at " + clock(sf.surfaced_at) +
      (confirmed ? (sf.surfaced_evidence ? " (" + sf.surfaced_evidence + ")" : "") : ", not confirmed yet") };
}

// The outbox order: a state never goes back.
function rank(o) {
  if (!o) return -1;
  const terminal = o.status === "done" || o.status === "dead" || o.status === "aborted";
  return (terminal ? 1e6 : 0) + (o.attempts || 0) * 2 + (o.status === "inflight" ? 1 : 0);
}

// Talking to the daemon.

async function get(path) {
  const r = await fetch(api(path), { credentials: "same-origin", headers: { Accept: "application/json" } });
  const body = await r.json().catch(() => ({}));
  if (r.status === 401) setLive("logged-out");
  if (!r.ok) throw new Error(body.message || body.error || r.statusText);
  return body;
}

async function post(path, body) {
  const r = await fetch(api(path), {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": state.csrf },
    body: JSON.stringify(body),
  });
  const out = await r.json().catch(() => ({}));
  if (r.status === 401) setLive("logged-out");
  if (!r.ok) throw new Error(out.message || out.error || r.statusText);
  return out;
}

async function loadOverview() {
  const o = await get("/v1/ui/overview");
  state.csrf = o.csrf;
  state.me = o.display_name;
  state.meshes = o.meshes;
  state.sessions = o.sessions;
}

async function loadPeers() {
  const r = await get("/v1/peers");
  const by = new Map();
  for (const me of state.meshes) by.set(me.slug, []);
  for (const p of r.peers || []) {
    if (!by.has(p.mesh)) by.set(p.mesh, []);
    by.get(p.mesh).push(p);
  }
  state.peers = by;
  state.peerErrors = r.errors || {};
}

async function loadMembers() {
  const r = await get("/v1/members");
  const by = new Map();
  for (const m of r.members || []) {
    if (!by.has(m.mesh)) by.set(m.mesh, []);
    by.get(m.mesh).push(m);
  }
  state.members = by;
}

async function loadHistory() {
  const r = await get("/v1/history?latest=true&limit=1000");
  for (const m of r.messages) putMessage(m);
}

async function loadOutbox() {
  const r = await get("/v1/outbox?limit=500");
  for (const row of r.items) putOutboxRow(row);
}

async function loadState() {
  const r = await get("/v1/state");
  state.stateEntries = new Map();
  for (const e of r.entries || []) state.stateEntries.set(e.mesh + "\n" + e.key, e);
}

async function loadAll() {
  try {
    await loadOverview();
    await Promise.all([loadPeers().catch(note), loadMembers().catch(note), loadHistory(), loadOutbox(), loadState().catch(note)]);
  } catch (e) {
    note(e);
  }
  render();
}

function note(e) {
  $("send-status").textContent = String(e.message || e);
}

function putMessage(m) {
  const key = m.direction + ":" + m.id;
  const had = state.messages.get(key);
  if (had && m.direction === "out" && rank(had.outbox) > rank(m.outbox)) {
    m = { ...m, outbox: had.outbox };
  }
  if (had && had.deliveries && !m.deliveries) m = { ...m, deliveries: had.deliveries };
  state.messages.set(key, m);
}

function putOutboxRow(row) {
  const had = state.outbox.get(row.id);
  if (had && rank(had) > rank(row)) return;
  state.outbox.set(row.id, row);
  const m = state.messages.get("out:" + row.id);
  if (m) putMessage({ ...m, outbox: { status: row.status, attempts: row.attempts, last_error: row.last_error || "", delivered_at: row.delivered_at || "" },
    broker_message_id: row.broker_message_id || m.broker_message_id, ref: row.broker_message_id || m.ref });
}

// The event stream.

function setLive(s) {
  state.live = s;
  const el = $("live");
  el.dataset.state = s;
  el.textContent = { live: "live", connecting: "connecting…", reconnecting: "reconnecting…", "logged-out": "logged out: run claudemesh ui" }[s] || s;
}

let refetchPeersTimer = 0;
function refetchPeersSoon() {
  clearTimeout(refetchPeersTimer);
  refetchPeersTimer = setTimeout(() => Promise.all([loadPeers(), loadMembers()]).then(render, note), 150);
}

let refetchOverviewTimer = 0;
function refetchOverviewSoon() {
  clearTimeout(refetchOverviewTimer);
  refetchOverviewTimer = setTimeout(() => loadOverview().then(render, note), 100);
}

function listen() {
  const es = new EventSource(api("/v1/events"));
  es.onopen = () => {
    setLive("live");
    loadAll(); // whatever happened while the stream was away
  };
  es.onerror = () => {
    if (state.live === "logged-out") return;
    setLive("reconnecting");
    if (es.readyState === EventSource.CLOSED) {
      // The stream was refused (a restarted daemon forgets logins) or the
      // daemon is away: listen again once it answers, unless logged out.
      es.close();
      retryListen(1000);
    }
  };
  const on = (kind, fn) => es.addEventListener(kind, (ev) => {
    let data;
    try { data = JSON.parse(ev.data); } catch { return; }
    fn(data);
    renderSoon();
  });
  on("message", (e) => {
    putMessage({
      direction: "in", id: e.id, ref: e.broker_message_id || e.id, mesh: e.mesh, at: e.ts,
      from_name: e.sender_name, from_pubkey: e.sender_pubkey, from_member_pubkey: e.sender_member_pubkey || "",
      to: e.target || e.recipient_pubkey, to_name: isKey(e.target || e.recipient_pubkey) ? nameOf(e.mesh, e.target || e.recipient_pubkey) : "",
      received_by: nameOf(e.mesh, e.recipient_pubkey), recipient_pubkey: e.recipient_pubkey,
      topic: e.topic || "", body: e.body, reply_to_id: e.reply_to_id || "", priority: e.priority,
      client_message_id: e.client_message_id, broker_message_id: e.broker_message_id || "",
    });
    state.lastSeen.set(e.mesh + "\n" + (e.sender_member_pubkey || e.sender_pubkey), e.ts);
    if (!knownPeer(e.mesh, e.sender_pubkey)) refetchPeersSoon();
  });
  on("outbox", (e) => {
    putOutboxRow(e.row);
    const had = state.messages.get("out:" + e.message.id);
    putMessage({ ...e.message, deliveries: had ? had.deliveries : undefined });
  });
  on("surfaced", (e) => {
    const sf = { surfaced_at: e.surfaced_at, surfaced_via: e.surfaced_via, surfaced_confirmed: e.surfaced_confirmed,
      surfaced_confirmed_at: e.surfaced_confirmed_at, surfaced_evidence: e.surfaced_evidence, surfaced_session: e.surfaced_session };
    const m = state.messages.get("in:" + e.id);
    if (m) state.messages.set("in:" + e.id, { ...m, surfaced: sf });
    for (const [k, o] of state.messages) {
      if (o.direction === "out" && (o.deliveries || []).some((d) => d.inbox_id === e.id)) {
        state.messages.set(k, { ...o, deliveries: o.deliveries.map((d) => d.inbox_id === e.id ? { ...d, surfaced: sf } : d) });
      }
    }
  });
  on("broker_status", () => refetchOverviewSoon());
  on("session", () => refetchOverviewSoon());
  on("profile", () => refetchPeersSoon());
  for (const kind of ["peer_join", "peer_leave", "system"]) {
    on(kind, (e) => {
      if (e.pubkey) state.lastSeen.set(e.mesh + "\n" + e.pubkey, e.ts);
      refetchPeersSoon();
    });
  }
  on("state", (e) => state.stateEntries.set(e.mesh + "\n" + e.key, { mesh: e.mesh, key: e.key, value: e.value, updatedBy: e.updatedBy, updatedAt: e.ts }));
  on("memory", (e) => {
    if (e.action === "forgotten") state.memories = state.memories.filter((m) => m.id !== e.id);
    else state.memories.unshift({ id: e.id, mesh: e.mesh, content: e.content, rememberedAt: e.ts, rememberedBy: state.me });
  });
}

function retryListen(delay) {
  setTimeout(() => get("/v1/ui/overview").then(listen, () => {
    if (state.live !== "logged-out") retryListen(Math.min(delay * 2, 30e3));
  }), delay);
}

function knownPeer(mesh, key) {
  return (state.peers.get(mesh) || []).some((p) => p.pubkey === key || p.memberPubkey === key);
}

// Deriving what to show.

// messagesShown is every message once: a received copy of a message sent
// from here becomes a delivery of the sent one.
function messagesShown() {
  const out = [];
  const sentByBroker = new Map();
  for (const m of state.messages.values()) {
    if (m.direction === "out" && m.broker_message_id) sentByBroker.set(m.broker_message_id, m);
  }
  const extra = new Map();
  for (const m of state.messages.values()) {
    if (m.direction === "in" && m.broker_message_id && sentByBroker.has(m.broker_message_id)) {
      const sent = sentByBroker.get(m.broker_message_id);
      const list = extra.get(sent) || [];
      list.push({ inbox_id: m.id, to: m.recipient_pubkey || m.to, to_name: m.received_by || m.to_name, at: m.at, surfaced: m.surfaced });
      extra.set(sent, list);
      continue;
    }
    if (m.direction === "out" && m.outbox && m.outbox.status === "aborted") continue;
    out.push(m);
  }
  return out.map((m) => {
    const more = extra.get(m);
    if (!more) return m;
    const have = new Set((m.deliveries || []).map((d) => d.inbox_id));
    return { ...m, deliveries: [...(m.deliveries || []), ...more.filter((d) => !have.has(d.inbox_id))] };
  }).sort((a, b) => a.at < b.at ? -1 : a.at > b.at ? 1 : 0);
}

function isDM(m) {
  return isKey(m.to);
}

// conversationOf names the two sides of a DM: this machine's party and the
// other one, so that both directions of a talk land together.
function conversationOf(m) {
  const local = localKeys();
  let here, there;
  if (m.direction === "out") {
    here = m.from_name;
    there = targetWords(m);
  } else {
    here = m.received_by || targetWords(m);
    there = m.from_name;
    if (local.has(m.from_pubkey)) [here, there] = [m.from_name, here];
  }
  const pair = [here, there].sort();
  return { key: m.mesh + "\n" + pair.join("\n"), title: pair[0] + " ↔ " + pair[1], mesh: m.mesh };
}

// threads orders messages as trees: a reply sits under the message whose
// ref it quotes, when that message is in the same list.
function threads(list) {
  const byRef = new Map();
  for (const m of list) byRef.set(m.ref, m);
  const children = new Map();
  const roots = [];
  for (const m of list) {
    const parent = m.reply_to_id && m.reply_to_id !== m.ref ? byRef.get(m.reply_to_id) : null;
    if (parent) {
      if (!children.has(parent.ref)) children.set(parent.ref, []);
      children.get(parent.ref).push(m);
    } else {
      roots.push(m);
    }
  }
  const walk = (m, depth, seen) => {
    if (seen.has(m.ref)) return [];
    seen.add(m.ref);
    return [{ m, depth }, ...(children.get(m.ref) || []).flatMap((c) => walk(c, depth + 1, seen))];
  };
  const seen = new Set();
  return roots.flatMap((r) => walk(r, 0, seen));
}

// Rendering.

// renderSoon draws once for a burst of events.
let renderTimer = 0;
function renderSoon() {
  if (!renderTimer) renderTimer = setTimeout(() => { renderTimer = 0; render(); }, 16);
}

function render() {
  renderHeader();
  renderMeshes();
  renderSessions();
  renderPeers();
  const shown = messagesShown();
  renderConversations(shown);
  renderBroadcasts(shown);
  renderOutbox();
  renderShared();
  renderSendBox();
  renderCharts(shown);
}

function renderHeader() {
  $("whoami").textContent = state.me ? "· " + state.me : "";
}

function linkDot(st) {
  return h("span", { class: "dot dot-" + (st || "none"), title: st || "no link" });
}

function renderMeshes() {
  replace($("mesh-list"), state.meshes.length ? state.meshes.map((me) =>
    h("div", { class: "mesh", dataset: { mesh: me.slug } },
      h("div", {}, linkDot(me.link), " ", h("b", {}, me.slug), me.role ? h("span", { class: "tag" }, me.role) : null),
      h("div", { class: "dim small" }, me.broker_url, " · ", me.link),
      me.last_error ? h("div", { class: "err small" }, me.last_error) : null)) : h("div", { class: "dim" }, "no mesh joined yet"));
}

function renderSessions() {
  replace($("session-list"), state.sessions.length ? state.sessions.map((se) =>
    h("div", { class: "session", dataset: { session: se.session_id } },
      h("div", {}, linkDot(se.link), " ", h("b", {}, se.display_name), " ", h("span", { class: "dim" }, se.mesh),
        se.role ? h("span", { class: "tag" }, se.role) : null),
      h("div", { class: "dim small" }, se.cwd || "", se.groups.length ? " · " + se.groups.map((g) => "@" + g).join(" ") : ""))) :
    h("div", { class: "dim" }, "none registered: claudemesh launch starts one"));
}

function renderPeers() {
  const local = localKeys();
  const blocks = [];
  for (const me of state.meshes) {
    const rows = (state.peers.get(me.slug) || []).filter((p) => p.peerRole !== "control-plane");
    const online = new Set(rows.map((p) => p.pubkey));
    // Who was heard from but is not online now.
    const offline = new Map();
    for (const m of state.messages.values()) {
      if (m.mesh !== me.slug || m.direction !== "in" || online.has(m.from_pubkey) || local.has(m.from_pubkey)) continue;
      const seen = state.lastSeen.get(me.slug + "\n" + (m.from_member_pubkey || m.from_pubkey)) || m.at;
      const had = offline.get(m.from_pubkey);
      if (!had || had.seen < seen) offline.set(m.from_pubkey, { name: m.from_name, seen, member: m.from_member_pubkey });
    }
    // Members known to the broker with nobody online.
    const onlineMembers = new Set(rows.map((p) => p.memberPubkey));
    for (const mem of state.members.get(me.slug) || []) {
      if (mem.online || onlineMembers.has(mem.pubkey) || local.has(mem.pubkey) || offline.has(mem.pubkey)) continue;
      if ([...offline.values()].some((o) => o.member === mem.pubkey)) continue;
      offline.set(mem.pubkey, { name: mem.displayName || shortKey(mem.pubkey), seen: state.lastSeen.get(me.slug + "\n" + mem.pubkey) || "" });
    }
    blocks.push(h("div", { class: "peer-mesh" }, h("div", { class: "dim small" }, me.slug),
      rows.map((p) => peerRow(p, local)),
      [...offline.values()].map((o) => h("div", { class: "peer offline" },
        h("div", {}, h("span", { class: "dot dot-none" }), " ", h("b", {}, o.name)),
        h("div", { class: "dim small" }, o.seen ? "offline · last seen " + ago(o.seen) : "offline"))),
      state.peerErrors[me.slug] ? h("div", { class: "err small" }, state.peerErrors[me.slug]) : null,
      !rows.length && !offline.size ? h("div", { class: "dim small" }, "nobody else yet") : null));
  }
  replace($("peer-list"), blocks);
}

function peerRow(p, local) {
  const groups = (p.groups || []).map((g) => "@" + g.name + (g.role ? ":" + g.role : ""));
  const surfacing = p.profile && p.profile.surfacing;
  return h("div", { class: "peer", dataset: { pubkey: p.pubkey } },
    h("div", {}, h("span", { class: "dot dot-" + (p.status || "idle"), title: p.status || "" }), " ",
      h("b", {}, p.displayName || shortKey(p.pubkey)),
      local.has(p.pubkey) ? h("span", { class: "tag" }, "here") : null,
      p.role ? h("span", { class: "tag" }, p.role) : null,
      h("span", { class: "dim small" }, " " + (p.status || ""))),
    p.summary ? h("div", { class: "summary" }, p.summary) : null,
    h("div", { class: "dim small" },
      groups.length ? groups.join(" ") + " · " : "",
      surfacing ? h("span", { class: "surfacing", title: surfacingWords[surfacing] || "" }, "receives by " + surfacing) : null,
      surfacing ? " · " : "",
      "online since " + clock(p.connectedAt)));
}

// surfacingWords says what each way of reaching a session's model means.
const surfacingWords = {
  channel: "messages appear in its Claude Code session as they arrive",
  hooks: "messages reach its model at its next prompt, tool call or stop",
  pull: "it sees messages only when it runs claudemesh inbox",
};

function messageEl(m, depth) {
  const d = deliveryState(m);
  const body = m.body === null || m.body === undefined ? h("div", { class: "body undecryptable" }, "(could not be decrypted)")
    : h("div", { class: "body" }, m.body);
  return h("article", { class: "msg " + m.direction + (depth ? " reply depth-" + Math.min(depth, 4) : ""),
    dataset: { id: m.id, ref: m.ref, direction: m.direction } },
    h("div", { class: "meta" },
      h("b", { class: "who" }, m.from_name), " → ", h("span", { class: "to" }, targetWords(m)),
      m.priority && m.priority !== "next" ? h("span", { class: "tag prio-" + m.priority }, m.priority) : null,
      h("time", { datetime: m.at, title: m.at }, clock(m.at)),
      h("span", { class: "dim" }, m.mesh),
      h("span", { class: "state state-" + d.cls, title: d.title }, d.label),
      h("button", { type: "button", class: "link", title: "answer in this thread", onclick: () => replyTo(m) }, "reply")),
    body);
}

function replyTo(m) {
  const local = localKeys();
  state.replyTo = { ref: m.ref, mesh: m.mesh, who: m.from_name };
  $("send-mesh").value = m.mesh;
  if (m.direction === "in") {
    $("send-to").value = local.has(m.from_pubkey) ? m.from_name : m.from_name;
    const se = state.sessions.find((x) => x.session_pubkey === m.recipient_pubkey || x.session_pubkey === m.to);
    $("send-as").value = se ? se.session_id : "";
  } else {
    $("send-to").value = isDM(m) ? targetWords(m) : m.to;
    const se = state.sessions.find((x) => x.session_pubkey === m.from_pubkey);
    $("send-as").value = se ? se.session_id : "";
  }
  renderSendBox();
  $("send-text").focus();
}

function renderConversations(shown) {
  const convs = new Map();
  for (const m of shown) {
    if (!isDM(m)) continue;
    const c = conversationOf(m);
    if (!convs.has(c.key)) convs.set(c.key, { ...c, list: [] });
    convs.get(c.key).list.push(m);
  }
  const ordered = [...convs.values()].sort((a, b) => {
    const la = a.list[a.list.length - 1].at, lb = b.list[b.list.length - 1].at;
    return la < lb ? 1 : la > lb ? -1 : 0;
  });
  if (state.convFilter !== "all" && !convs.has(state.convFilter)) state.convFilter = "all";
  replace($("conv-filter"),
    h("button", { type: "button", class: state.convFilter === "all" ? "on" : "", onclick: () => { state.convFilter = "all"; render(); } }, "All"),
    ordered.map((c) => h("button", { type: "button", class: state.convFilter === c.key ? "on" : "", title: c.mesh,
      onclick: () => { state.convFilter = c.key; render(); } }, c.title, h("span", { class: "count" }, String(c.list.length)))));
  const visible = ordered.filter((c) => state.convFilter === "all" || state.convFilter === c.key);
  replace($("conv-view"), visible.length ? visible.map((c) =>
    h("section", { class: "conv", dataset: { conv: c.title } },
      h("h3", {}, c.title, " ", h("span", { class: "dim small" }, c.mesh)),
      threads(c.list).map(({ m, depth }) => messageEl(m, depth)))) :
    h("div", { class: "empty" }, "No direct messages yet. Send one below, or run claudemesh send <peer> \"…\"."));
}

function renderBroadcasts(shown) {
  const groups = new Map(); // mesh + group → members
  for (const [mesh, rows] of state.peers) {
    for (const p of rows) {
      for (const g of p.groups || []) {
        const k = mesh + "\n@" + g.name;
        if (!groups.has(k)) groups.set(k, { mesh, name: "@" + g.name, members: [] });
        groups.get(k).members.push(p.displayName + (g.role ? " (" + g.role + ")" : ""));
      }
    }
  }
  for (const se of state.sessions) {
    for (const g of se.groups) {
      const name = "@" + g.split(":")[0];
      const k = se.mesh + "\n" + name;
      if (!groups.has(k)) groups.set(k, { mesh: se.mesh, name, members: [] });
      if (!groups.get(k).members.some((x) => x.startsWith(se.display_name))) groups.get(k).members.push(se.display_name);
    }
  }
  replace($("group-list"), groups.size ? [...groups.values()].map((g) =>
    h("div", { class: "group" }, h("b", {}, g.name), " ", h("span", { class: "dim small" }, g.mesh), ": ", g.members.join(", "))) :
    h("div", { class: "dim" }, "no groups: sessions join one with launch --groups"));
  const by = new Map();
  for (const m of shown) {
    if (isDM(m)) continue;
    const k = m.mesh + "\n" + (m.to || "?");
    if (!by.has(k)) by.set(k, { mesh: m.mesh, to: m.to === "*" ? "everyone (*)" : m.to || "a broadcast or group", list: [] });
    by.get(k).list.push(m);
  }
  replace($("broadcast-view"), by.size ? [...by.values()].map((b) =>
    h("section", { class: "conv" }, h("h3", {}, b.to, " ", h("span", { class: "dim small" }, b.mesh)),
      threads(b.list).map(({ m, depth }) => messageEl(m, depth)))) :
    h("div", { class: "empty" }, "No broadcasts yet."));
}

// stuck: waiting with an error, or waiting longer than a minute.
function isStuck(row) {
  if (row.status === "inflight") return Date.now() - new Date(row.next_attempt_at).getTime() > 0;
  return row.status === "pending" && (!!row.last_error || row.attempts > 0 || Date.now() - new Date(row.enqueued_at).getTime() > 60e3);
}

function renderOutbox() {
  const rows = [...state.outbox.values()].sort((a, b) => a.enqueued_at < b.enqueued_at ? 1 : -1);
  const stuck = rows.filter(isStuck).length, dead = rows.filter((r) => r.status === "dead").length;
  const badge = $("outbox-badge");
  badge.hidden = !(stuck + dead);
  badge.textContent = String(stuck + dead);
  for (const b of $("outbox-filter").querySelectorAll("button")) b.classList.toggle("on", b.dataset.filter === state.outboxFilter);
  const keep = { all: () => true, stuck: isStuck, dead: (r) => r.status === "dead" }[state.outboxFilter];
  const body = $("outbox-table").tBodies[0];
  const shown = rows.filter(keep);
  replace(body, shown.length ? shown.map((r) => {
    const m = state.messages.get("out:" + r.id);
    const st = r.status === "pending" && isStuck(r) ? "stuck" : r.status;
    const requeueable = r.status === "pending" || r.status === "inflight" || r.status === "dead";
    return h("tr", { class: "row-" + st, dataset: { id: r.id, status: r.status } },
      h("td", {}, outboxStateCell(r, m, st)),
      h("td", {}, m ? targetWords(m) : (isKey(r.target) ? nameOf(r.mesh, r.target) : r.target)),
      h("td", { class: "clip" }, m && m.body ? m.body : "(" + r.payload_bytes + " bytes)"),
      h("td", {}, r.mesh),
      h("td", {}, String(r.attempts)),
      h("td", { title: r.enqueued_at }, clock(r.enqueued_at)),
      h("td", { class: "err small" }, r.last_error || ""),
      h("td", {}, requeueable ? h("button", { type: "button", class: "requeue", onclick: () => requeue(r.id) }, "Requeue") : null));
  }) : h("tr", {}, h("td", { colspan: 8, class: "empty" }, "Nothing here.")));
}

// outboxStateCell is a row's state; a sent row's is its ladder.
function outboxStateCell(r, m, st) {
  if (st === "done") {
    const d = deliveryState({ to: r.target, mesh: r.mesh, ...(m || {}), direction: "out", outbox: { ...((m && m.outbox) || {}), status: "done", ladder: r.ladder } });
    return h("span", { class: "state state-" + d.cls, title: d.title }, d.label);
  }
  return h("span", { class: "state state-" + (st === "dead" ? "dead" : st === "aborted" ? "seen" : st === "stuck" ? "stuck" : "queued") }, st);
}

async function requeue(id) {
  try {
    const r = await post("/v1/outbox/requeue", { id });
    $("send-status").textContent = "requeued as " + r.new_row_id;
  } catch (e) {
    note(e);
  }
}

function renderShared() {
  const entries = [...state.stateEntries.values()].sort((a, b) => (a.mesh + a.key < b.mesh + b.key ? -1 : 1));
  replace($("state-list"), entries.length ? h("table", {}, h("tbody", {}, entries.map((e) =>
    h("tr", { dataset: { key: e.key } }, h("td", {}, h("b", {}, e.key)), h("td", { class: "mono" }, JSON.stringify(e.value)),
      h("td", { class: "dim small" }, (e.updatedBy || "") + " · " + clock(e.updatedAt) + " · " + e.mesh))))) :
    h("div", { class: "dim" }, "no shared state: claudemesh state set <key> <value>"));
  replace($("memory-list"), state.memories.length ? state.memories.map((m) =>
    h("div", { class: "memory" }, h("div", {}, m.content), h("div", { class: "dim small" },
      (m.rememberedBy || "") + " · " + clock(m.rememberedAt) + " · " + m.mesh + (m.tags && m.tags.length ? " · " + m.tags.join(", ") : "")))) :
    h("div", { class: "dim" }, "recall shows the mesh's memories about a subject"));
}

function renderSendBox() {
  const as = $("send-as"), mesh = $("send-mesh");
  const asValue = as.value, meshValue = mesh.value;
  replace(as, h("option", { value: "" }, "the member (" + (state.me || "this machine") + ")"),
    state.sessions.map((se) => h("option", { value: se.session_id }, se.display_name + " · " + se.mesh)));
  as.value = [...as.options].some((o) => o.value === asValue) ? asValue : "";
  const session = state.sessions.find((x) => x.session_id === as.value);
  replace(mesh, state.meshes.map((me) => h("option", { value: me.slug }, me.slug)));
  mesh.value = session ? session.mesh : [...mesh.options].some((o) => o.value === meshValue) ? meshValue : (state.meshes[0] || {}).slug || "";
  mesh.disabled = !!session;
  const targets = new Set(["*"]);
  for (const p of state.peers.get(mesh.value) || []) {
    if (p.peerRole !== "control-plane" && p.displayName) targets.add(p.displayName);
    for (const g of p.groups || []) targets.add("@" + g.name);
  }
  replace($("send-targets"), [...targets].map((t) => h("option", { value: t })));
  const reply = $("send-reply");
  reply.hidden = !state.replyTo;
  if (state.replyTo) {
    replace(reply, "replying to " + state.replyTo.who + " (" + state.replyTo.ref + ") ",
      h("button", { type: "button", class: "link", onclick: () => { state.replyTo = null; renderSendBox(); } }, "cancel"));
  }
}

async function send(ev) {
  ev.preventDefault();
  const text = $("send-text").value;
  const to = $("send-to").value.trim();
  if (!text.trim() || !to) return;
  const body = { as: $("send-as").value, mesh: $("send-mesh").value, to, message: text };
  if (state.replyTo) body.reply_to_id = state.replyTo.ref;
  $("send-button").disabled = true;
  try {
    const r = await post("/v1/ui/send", body);
    $("send-status").textContent = "sent to " + to + ": " + r.status;
    $("send-text").value = "";
    state.replyTo = null;
    renderSendBox();
  } catch (e) {
    $("send-status").textContent = "not sent: " + (e.message || e);
  } finally {
    $("send-button").disabled = false;
  }
}

// Search.

async function search(ev) {
  ev.preventDefault();
  const q = $("search").value.trim();
  showTab("search");
  if (!q) return;
  const results = $("search-results");
  try {
    const r = await get("/v1/search?limit=100&q=" + encodeURIComponent(q));
    $("search-summary").textContent = r.messages.length + " message(s) match “" + q + "”, newest first";
    replace(results, r.messages.map((m) => {
      const el = messageEl(m, 0);
      el.classList.add("hit");
      const snip = el.querySelector(".body");
      if (m.snippet && snip) replace(snip, highlight(m.snippet));
      return el;
    }));
  } catch (e) {
    $("search-summary").textContent = "search failed: " + (e.message || e);
    replace(results);
  }
}

// highlight turns a snippet's \x02…\x03 marks into <mark> elements; the
// text stays text.
function highlight(snippet) {
  const out = [];
  snippet.split("\x02").forEach((part, i) => {
    if (i === 0) { out.push(part.replaceAll("\x03", "")); return; }
    const [hit, ...rest] = part.split("\x03");
    out.push(h("mark", {}, hit), rest.join(""));
  });
  return out;
}

async function recall(ev) {
  ev.preventDefault();
  const q = $("recall").value.trim();
  if (!q) return;
  try {
    const r = await get("/v1/memory?q=" + encodeURIComponent(q));
    state.memories = (r.matches || []).map((m) => ({ ...m }));
  } catch (e) {
    note(e);
  }
  renderShared();
}

// Pictures.

function renderCharts(shown) {
  const now = Date.now();
  const minutes = 60;
  const lines = state.meshes.map((me) => {
    const counts = new Array(minutes).fill(0);
    for (const m of shown) {
      if (m.mesh !== me.slug) continue;
      const age = Math.floor((now - new Date(m.at).getTime()) / 60e3);
      if (age >= 0 && age < minutes) counts[minutes - 1 - age]++;
    }
    return { mesh: me.slug, counts };
  });
  replace($("sparklines"), lines.length ? lines.map((l) => sparkline(l.mesh, l.counts)) : h("div", { class: "dim" }, "no mesh"));
  const latencies = [];
  for (const m of shown) {
    if (m.direction === "out" && m.outbox && m.outbox.status === "done" && m.outbox.delivered_at) {
      const ms = new Date(m.outbox.delivered_at).getTime() - new Date(m.at).getTime();
      if (ms >= 0) latencies.push(ms);
    }
  }
  replace($("latency"), latencyChart(latencies));
}

function sparkline(mesh, counts) {
  const w = 220, hgt = 36, maxC = Math.max(1, ...counts);
  const step = w / (counts.length - 1);
  const pts = counts.map((c, i) => (i * step).toFixed(1) + "," + (hgt - 2 - (c / maxC) * (hgt - 6)).toFixed(1)).join(" ");
  const total = counts.reduce((a, b) => a + b, 0);
  return h("div", { class: "spark", dataset: { mesh } },
    h("div", { class: "small" }, h("b", {}, mesh), " ", h("span", { class: "dim" }, total + " in the last hour, at most " + Math.max(...counts) + "/min")),
    s("svg", { viewBox: `0 0 ${w} ${hgt}`, width: w, height: hgt, role: "img", "aria-label": mesh + " messages per minute" },
      s("polyline", { points: pts, fill: "none", stroke: "currentColor", "stroke-width": 1.5 }),
      s("line", { x1: 0, y1: hgt - 1, x2: w, y2: hgt - 1, class: "axis" })));
}

const latencyBuckets = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, Infinity];

function latencyChart(latencies) {
  if (!latencies.length) return h("div", { class: "dim" }, "no message sent yet");
  const counts = latencyBuckets.map(() => 0);
  for (const ms of latencies) counts[latencyBuckets.findIndex((b) => ms < b)]++;
  const sorted = [...latencies].sort((a, b) => a - b);
  const pct = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
  const w = 220, hgt = 80, bw = w / counts.length, maxC = Math.max(...counts);
  const label = (b, i) => (i === 0 ? "<1" : b === Infinity ? "≥5s" : b >= 1000 ? b / 1000 + "s" : String(b));
  return h("div", { class: "latency" },
    s("svg", { viewBox: `0 0 ${w} ${hgt + 14}`, width: w, height: hgt + 14, role: "img", "aria-label": "send to delivered latency" },
      counts.map((c, i) => s("rect", { x: (i * bw + 1).toFixed(1), y: (hgt - (c / maxC) * hgt).toFixed(1), width: (bw - 2).toFixed(1),
        height: ((c / maxC) * hgt).toFixed(1), class: "bar" }, s("title", {}, c + " under " + label(latencyBuckets[i], i) + " ms"))),
      [0, 3, 6, 9, 12].map((i) => s("text", { x: (i * bw + bw / 2).toFixed(1), y: hgt + 12, "text-anchor": "middle", class: "tick" }, label(latencyBuckets[i], i)))),
    h("div", { class: "small" }, latencies.length + " sent · p50 " + pct(0.5) + " ms · p99 " + pct(0.99) + " ms · max " + sorted[sorted.length - 1] + " ms"));
}

// Tabs and start.

function showTab(name) {
  for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("on", b.dataset.tab === name);
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("on", t.id === "tab-" + name);
}

function start() {
  for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  for (const b of $("outbox-filter").querySelectorAll("button")) {
    b.addEventListener("click", () => { state.outboxFilter = b.dataset.filter; renderOutbox(); });
  }
  $("send-form").addEventListener("submit", send);
  $("send-as").addEventListener("change", renderSendBox);
  $("send-mesh").addEventListener("change", renderSendBox);
  $("search-form").addEventListener("submit", search);
  $("recall-form").addEventListener("submit", recall);
  // The hour's window moves on by itself; the data only comes by events.
  setInterval(() => renderCharts(messagesShown()), 60e3);
  listen();
}

start();
