// Burrow's browser client: one dependency-free ES module (docs/clients.md).
//
//   import { BurrowClient } from "./burrow.js";
//   const chat = new BurrowClient({ url: "https://chat.example.com", token: getToken });
//   chat.on("message", (m) => show(m));          // {room, seq, id, sender, client_id, ts, body}
//   chat.on("state", (s) => badge(s));           // connecting, connected, reconnecting, resumed, closed
//   await chat.connect();
//   await chat.subscribe("lobby", { since: 0 });
//   const ack = await chat.send("lobby", "hello"); // {room, seq, id, client_id} once stored
//   chat.on("change", (c) => apply(c));          // edit, delete, reaction (protocol v2)
//   await chat.edit("lobby", ack.id, "hello!");   // acked like a send; so are delete, react
//
// What it does for you (docs/protocol.md, "Resuming"): keeps per room the highest seq it
// delivered and, on every reconnect, subscribes each room again from there, so a message
// is delivered once and in order (a repeat is dropped by (room, seq)); resends every send
// without an ack with the same client_id, so a retry is stored once; reconnects with
// exponential back-off and jitter; asks `token()` for a fresh token before a connection
// and again after a 401 or a 4401 close (the token goes in headers only: the WebSocket's
// URL carries a one-time ticket, POST /v1/ws-ticket); and falls back to Server-Sent Events plus HTTP
// sends when a WebSocket cannot be opened but the HTTP API answers (a proxy that strips
// upgrades), with the same guarantees. It speaks protocol v2: edits, deletes and
// reactions arrive as "change" events, which RoomState (roomstate.js) applies.

import { CHANGE_TYPES } from "./roomstate.js";

export { RoomState, CHANGE_TYPES } from "./roomstate.js";

const ROOM_ID = /^[A-Za-z0-9_-]{1,64}$/;
const RETRYABLE = new Set(["timeout", "unavailable", "rate_limited", "moderation_unavailable"]);
// Close codes after which reconnecting cannot help (docs/protocol.md, "Close codes").
const FINAL = new Set([4403]);

/** The server refused something for good; `code` is its error code, `status` the HTTP
 * one; `retryAfterMs` the server's `retry_after_ms` (a mute's end, slow mode's wait;
 * null when it gave none): the same send passes after that wait. */
export class ChatError extends Error {
  constructor(code, message, status = 0, retryAfterMs = null) {
    super(`${code}: ${message}`);
    this.name = "ChatError";
    this.code = code;
    this.status = status;
    this.retryAfterMs = retryAfterMs;
  }
}

/** Milliseconds to wait before attempt `n` (0-based): doubling, capped, times 0.5-1.5. */
export function backoff(n, initial = 500, max = 8000, random = Math.random) {
  return Math.min(max, initial * 2 ** n) * (0.5 + random());
}

/** Seconds since the epoch at which a JWT expires, or null (it is not verified here). */
export function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    return typeof claims.exp === "number" ? claims.exp : null;
  } catch {
    return null;
  }
}

function badRoom(room) {
  return new ChatError("bad_room", `room ids match [A-Za-z0-9_-]{1,64}, not ${JSON.stringify(room)}`);
}

const roomPath = (room) => `/v1/rooms/${encodeURIComponent(room)}`;
const isBytes = (b) => b instanceof Blob || b instanceof ArrayBuffer || ArrayBuffer.isView(b);

function newClientId() {
  return globalThis.crypto?.randomUUID?.().replace(/-/g, "") ??
    Math.random().toString(36).slice(2) + Date.now().toString(36);
}

/**
 * Parses a Server-Sent Events byte stream (the WHATWG event-stream format) into
 * {event, data, id} objects; comments (keep-alives) come out as {event: "comment"}.
 */
