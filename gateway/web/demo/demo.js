// The development demo: a whole chat on the browser client (/client/burrow.js), no build.
// Everything a user types is shown with textContent, never as HTML. Each room's messages
// are a RoomState (/client/roomstate.js) fed with the client's message and change events.
import { BurrowClient, ChatError, RoomState } from "/client/burrow.js";
import { el, messageItem } from "./messages.js";
import { MentionBox } from "./mentions.js";
import { actions, renderThread, wire } from "./lifecycle.js";
import { blockButton, blockedItem, refreshInvitations, wireProtect } from "./protect.js";
import { keepEvent, memberActions, noteRefusal, refreshRoomInfo, renderNotice, timeline,
  wireModeration } from "./moderate.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const TYPING_SHOWN_MS = 6000; // about twice the server's typing interval (3 s)
const HISTORY = 50;
const MAX_SEQ = 2 ** 53;

const demo = {
  client: null,
  user: null,
  active: null,
  rooms: new Map(), // id -> {id, name, role, readSeq, state: RoomState, dividerAt, events, info}
  online: new Map(), // user -> {online, version}
  typing: new Map(), // room -> Map(user -> until ms)
  pending: new Map(), // client_id -> {room, body}
  states: [],
  replyTo: null, // the message the composer answers
  file: null, // the file the next send uploads and attaches
  thread: null, // the root id of the open thread
  editing: null, // {id, form}: the message being edited in place
  picking: null, // the message whose emoji picker is open
  urls: new Map(), // attachment id -> {url, until} or "asking"
  mentions: null, // the composer's MentionBox
};
window.burrowDemo = demo; // for the browser tests and for poking at it in the console
wire(demo, () => renderMessages());

async function devToken(user) {
  const response = await fetch("/v1/dev/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user }),
  });
  const data = await response.json();
  if (!response.ok) throw new ChatError(data.error?.code ?? "error", data.error?.message ?? "");
  return data.token;
}

// -- rendering ------------------------------------------------------------------------

function lastSeq(room) {
  return room.state.seq;
}

function renderRooms() {
  const list = $("rooms");
  list.replaceChildren();
  for (const room of [...demo.rooms.values()].sort((a, b) => a.id.localeCompare(b.id))) {
    const item = el("li", room.id === demo.active ? "active" : "");
    item.dataset.room = room.id;
    item.append(el("span", "name", room.name || room.id));
    const unread = room.state.list().filter((m) => m.seq > room.readSeq).length;
    if (unread && room.id !== demo.active) item.append(el("span", "unread", String(unread)));
    item.addEventListener("click", () => openRoom(room.id));
    list.append(item);
  }
  $("empty").hidden = demo.rooms.size > 0 && demo.active !== null;
}

function renderMessages() {
  const room = demo.rooms.get(demo.active);
  const list = $("messages");
  const refocus = demo.editing && demo.editing.input === document.activeElement;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren();
  if (!room) return;
  const ui = actions(room);
  const show = (m) => (demo.client.isBlocked(m.sender) ? blockedItem(m) : messageItem(m, ui));
  for (const [seq, item] of timeline(room.state.list(), room.events, show)) {
    if (room.dividerAt !== null && seq === room.dividerAt) list.append(el("li", "divider", "new"));
    list.append(item); // a message, or a moderation event's line
  }
  if (atBottom) list.scrollTop = list.scrollHeight;
  renderThread();
  if (refocus) demo.editing.input.focus();
  const pending = $("pending");
  pending.replaceChildren();
  for (const [clientId, send] of demo.pending) {
    if (send.room !== demo.active) continue;
    const item = el("li", "pending", `${send.body} (sending…)`);
    item.dataset.clientId = clientId;
    pending.append(item);
  }
}