export class SseParser {
  constructor() {
    this.buffer = "";
    this.reset();
  }
  reset() {
    this.event = "";
    this.data = [];
    this.id = null;
  }
  /** Feed decoded text; returns the events it completes. */
  feed(text) {
    this.buffer += text;
    const out = [];
    let end;
    while ((end = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = this.buffer.slice(0, end);
      const eol = this.buffer.startsWith("\r\n", end) ? 2 : 1;
      if (this.buffer[end] === "\r" && eol === 1 && end === this.buffer.length - 1) break;
      this.buffer = this.buffer.slice(end + eol);
      if (line === "") {
        if (this.data.length) {
          out.push({ event: this.event || "message", data: this.data.join("\n"), id: this.id });
        }
        this.reset();
      } else if (line.startsWith(":")) {
        out.push({ event: "comment", data: line.slice(1), id: null });
      } else {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") this.event = value;
        else if (field === "data") this.data.push(value);
        else if (field === "id") this.id = value;
      }
    }
    return out;
  }
}

/**
 * A connection to Burrow that survives disconnects.
 *
 * Options: `url` (the gateway, http(s)://host:port), `token` (a function returning a JWT
 * or a promise of one; called before each connection and after a 401 / 4401),
 * `transport` ("auto", "websocket" or "sse"), `backoff` ({initial, max} ms),
 * `pingInterval` (ms between liveness checks of a quiet WebSocket), `typingInterval`
 * (ms, at least the server's BURROW_TYPING_INTERVAL).
 */
export class BurrowClient {
  constructor(options) {
    const { url, token, transport = "auto", pingInterval = 15000 } = options;
    if (!url || typeof token !== "function") {
      throw new TypeError("BurrowClient needs {url, token: () => jwt}");
    }
    this.url = url.replace(/\/+$/, "");
    this.tokenSource = token;
    this.transport = transport === "auto" ? "websocket" : transport;
    this.auto = transport === "auto";
    this.backoffOptions = { initial: 500, max: 8000, ...options.backoff };
    this.pingInterval = pingInterval;
    this.state = "idle";
    this.last = new Map(); // room -> highest seq delivered
    this.rooms = new Map(); // room -> {since, waiters: [{resolve, reject}]}
    this.pending = new Map(); // client_id -> {room, frame, http, resolve, reject, attempt, timer}
    this.violations = []; // seqs that skipped ahead or came twice: a server bug, never expected
    this.uploadFlow = null; // "direct" or "presigned" (S3): learnt at the first upload
    this.listeners = new Map();
    this.token = null;
    this.attempt = 0;
    this.wsRefusedWhileHttpWorks = 0;
    this.closing = false;
    this.socket = null; // the WebSocket, or the AbortController of the SSE request
    this.timers = new Set();
    this.typingSent = new Map();
    this.typingLater = new Map();
    // the server's BURROW_TYPING_INTERVAL (3 s) and a little: it drops what comes sooner
    this.typingInterval = options.typingInterval ?? 3100;
    this.readSent = new Map();
    this.blocked = new Set(); // whom I block, as of the last loadBlocks() (or block/unblock)
  }

  /** `on("message" | "change" | "moderation" | "state" | "presence" | "typing" | "error" | "unsubscribed" |
   * "transport" | "disconnect" | "blocks", fn)`; returns a function that removes the listener. */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type).delete(fn);
  }

  emit(type, value) {
    for (const fn of this.listeners.get(type) ?? []) {
      try {
        fn(value);
      } catch (err) {
        console.error(`burrow: a ${type} listener threw`, err);
      }
    }
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.emit("state", state);
  }

  /** Open the connection; resolves once connected, rejects on a refused token. */
  connect() {
    this.closing = false;
    this.closeError = null;
    return new Promise((resolve, reject) => {
      const off = this.on("state", (s) => {
        if (s === "connected" || s === "resumed") {
          off();
          resolve();
        } else if (s === "closed") {
          off();
          reject(this.closeError ?? new ChatError("closed", "closed"));
        }
      });
      this.setState("connecting");
      this.open();
    });
  }

  /** Close for good: no reconnect; sends still without an ack reject with `closed`. */
  close() {
    this.closing = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.typingLater.clear();
    this.dropSocket();
    this.failAll(new ChatError("closed", "client closed"));
    this.setState("closed");
  }

  later(ms, fn) {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    this.timers.add(timer);
    return timer;
  }

  // -- tokens and the HTTP API --------------------------------------------------------

  async currentToken(force = false) {
    const exp = this.token && tokenExpiry(this.token);
    // Refresh a little early: a token that expires on the way is refused on arrival.
    if (force || !this.token || (exp !== null && exp - Date.now() / 1000 < 30)) {
      this.token = await this.tokenSource();
    }
    return this.token;
  }

  /** Call the HTTP API: resolves with the JSON answer (null for 204), rejects with a
   * ChatError carrying the server's code and the HTTP status. One retry after a 401,
   * with a fresh token. A Blob or bytes go as they are (an upload), anything else as JSON. */
  async api(method, path, body, headers = {}) {
    for (let tries = 0; ; tries++) {
      const token = await this.currentToken(tries > 0);
      const response = await fetch(this.url + path, {
        method,
        headers: {
          Authorization: `Bearer ${token}`,
          ...(body === undefined || isBytes(body) ? {} : { "Content-Type": "application/json" }),
          ...headers,
        },
        body: body === undefined || isBytes(body) ? body : JSON.stringify(body),
      });
      if (response.status === 401 && tries === 0) continue;
      const text = await response.text();
      let data = null;
      try {
        data = text ? JSON.parse(text) : null;
      } catch {
        data = null; // a proxy's error page, say: the status tells
      }
      if (!response.ok) {
        const error = data?.error ?? {};
        throw new ChatError(error.code ?? `http_${response.status}`,
          error.message ?? response.statusText, response.status, error.retry_after_ms ?? null);
      }
      return data;
    }
  }

  /** My rooms: [{id, name, role, read_seq}]. */
  async listRooms() {
    return (await this.api("GET", "/v1/rooms")).rooms;
  }

  /** Create a room I own, with initial members. */
  createRoom(id, { name = "", members = [] } = {}) {
    return this.api("POST", "/v1/rooms", { id, name, members });
  }

  /** Add *user* to *room* (owners and admins). */
  addMember(room, user) {
    return this.api("PUT", `/v1/rooms/${encodeURIComponent(room)}/members/${encodeURIComponent(user)}`);
  }

  /** Stored events (v2: messages in their current state, with reactions, and change
   * events), ascending: {after, before, limit}; only `before`: the newest. */
  async history(room, { after, before, limit, thread } = {}) {
    const query = new URLSearchParams({ v: "2" });
    for (const [key, value] of Object.entries({ after, before, limit, thread })) {
      if (value !== undefined) query.set(key, String(value));
    }
    return (await this.api("GET", `${roomPath(room)}/messages?${query}`)).messages;
  }

  /** The replies of the thread whose root is *root* (not the root), ascending. */
  thread(room, root, { after, limit } = {}) {
    return this.history(room, { after, limit, thread: root });
  }

  /** Upload *file* (a File or Blob) to *room*; resolves {id, name, type, size, width,
   * height}: name the id in `send(..., {attachments})` (docs/attachments.md). The bytes
   * go to the gateway, or with an S3 gateway straight to its bucket (a presigned POST,
   * then the gateway's check): the first upload asks for a grant (a refusal costs a
   * small request, where a refused direct upload would send the whole file for nothing)
   * and the gateway's 409 `use_direct_upload` / `use_presigned_upload` is remembered in
   * `uploadFlow`. */
  async upload(room, file, name = file.name ?? "file") {
    if (!ROOM_ID.test(room)) throw badRoom(room);
    const type = file.type || "application/octet-stream";
    const other = { use_direct_upload: "direct", use_presigned_upload: "presigned" };
    let flow = this.uploadFlow ?? "presigned";
    for (let tries = 0; tries < 2; tries++) {
      try {
        const done = flow === "presigned" ? await this.uploadToBucket(room, file, name, type)
          : await this.api("POST", `${roomPath(room)}/attachments?name=${encodeURIComponent(name)}`,
            file, { "Content-Type": type });
        this.uploadFlow = flow;
        return done;
      } catch (err) {
        if (!(err instanceof ChatError && err.status === 409 && other[err.code])) throw err;
        flow = other[err.code];
      }
    }
    throw new ChatError("bad_answer", "the gateway refuses both ways of uploading");
  }

  /** The S3 flow: a grant, the form to the bucket (the file last), the completion. */
  async uploadToBucket(room, file, name, type) {
    const grant = await this.api("POST", `${roomPath(room)}/attachments/uploads`,
      { name, type, size: file.size });
    const form = new FormData();
    for (const [key, value] of Object.entries(grant.upload.fields)) form.append(key, value);
    form.append("file", file); // last: S3 ignores fields after the file
    let sent;
    try {
      sent = await fetch(grant.upload.url, { method: "POST", body: form });
    } catch (err) {
      throw new ChatError("unavailable", `cannot reach the file store (or its CORS does not ` +
        `allow ${globalThis.location?.origin ?? "this origin"}): ${err.message}`);
    }
    if (!sent.ok) {
      const code = /<Code>([A-Za-z0-9.]{1,64})<\/Code>/.exec(await sent.text())?.[1] ?? `HTTP ${sent.status}`;
      throw new ChatError(sent.status >= 500 ? "unavailable" : code === "EntityTooLarge" ? "too_large"
        : "refused", `the file store refused the upload: ${code}`, sent.status);
    }
    return this.api("POST", `${roomPath(room)}/attachments/${encodeURIComponent(grant.id)}/complete`);
  }

  /** A signed, short-lived URL of attachment *id* (members only), for <img src> or a link. */
  async attachmentUrl(room, id) {
    return this.url + (await this.api("GET", `${roomPath(room)}/attachments/${encodeURIComponent(id)}`)).url;
  }

  /** Who of *room* is online now: [{user, online, active}]. Subscribe first, then
   * apply the presence events that follow (docs/protocol.md, "Presence and typing"). */
  async presence(room) {
    return (await this.api("GET", `/v1/rooms/${encodeURIComponent(room)}/presence`)).members;
  }

  /** My read pointers and roles of *room*'s members: [{user, role, read_seq}]. */
  async members(room) {
    return (await this.api("GET", `/v1/rooms/${encodeURIComponent(room)}/members`)).members;
  }

  /** My notification rule for *room*: {room, level: "all" | "mentions" | "nothing",
   * snooze_until: ms or null} (docs/devices-and-settings.md, "Notification rules"). */
  roomNotifications(room) {
    return this.api("GET", `/v1/me/rooms/${encodeURIComponent(room)}/notifications`);
  }

  /** Change it: `level` and/or `snoozeUntil` (ms since the epoch, null: none); resolves
   * with the rule now. */
  setRoomNotifications(room, { level, snoozeUntil } = {}) {
    const body = {};
    if (level !== undefined) body.level = level;
    if (snoozeUntil !== undefined) body.snooze_until = snoozeUntil;
    return this.api("PUT", `/v1/me/rooms/${encodeURIComponent(room)}/notifications`, body);
  }

  // -- protecting oneself (docs/moderation.md, "Users protect themselves") -----------

  /** Load whom I block into `blocked` (a Set) and emit "blocks" with it: a room's
   * stream still carries their messages (it has no gaps), so hide those whose
   * `isBlocked(m.sender)`. Call it after connect() and at "resumed" (a block made on
   * another device shows then). Resolves with [{user, at}]. */
  async loadBlocks() {
    const { blocks } = await this.api("GET", "/v1/me/blocks");
    this.blocked = new Set(blocks.map((b) => b.user));
    this.emit("blocks", this.blocked);
    return blocks;
  }

  isBlocked(user) {
    return this.blocked.has(user);
  }

  /** Block *user*: no pushes or digest lines of theirs, they cannot add me to rooms. */
  async block(user) {
    await this.api("PUT", `/v1/me/blocks/${encodeURIComponent(user)}`);
    this.blocked.add(user);
    this.emit("blocks", this.blocked);
  }

  async unblock(user) {
    await this.api("DELETE", `/v1/me/blocks/${encodeURIComponent(user)}`);
    this.blocked.delete(user);
    this.emit("blocks", this.blocked);
  }

  /** The list of whom I block: [{user, at}] (also refreshes `blocked`). */
  blocks() {
    return this.loadBlocks();
  }

  /** Leave *room*; *me* is my user id. An owner leaves only a room with no other
   * member (409 owner_stays): hand it over first. */
  leave(room, me) {
    return this.api("DELETE", `${roomPath(room)}/members/${encodeURIComponent(me)}`);
  }

  /** My pending invitations: [{id, room, name, by, at, expires_at}] (BURROW_INVITES). */
  async invitations() {
    return (await this.api("GET", "/v1/me/invitations")).invitations;
  }

  /** Join the room of invitation *id*: {room, user, added}. */
  acceptInvitation(id) {
    return this.api("POST", `/v1/me/invitations/${encodeURIComponent(id)}/accept`);
  }

  declineInvitation(id) {
    return this.api("POST", `/v1/me/invitations/${encodeURIComponent(id)}/decline`);
  }

  // -- moderation (docs/moderation.md) -----------------------------------------------

  /** Take moderation *action* in *room* (promote, demote, remove, mute, unmute, ban,
   * unban, slow_mode, lock, unlock, transfer) with `{user, seconds, reason}` as the
   * action needs; resolves with the server's answer {action, user, seq, audit, ...}.
   * One Idempotency-Key per call, reused when it retries (the server away: 503, 504,
   * a network error), so a retry completes the action instead of taking it twice. */
  async moderate(room, action, { user, seconds, reason } = {}) {
    if (!ROOM_ID.test(room)) throw badRoom(room);
    const body = { action };
    if (user !== undefined) body.user = user;
    if (seconds !== undefined) body.seconds = seconds;
    if (reason) body.reason = reason;
    const key = newClientId();
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.api("POST", `${roomPath(room)}/moderation`, body, { "Idempotency-Key": key });
      } catch (err) {
        const again = !(err instanceof ChatError) || RETRYABLE.has(err.code) || err.status >= 500;
        if (!again || attempt >= 3) throw err;
        await new Promise((resolve) => setTimeout(resolve,
          backoff(attempt, this.backoffOptions.initial, this.backoffOptions.max)));
      }
    }
  }

  /** The room as I see it: {id, name, owner, role (mine), slow_mode_s, locked,
   * muted_until (mine, ms, null when not muted)}. */
  roomInfo(room) {
    return this.api("GET", roomPath(room));
  }

  /** The room's moderation audit, newest first (owner, moderators, admins):
   * {records: [{id, action, user, by, reason, at, seq, seconds?, until?}], next};
   * pass `next` as `before` for the older page. */
  audit(room, { limit, before } = {}) {
    const query = new URLSearchParams();
    if (limit !== undefined) query.set("limit", String(limit));
    if (before !== undefined) query.set("before", before);
    return this.api("GET", `${roomPath(room)}/moderation/audit?${query}`);
  }

  /** Who is banned from *room*: [{user, by, reason, at}] (owner, moderators, admins). */
  async bans(room) {
    return (await this.api("GET", `${roomPath(room)}/bans`)).bans;
  }

  // -- rooms ----------------------------------------------------------------------------

  /** Subscribe; resolves with the seq the stream starts after. `since`: resume from
   * there (every later message comes, then the live ones); without it, live only. */
  subscribe(room, { since } = {}) {
    return new Promise((resolve, reject) => {
      if (!ROOM_ID.test(room)) return reject(badRoom(room));
      const entry = this.rooms.get(room) ?? { waiters: [] };
      entry.waiters.push({ resolve, reject });
      this.rooms.set(room, entry);
      if (since !== undefined) this.last.set(room, since);
      this.subscribeOnWire([room]);
    });
  }

  /** Stop receiving *room*. */
  unsubscribe(room) {
    this.rooms.delete(room);
    this.last.delete(room);
    if (this.transport === "websocket") this.frame({ type: "unsubscribe", room });
    else this.reopenStream();
  }

  /** Tell the room's other members this user is typing; call it on every keystroke.
   * One event per `typingInterval` goes out (the server drops more), the last one at
   * the end of the interval, so a typist who started within it is still announced. */
  typing(room) {
    const now = Date.now();
    const wait = (this.typingSent.get(room) ?? -Infinity) + this.typingInterval - now;
    if (wait > 0) {
      if (!this.typingLater.has(room)) {
        this.typingLater.set(room, this.later(wait, () => {
          this.typingLater.delete(room);
          this.typing(room);
        }));
      }
      return;
    }
    this.typingSent.set(room, now);
    if (this.transport === "websocket") this.frame({ type: "typing", room });
    else this.api("POST", `/v1/rooms/${encodeURIComponent(room)}/typing`).catch(() => {}); // best effort
  }

  /** Move this user's read pointer of *room* to *seq* (forward only). */
  read(room, seq) {
    if (seq <= (this.readSent.get(room) ?? 0)) return;
    this.readSent.set(room, seq);
    if (this.transport === "websocket") this.frame({ type: "read", room, seq });
    else this.api("PUT", `/v1/rooms/${encodeURIComponent(room)}/read`, { seq }).catch(() => this.readSent.delete(room));
  }

  /** Send; resolves with the ack once stored. Retried with the same client_id across
   * reconnects, timeouts and outages until it is stored or refused for good. Options:
   * `replyTo` (a message id), `mentions` ({users: [...], room: true}), `attachments`
   * (upload ids), `clientId`. */
  send(room, body, { replyTo, mentions, attachments, clientId = newClientId() } = {}) {
    const fields = { body };
    if (replyTo) fields.reply_to = replyTo;
    if (mentions && (mentions.room || mentions.users?.length)) fields.mentions = mentions;
    if (attachments?.length) fields.attachments = attachments;
    return this.request(room, clientId, { type: "send", ...fields }, ["POST", "", fields]);
  }

  /** Replace the body of my message *id*; acked (and retried) like a send. */
  edit(room, id, body, { clientId = newClientId() } = {}) {
    return this.request(room, clientId, { type: "edit", id, body },
      ["POST", `/${encodeURIComponent(id)}/edit`, { body }]);
  }

  /** Delete message *id* (mine, or any as the room's owner or an admin). */
  delete(room, id, { clientId = newClientId() } = {}) {
    return this.request(room, clientId, { type: "delete", id }, ["POST", `/${encodeURIComponent(id)}/delete`]);
  }

  /** Add my reaction *emoji* to message *id* (`remove`: take it back). */
  react(room, id, emoji, { remove = false, clientId = newClientId() } = {}) {
    return this.request(room, clientId, { type: "react", id, emoji, remove },
      ["POST", `/${encodeURIComponent(id)}/reactions`, { emoji, remove }]);
  }

  unreact(room, id, emoji, options = {}) {
    return this.react(room, id, emoji, { ...options, remove: true });
  }

  /** A frame acked by client_id: over the WebSocket as it is, over HTTP as `http`
   * ([method, path under .../messages, body]) with the client_id as Idempotency-Key. */
  request(room, clientId, frame, http) {
    return new Promise((resolve, reject) => {
      // refused here: on SSE a bad room would fail the whole stream, not one call
      if (!ROOM_ID.test(room)) return reject(badRoom(room));
      this.pending.set(clientId, { room, frame, http, resolve, reject, attempt: 0, timer: null });
      this.sendOnWire(clientId);
    });
  }

  // -- transports -----------------------------------------------------------------------

  open() {
    if (this.closing) return;
    if (this.transport === "websocket" && typeof WebSocket === "undefined") {
      this.useSse("this browser has no WebSocket");
    }
    if (this.transport === "websocket") this.openWebSocket();
    else this.openStream();
  }

  useSse(reason) {
    this.transport = "sse";
    this.emit("transport", { transport: "sse", reason });
  }

  dropSocket() {
    const socket = this.socket;
    this.socket = null;
    if (socket instanceof AbortController) socket.abort();
    else if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
      try {
        socket.close();
      } catch {
        /* already closed */
      }
    }
    clearTimeout(this.pingTimer);
  }

  /** The connection is gone: reconnect after a back-off, unless we are closing. */
  lost(delay) {
    this.dropSocket();
    if (this.closing) return;
    if (this.state !== "connecting") this.setState("reconnecting");
    const wait = delay ?? backoff(this.attempt, this.backoffOptions.initial, this.backoffOptions.max);
    this.attempt += 1;
    this.later(wait, () => this.open());
  }

  fail(error) {
    this.closeError = error;
    this.emit("error", error);
    this.dropSocket();
    this.failAll(error);
    this.closing = true;
    this.setState("closed");
  }

  /** After a close code: what to do next (docs/protocol.md, "Close codes"). */
  closed(code, reason) {
    this.emit("disconnect", { code, reason });
    if (FINAL.has(code)) {
      this.fail(new ChatError("forbidden", `closed ${code}: ${reason}`));
    } else if (code === 4401) {
      this.token = null; // expired: the next connection asks for a fresh one
      this.lost(0);
    } else if (code === 4429) {
      this.lost(this.backoffOptions.max);
    } else {
      this.lost();
    }
  }

  async openWebSocket() {
    try {
      await this.currentToken();
    } catch (err) {
      this.emit("error", err);
      return this.lost();
    }
    if (this.closing) return;
    // A browser cannot set a header on a WebSocket, and a URL ends up in proxy logs and
    // the history: the URL carries a one-time ticket, bought with the token in a header.
    let ticket;
    try {
      ({ ticket } = await this.api("POST", "/v1/ws-ticket"));
    } catch (err) {
      if (this.closing) return;
      if (err.status === 401) return this.tokenRefused();
      return this.lost(); // unreachable, rate limited or unavailable: back off
    }
    if (this.closing) return;
    const ws = new WebSocket(
      `${this.url.replace(/^http/, "ws")}/v1/ws?ticket=${encodeURIComponent(ticket)}`);
    this.socket = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.wsRefusedWhileHttpWorks = 0;
      this.connectionOpen();
      this.watchPing(ws);
    };
    ws.onmessage = (event) => {
      this.heard = true;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return; // not ours: the gateway only sends JSON
      }
      this.onFrame(frame);
    };
    ws.onclose = (event) => {
      if (this.socket !== ws) return;
      if (opened) return this.closed(event.code, event.reason);
      this.refusedBeforeOpen();
    };
  }

  /** The gateway refused the token: a fresh one next time, and give up after three. */
  tokenRefused() {
    this.token = null;
    if (this.attempt > 2) return this.fail(new ChatError("unauthorized", "token refused", 401));
    return this.lost();
  }

  /** A WebSocket that never opened: a bad token (the browser hides the 401), the
   * gateway down, or a proxy that refuses upgrades. The HTTP API tells which. */
  async refusedBeforeOpen() {
    this.socket = null;
    let status = 0;
    try {
      const token = await this.currentToken();
      const response = await fetch(`${this.url}/v1/rooms`, {
        headers: { Authorization: `Bearer ${token}` },
      });
      status = response.status;
    } catch {
      status = 0; // unreachable
    }
    if (this.closing) return;
    if (status === 401) return this.tokenRefused();
    if (status >= 200 && status < 300 && this.auto) {
      // Twice in a row, not once: the gateway may have come up between the two tries.
      this.wsRefusedWhileHttpWorks += 1;
      if (this.wsRefusedWhileHttpWorks >= 2) {
        this.useSse("the WebSocket is refused but HTTP works");
        return this.lost(0);
      }
    }
    this.lost();
  }

  watchPing(ws) {
    this.heard = true;
    const check = () => {
      if (this.socket !== ws) return;
      if (!this.heard) {
        ws.onclose = null; // silent for a whole interval after a ping: the link is dead
        return this.lost();
      }
      this.heard = false;
      this.frame({ type: "ping" }); // its pong (or any frame) proves the link
      this.pingTimer = setTimeout(check, this.pingInterval);
    };
    this.pingTimer = setTimeout(check, this.pingInterval);
  }

  /** A connection (WebSocket or stream) is open: subscribe every room, resend. */
  connectionOpen() {
    this.awaiting = new Set(this.rooms.keys());
    if (this.transport === "websocket") {
      for (const room of this.rooms.keys()) this.subscribeFrame(room);
    }
    for (const clientId of this.pending.keys()) this.sendOnWire(clientId);
    this.maybeSettled();
  }

  /** Every room is subscribed (again): connected the first time, resumed after a loss.
   * (A stream reopened to add a room, on SSE, changes no state.) */
  maybeSettled() {
    if (this.awaiting && this.awaiting.size === 0) {
      this.awaiting = null;
      this.attempt = 0;
      if (this.state === "connecting") this.setState("connected");
      else if (this.state === "reconnecting") this.setState("resumed");
    }
  }

  get isOpen() {
    if (this.transport === "websocket") return this.socket?.readyState === WebSocket.OPEN;
    return this.streamOpen === true;
  }

  frame(frame) {
    if (this.transport === "websocket" && this.isOpen) this.socket.send(JSON.stringify(frame));
  }

  subscribeFrame(room) {
    const frame = { type: "subscribe", room, v: 2 };
    if (this.last.has(room)) frame.since = this.last.get(room);
    this.frame(frame);
  }

  subscribeOnWire(rooms) {
    if (this.transport === "websocket") {
      if (this.isOpen) {
        for (const room of rooms) this.awaiting?.add(room);
        rooms.forEach((room) => this.subscribeFrame(room));
      }
    } else {
      this.reopenStream();
    }
  }

  // -- SSE + HTTP -----------------------------------------------------------------------

  reopenStream() {
    if (this.state === "idle" || this.closing) return;
    if (this.socket instanceof AbortController) {
      this.dropSocket();
      this.openStream();
    } else if (this.streamOpen === false && this.state !== "reconnecting") {
      this.openStream();
    }
  }

  /** SSE over fetch, not EventSource: the token goes in a header, and the status of a
   * refusal (401, 403 for a room) is visible, which EventSource hides. */
  async openStream() {
    this.streamOpen = false;
    const rooms = [...this.rooms.keys()];
    const controller = new AbortController();
    this.socket = controller;
    const since = rooms.filter((r) => this.last.has(r)).map((r) => `${r}:${this.last.get(r)}`);
    const query = `v=2&rooms=${rooms.join(",")}` + (since.length ? `&since=${since.join(",")}` : "");
    let response;
    try {
      const token = await this.currentToken();
      // A stream names at least one room; with none, check the token (and the gateway)
      // with my room list instead, so that connect() means the same on every transport.
      response = await fetch(rooms.length ? `${this.url}/v1/sse?${query}` : `${this.url}/v1/rooms`, {
        headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
        signal: controller.signal,
        cache: "no-store",
      });
    } catch (err) {
      if (this.socket === controller) this.lost();
      return;
    }
    if (this.socket !== controller) return;
    if (!response.ok) return this.streamRefused(response);
    if (rooms.length === 0) {
      this.socket = null;
      this.awaiting = new Set();
      for (const clientId of this.pending.keys()) this.sendOnWire(clientId);
      return this.maybeSettled();
    }
    this.streamOpen = true;
    this.awaiting = new Set(rooms);
    for (const clientId of this.pending.keys()) this.sendOnWire(clientId);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new SseParser();
    const watchdog = () => {
      // The server writes a comment at least every BURROW_SSE_HEARTBEAT (15 s).
      this.streamTimer = this.later(45000, () => controller.abort());
    };
    watchdog();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        clearTimeout(this.streamTimer);
        this.timers.delete(this.streamTimer);
        watchdog();
        for (const event of parser.feed(value)) {
          if (event.event === "comment") continue;
          const frame = JSON.parse(event.data);
          if (event.event === "close") {
            this.streamOpen = false;
            this.socket = null;
            return this.closed(frame.code, frame.reason);
          }
          this.onFrame(frame);
        }
      }
    } catch {
      /* aborted or cut: handled below */
    } finally {
      clearTimeout(this.streamTimer);
    }
    if (this.socket === controller) {
      this.streamOpen = false;
      this.lost();
    }
  }

  async streamRefused(response) {
    let error = {};
    try {
      error = (await response.json()).error ?? {};
    } catch {
      /* not JSON */
    }
    this.socket = null;
    if (response.status === 401) {
      this.token = null;
      if (this.attempt > 2) return this.fail(new ChatError("unauthorized", error.message ?? "token refused", 401));
      return this.lost(this.attempt === 0 ? 0 : undefined);
    }
    if (response.status === 403 && error.room && this.rooms.has(error.room)) {
      // Not (or no longer) a member: that room fails, the others stream on.
      this.refuseRoom(error.room, new ChatError("forbidden", error.message, 403));
      this.streamOpen = false;
      return this.openStream();
    }
    if (response.status >= 400 && response.status < 500 && response.status !== 429) {
      return this.fail(new ChatError(error.code ?? "bad_request", error.message ?? "", response.status));
    }
    this.lost();
  }

  refuseRoom(room, error) {
    const entry = this.rooms.get(room);
    this.rooms.delete(room);
    this.last.delete(room);
    this.awaiting?.delete(room);
    for (const waiter of entry?.waiters ?? []) waiter.reject(error);
    this.emit("error", error);
  }

  async httpSend(clientId) {
    const pending = this.pending.get(clientId);
    if (!pending || pending.inFlight) return;
    pending.inFlight = true;
    let ack = null;
    let retry = null;
    try {
      const [method, path, body] = pending.http;
      ack = await this.api(method, `${roomPath(pending.room)}/messages${path}`, body,
        { "Idempotency-Key": clientId });
    } catch (err) {
      if (!(err instanceof ChatError) || RETRYABLE.has(err.code) || err.status >= 500) retry = err;
      else {
        this.pending.delete(clientId);
        pending.reject(err);
      }
    } finally {
      pending.inFlight = false;
    }
    if (ack) this.onAck({ type: "ack", ...ack });
    else if (retry) this.retrySend(clientId, 0);
  }

  // -- frames from the server -----------------------------------------------------------

  sendOnWire(clientId) {
    const pending = this.pending.get(clientId);
    if (!pending) return;
    if (this.transport === "sse") return this.httpSend(clientId);
    this.frame({ ...pending.frame, room: pending.room, client_id: clientId });
  }

  retrySend(clientId, afterMs) {
    const pending = this.pending.get(clientId);
    if (!pending || pending.timer) return;
    const wait = Math.max(afterMs, backoff(pending.attempt, this.backoffOptions.initial, this.backoffOptions.max));
    pending.attempt += 1;
    pending.timer = this.later(wait, () => {
      pending.timer = null;
      this.sendOnWire(clientId);
    });
  }

  onAck(frame) {
    const pending = this.pending.get(frame.client_id);
    if (!pending) return;
    this.pending.delete(frame.client_id);
    if (pending.timer) clearTimeout(pending.timer);
    pending.resolve({ room: frame.room, seq: frame.seq, id: frame.id, client_id: frame.client_id });
  }

  onFrame(frame) {
    switch (frame.type) {
      case "message":
      case "edit":
      case "delete":
      case "reaction":
      case "moderation": {
        const last = this.last.get(frame.room) ?? 0;
        if (frame.seq <= last) {
          // G4 promises none: dropped for the application, recorded for the tests
          if (this.last.has(frame.room)) this.violations.push(`${frame.room}: seq ${frame.seq} again after ${last}`);
          return;
        }
        if (this.last.has(frame.room) && frame.seq !== last + 1) {
          this.violations.push(`${frame.room}: seq ${frame.seq} after ${last}`);
        }
        this.last.set(frame.room, frame.seq);
        // a moderation event (docs/moderation.md) is its own event: who did what to whom
        this.emit(frame.type === "moderation" ? "moderation"
          : CHANGE_TYPES.has(frame.type) ? "change" : "message", frame);
        return;
      }
      case "ack":
        return this.onAck(frame);
      case "subscribed": {
        if (!this.last.has(frame.room)) this.last.set(frame.room, frame.since);
        const entry = this.rooms.get(frame.room);
        for (const waiter of entry?.waiters.splice(0) ?? []) waiter.resolve(frame.since);
        this.awaiting?.delete(frame.room);
        return this.maybeSettled();
      }
      case "unsubscribed":
        if (frame.reason === "removed") {
          this.refuseRoom(frame.room, new ChatError("removed", `removed from ${frame.room}`));
        }
        return this.emit("unsubscribed", frame);
      case "error":
        return this.onError(frame);
      case "presence":
      case "typing":
        return this.emit(frame.type, frame);
      default:
        return; // pong and anything newer than this client
    }
  }

  onError(frame) {
    // muted, locked, slow_mode (docs/moderation.md, "Enforcement") end the send here
    const error = new ChatError(frame.code, frame.message, 0, frame.retry_after_ms ?? null);
    if (frame.client_id && this.pending.has(frame.client_id)) {
      if (RETRYABLE.has(frame.code)) {
        return this.retrySend(frame.client_id, frame.retry_after_ms ?? 0);
      }
      const pending = this.pending.get(frame.client_id);
      this.pending.delete(frame.client_id);
      return pending.reject(error);
    }
    if (frame.room && this.rooms.has(frame.room) && !frame.client_id) {
      if (RETRYABLE.has(frame.code)) {
        // the subscribe could not be served now: again after a back-off
        return this.later(backoff(this.attempt), () => this.subscribeOnWire([frame.room]));
      }
      return this.refuseRoom(frame.room, error);
    }
    this.emit("error", error);
  }

  failAll(error) {
    for (const pending of this.pending.values()) pending.reject(error);
    this.pending.clear();
    for (const entry of this.rooms.values()) {
      for (const waiter of entry.waiters.splice(0)) waiter.reject(error);
    }
  }
}