function renderMembers(members) {
  const list = $("members");
  list.replaceChildren();
  for (const member of members) {
    const status = demo.online.get(member.user);
    const online = member.user === demo.user || status?.online;
    const item = el("li", online ? "member online" : "member offline");
    item.dataset.user = member.user;
    item.append(el("span", "dot"), el("span", "name", member.user));
    if (member.user !== demo.user) item.append(blockButton(demo, member.user));
    item.append(...memberActions(demo, member)); // for the owner and moderators
    // my own pointer as I move it; the others' as of the last fetch (every 10 s)
    const read = member.user === demo.user ? demo.rooms.get(demo.active)?.readSeq : member.read_seq;
    if (read !== undefined) item.append(el("span", "read", `read #${read}`));
    list.append(item);
  }
}

function renderTyping() {
  const now = Date.now();
  const typing = demo.typing.get(demo.active) ?? new Map();
  const who = [...typing].filter(([, until]) => until > now).map(([user]) => user);
  $("typing").textContent = who.length ? `${who.join(", ")} ${who.length > 1 ? "are" : "is"} typing…` : "";
}

function showState(state) {
  demo.states.push(state);
  const badge = $("state");
  badge.dataset.state = state;
  badge.textContent = { connecting: "connecting…", reconnecting: "reconnecting…" }[state] ?? state;
}

// -- rooms ----------------------------------------------------------------------------

let membersOfActive = [];

async function refreshMembers() {
  if (!demo.active) return;
  const room = demo.active;
  try {
    const [members, presence] = await Promise.all([
      demo.client.members(room), demo.client.presence(room)]);
    for (const entry of presence) {
      const known = demo.online.get(entry.user);
      // the answer has no version: it stands until a newer event arrives
      if (!known || known.fromFetch) demo.online.set(entry.user, { online: entry.online, version: -1, fromFetch: true });
    }
    if (room === demo.active) {
      membersOfActive = members;
      renderMembers(members);
    }
  } catch (err) {
    $("room-error").textContent = err.message;
  }
}

async function openRoom(id) {
  demo.active = id;
  const room = demo.rooms.get(id);
  Object.assign(demo, { thread: null, replyTo: null, editing: null, picking: null });
  $("replying").hidden = true;
  $("room").hidden = false;
  $("room-title").textContent = room.name ? `${room.name} (${room.id})` : room.id;
  $("add-member").hidden = room.role !== "owner";
  $("room-error").textContent = "";
  room.dividerAt = room.state.list().find((m) => m.seq > room.readSeq)?.seq ?? null;
  renderRooms();
  renderMessages();
  renderTyping();
  markRead();
  renderNotice(demo);
  await Promise.all([refreshMembers(), showNotifyLevel(id),
    refreshRoomInfo(demo, id, () => { renderMembers(membersOfActive); renderMessages(); })]);
  $("compose-body").focus();
}

/** The room header's notification level (All / Mentions / Nothing). */
async function showNotifyLevel(id) {
  try {
    const rule = await demo.client.roomNotifications(id);
    if (id === demo.active) $("room-notify").value = rule.level;
  } catch (err) {
    $("room-error").textContent = err.message;
  }
}

/** Load a room's newest messages, then follow it from the last one (no gap, no repeat). */
async function follow(info) {
  const room = { id: info.id, name: info.name, role: info.role, readSeq: info.read_seq ?? 0,
    state: new RoomState(demo.user), dividerAt: null, events: [], info: null };
  demo.rooms.set(info.id, room);
  const page = await demo.client.history(info.id, { before: MAX_SEQ, limit: HISTORY });
  room.state.load(page);
  page.filter((e) => e.type === "moderation").forEach((e) => keepEvent(room, e));
  await demo.client.subscribe(info.id, { since: lastSeq(room) });
}

async function refreshRooms() {
  try {
    const rooms = await demo.client.listRooms();
    refreshInvitations(demo, refreshRooms); // BURROW_INVITES: rooms to accept
    await Promise.all(rooms.filter((r) => !demo.rooms.has(r.id)).map(follow));
    renderRooms();
    if (!demo.active && demo.rooms.size) await openRoom(rooms[0].id);
    else await refreshMembers(); // their read pointers move
  } catch (err) {
    if (!(err instanceof TypeError)) console.warn("rooms not refreshed:", err); // offline: later
  }
}

function markRead() {
  const room = demo.rooms.get(demo.active);
  if (!room || document.visibilityState !== "visible") return;
  const last = lastSeq(room);
  if (last > room.readSeq) {
    room.readSeq = last;
    demo.client.read(room.id, last);
    renderMembers(membersOfActive);
  }
}

// -- events ---------------------------------------------------------------------------

function onMessage(message) {
  const room = demo.rooms.get(message.room);
  if (!room) return;
  room.state.apply(message);
  if (message.type === "message") demo.typing.get(message.room)?.delete(message.sender);
  if (message.room === demo.active) {
    renderMessages();
    renderTyping();
    markRead();
  }
  renderRooms();
}

/** A moderation event: a line in the timeline; in the open room, my role, the room's
 * rules, the members' roles and the audit are read again. */
function onModeration(event) {
  const room = demo.rooms.get(event.room);
  if (!room) return;
  room.state.apply(event); // moves the room's seq on, changes no message
  keepEvent(room, event);
  if (event.room !== demo.active) return;
  renderMessages();
  markRead();
  refreshRoomInfo(demo, event.room, () => renderMessages());
  refreshMembers();
}

/** Forget *id* (I left, or was removed or banned): its room view goes at once. */
function leaveRoom(id) {
  demo.rooms.delete(id);
  if (demo.active === id) {
    demo.active = null;
    membersOfActive = [];
    $("room").hidden = true;
  }
  renderRooms();
}

function onPresence(event) {
  const known = demo.online.get(event.user);
  if (known && !known.fromFetch && known.version > event.version) return; // older news
  demo.online.set(event.user, { online: event.status === "online", version: event.version });
  renderMembers(membersOfActive);
}

function onTyping(event) {
  if (!demo.typing.has(event.room)) demo.typing.set(event.room, new Map());
  demo.typing.get(event.room).set(event.user, Date.now() + TYPING_SHOWN_MS);
  renderTyping();
  setTimeout(renderTyping, TYPING_SHOWN_MS + 50);
}

/** Send *body* to the open room: the file to attach is uploaded first, then the message
 * names it; `replyTo` and `mentions` go with it. */
async function sendMessage(body, { replyTo, mentions, file } = {}) {
  const room = demo.active;
  const clientId = crypto.randomUUID().replace(/-/g, "");
  demo.pending.set(clientId, { room, body: body || file?.name });
  renderMessages();
  try {
    const attachments = file ? [(await demo.client.upload(room, file)).id] : [];
    await demo.client.send(room, body, { clientId, replyTo, mentions, attachments });
  } catch (err) {
    $("room-error").textContent = `not sent: ${err.message}`;
    noteRefusal(demo, room, err); // muted, locked, slow_mode: the composer says so
  } finally {
    demo.pending.delete(clientId);
    renderMessages();
  }
}

async function start(user) {
  demo.user = user;
  const transport = params.get("transport") ?? "auto";
  const client = new BurrowClient({ url: location.origin, token: () => devToken(user), transport });
  demo.client = client;
  client.on("state", (state) => {
    showState(state);
    if (state === "resumed") {
      refreshMembers();
      client.loadBlocks().catch((err) => console.warn("blocks not loaded:", err));
    }
  });
  client.on("transport", (t) => { $("transport").textContent = `${t.transport} (${t.reason})`; });
  client.on("message", onMessage);
  client.on("change", onMessage);
  client.on("presence", onPresence);
  client.on("typing", onTyping);
  client.on("error", (err) => { $("room-error").textContent = err.message; });
  client.on("moderation", onModeration);
  client.on("unsubscribed", (frame) => {
    if (frame.reason !== "removed") return; // removed or banned: the room goes at once
    leaveRoom(frame.room);
    $("room-gone").textContent = `You are no longer a member of ${frame.room}.`;
  });
  demo.mentions = new MentionBox($("compose-body"), $("mention-list"),
    () => membersOfActive.map((m) => m.user), user);
  $("me").textContent = user;
  $("login").hidden = true;
  $("chat").hidden = false;
  $("transport").textContent = client.transport;
  await client.connect();
  wireProtect(demo, {
    rerender: () => { renderMessages(); renderMembers(membersOfActive); },
    leftRoom: (room) => {
      demo.client.unsubscribe(room);
      leaveRoom(room);
    },
  });
  wireModeration(demo);
  await client.loadBlocks().catch((err) => console.warn("blocks not loaded:", err));
  await refreshRooms();
  setInterval(refreshRooms, 10000); // rooms someone added me to
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const user = $("login-user").value.trim();
  try {
    await devToken(user); // a clear error here rather than a reconnect loop later
    history.replaceState(null, "", `?${new URLSearchParams({ ...Object.fromEntries(params), user })}`);
    await start(user);
  } catch (err) {
    $("login-error").textContent = err.message;
  }
});

$("create").addEventListener("submit", async (event) => {
  event.preventDefault();
  const id = $("create-id").value.trim();
  const members = $("create-members").value.split(",").map((m) => m.trim()).filter(Boolean);
  try {
    const room = await demo.client.createRoom(id, { members });
    $("create-error").textContent = "";
    $("create").reset();
    await follow({ ...room, read_seq: 0 });
    await openRoom(id);
  } catch (err) {
    $("create-error").textContent = err.message;
  }
});

$("add-member").addEventListener("submit", async (event) => {
  event.preventDefault();
  const user = $("add-member-user").value.trim();
  try {
    await demo.client.addMember(demo.active, user);
    $("add-member").reset();
    $("add-member-error").textContent = "";
    await refreshMembers();
  } catch (err) {
    $("add-member-error").textContent = err.message;
  }
});

$("compose").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("compose-body");
  const body = input.value;
  const file = demo.file;
  if ((!body.trim() && !file) || !demo.active) return;
  const mentions = demo.mentions.take();
  const replyTo = demo.replyTo;
  input.value = "";
  clearReply();
  clearFile();
  sendMessage(body, { replyTo, mentions, file });
});

function clearReply() {
  demo.replyTo = null;
  $("replying").hidden = true;
}

function clearFile() {
  demo.file = null;
  $("compose-file").value = "";
  $("attaching").hidden = true;
}

$("replying-cancel").addEventListener("click", clearReply);
$("attaching-cancel").addEventListener("click", clearFile);
$("compose-file").addEventListener("change", (event) => {
  demo.file = event.target.files[0] ?? null;
  $("attaching-name").textContent = demo.file ? `Attaching ${demo.file.name}` : "";
  $("attaching").hidden = !demo.file;
});
$("thread-close").addEventListener("click", () => { demo.thread = null; renderThread(); });
$("thread-compose").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("thread-body");
  if (!input.value.trim() || !demo.thread) return;
  const body = input.value;
  input.value = "";
  sendMessage(body, { replyTo: demo.thread });
});
$("compose-body").addEventListener("input", (event) => {
  if (demo.active && event.target.value) demo.client.typing(demo.active);
});
$("refresh").addEventListener("click", refreshRooms);
$("room-notify").addEventListener("change", async (event) => {
  const room = demo.active;
  try {
    const rule = await demo.client.setRoomNotifications(room, { level: event.target.value });
    if (room === demo.active) event.target.value = rule.level;
  } catch (err) {
    $("room-error").textContent = err.message;
    await showNotifyLevel(room);
  }
});
document.addEventListener("visibilitychange", markRead);

if (params.get("user")) {
  $("login-user").value = params.get("user");
  start(params.get("user")).catch((err) => { $("login-error").textContent = err.message; });
}
