// The demo's moderation (docs/moderation.md): moderation events as system lines of the
// timeline, the moderator's actions beside each member and on the room (lock, slow
// mode, with a reason), the audit for those who may moderate, and what a member is told
// in the composer (muted for N s, read-only, slow mode). What the viewer may do comes
// from GET /v1/rooms/{room} (client.roomInfo), read again after every moderation event
// of the open room; the server decides every action, the buttons only mirror its rules.
// Everything shown is textContent, never HTML.
import { el } from "./messages.js";

const $ = (id) => document.getElementById(id);
const MUTE_SECONDS = 600;

/** *seconds* in words: "30 s", "10 min", "2 h", "1 d". */
export function duration(seconds) {
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["min", 60]]) {
    if (seconds >= size && seconds % size === 0) return `${seconds / size} ${unit}`;
  }
  return `${seconds} s`;
}

/** A moderation event (or an audit record, whose actor is `by`) in words:
 * "mia muted carl for 10 min: flood". */
export function moderationText(event) {
  const who = event.sender ?? event.by;
  const user = event.user;
  const words = {
    promote: `${who} made ${user} a moderator`,
    demote: `${who} made ${user} a member again`,
    remove: `${who} removed ${user}`,
    mute: `${who} muted ${user} for ${duration(event.seconds ?? 0)}`,
    unmute: `${who} unmuted ${user}`,
    ban: `${who} banned ${user}`,
    unban: `${who} unbanned ${user}`,
    lock: `${who} locked the room`,
    unlock: `${who} unlocked the room`,
    slow_mode: event.seconds ? `${who} set slow mode: one message every ${duration(event.seconds)}`
      : `${who} turned slow mode off`,
    transfer: `${who} handed the room over to ${user}`,
  }[event.action] ?? `${who} ${event.action}${user ? ` ${user}` : ""}`;
  return event.reason ? `${words}: ${event.reason}` : words;
}

/** The timeline's line of a moderation event. */
export function systemItem(event) {
  const item = el("li", "system", moderationText(event));
  item.dataset.seq = String(event.seq);
  item.dataset.action = event.action;
  if (event.user) item.dataset.user = event.user;
  return item;
}

/** Keep *event* among the room's moderation events (in seq order, each once). */
export function keepEvent(room, event) {
  if (room.events.some((e) => e.seq === event.seq)) return;
  room.events.push(event);
  room.events.sort((a, b) => a.seq - b.seq);
}

/** The messages and moderation events of *room* in the room's one order: [seq, item]. */
export function timeline(messages, events, messageItem) {
  const lines = messages.map((m) => [m.seq, () => messageItem(m)])
    .concat(events.map((e) => [e.seq, () => systemItem(e)]));
  return lines.sort((a, b) => a[0] - b[0]).map(([seq, item]) => [seq, item()]);
}

const mayModerate = (role) => role === "owner" || role === "moderator";

/** Who is muted, and until when, as far as the loaded events tell (the members list
 * has no mute state): user -> until ms. A mute older than the loaded page is unknown,
 * and "Unmute" then answers `already` if it is over. */
function mutes(room) {
  const until = new Map();
  for (const e of room.events) {
    if (e.action === "mute") until.set(e.user, e.until ?? 0);
    else if (["unmute", "remove", "ban"].includes(e.action)) until.delete(e.user);
  }
  return until;
}

async function act(demo, action, options = {}) {
  const reason = $("mod-reason").value.trim();
  try {
    await demo.client.moderate(demo.active, action, { ...options, reason: reason || undefined });
    $("mod-reason").value = "";
    $("room-error").textContent = "";
  } catch (err) {
    $("room-error").textContent = `${action}: ${err.message}`;
    renderTools(demo); // the lock button and slow-mode choice as they still are
  }
}

function actionButton(demo, label, action, user, options = {}) {
  const button = el("button", `mod mod-${action}`, label);
  button.type = "button";
  button.setAttribute("aria-label", `${label.toLowerCase()} ${user}`);
  button.addEventListener("click", () => act(demo, action, { user, ...options }));
  return button;
}

/** The moderation buttons of *member*'s row for the viewer: the owner promotes and
 * demotes, and mutes, removes and bans anyone but the owner; a moderator, plain
 * members only (docs/moderation.md, "Actions"). */
export function memberActions(demo, member) {
  const room = demo.rooms.get(demo.active);
  const me = room?.info?.role;
  if (!room || member.user === demo.user || member.role === "owner" || !mayModerate(me)) return [];
  if (me === "moderator" && member.role !== "member") return [];
  const buttons = [];
  if (me === "owner") {
    buttons.push(member.role === "moderator" ? actionButton(demo, "Demote", "demote", member.user)
      : actionButton(demo, "Promote", "promote", member.user));
  }
  const muted = (mutes(room).get(member.user) ?? 0) > Date.now();
  buttons.push(muted ? actionButton(demo, "Unmute", "unmute", member.user)
    : actionButton(demo, "Mute 10 min", "mute", member.user, { seconds: MUTE_SECONDS }));
  buttons.push(actionButton(demo, "Remove", "remove", member.user),
    actionButton(demo, "Ban", "ban", member.user));
  return buttons;
}

/** What the composer tells me: muted for N s, read-only, slow mode. */
export function renderNotice(demo) {
  const room = demo.rooms.get(demo.active);
  const notice = $("compose-notice");
  const info = room?.info;
  const now = Date.now();
  let text = "";
  if (room && room.mutedUntil > now) {
    text = `muted for ${Math.ceil((room.mutedUntil - now) / 1000)} s`;
  } else if (info?.locked) {
    text = mayModerate(info.role) ? "the room is locked: read-only for members, not for you"
      : "read-only: the room is locked";
  } else if (info?.slow_mode_s && !mayModerate(info.role)) {
    const wait = (room.slowUntil ?? 0) - now;
    text = `slow mode: one message every ${duration(info.slow_mode_s)}` +
      (wait > 0 ? ` (next in ${Math.ceil(wait / 1000)} s)` : "");
  }
  if (notice.textContent !== text) notice.textContent = text;
  notice.hidden = !text;
}

function renderTools(demo) {
  const info = demo.rooms.get(demo.active)?.info;
  const moderator = mayModerate(info?.role);
  $("mod-tools").hidden = !moderator;
  $("audit-box").hidden = !moderator;
  if (!moderator) return;
  $("mod-lock").textContent = info.locked ? "Unlock" : "Lock";
  const select = $("mod-slow");
  const value = String(info.slow_mode_s);
  if (![...select.options].some((o) => o.value === value)) {
    select.append(new Option(duration(info.slow_mode_s), value)); // set elsewhere (CLI)
  }
  select.value = value;
}

/** Read the room's moderation audit into the panel (moderators only). */
export async function refreshAudit(demo) {
  const id = demo.active;
  const room = demo.rooms.get(id);
  if (!mayModerate(room?.info?.role)) return;
  try {
    const { records } = await demo.client.audit(id, { limit: 50 });
    if (id !== demo.active) return;
    $("audit").replaceChildren(...records.map((r) => {
      const item = el("li", "audit", "");
      item.dataset.action = r.action;
      item.append(el("time", "time", new Date(r.at).toLocaleTimeString()),
        el("span", "what", moderationText(r)));
      return item;
    }));
  } catch (err) {
    $("room-error").textContent = `audit: ${err.message}`;
  }
}

/** Read my role, the room's lock and slow mode and my mute (GET /v1/rooms/{room}), then
 * show what follows from them; *after* re-renders what depends on the role. */
export async function refreshRoomInfo(demo, id, after = () => {}) {
  const room = demo.rooms.get(id);
  if (!room) return;
  try {
    const info = await demo.client.roomInfo(id);
    room.info = info;
    room.role = info.role; // promoted: a moderator deletes others' messages too
    room.mutedUntil = info.muted_until ?? 0;
  } catch (err) {
    if (id === demo.active) $("room-error").textContent = err.message;
    return;
  }
  if (id !== demo.active) return;
  renderTools(demo);
  renderNotice(demo);
  after();
  await refreshAudit(demo);
}

/** A send refused by a moderation rule: tell the member in the composer. */
export function noteRefusal(demo, id, err) {
  const room = demo.rooms.get(id);
  if (!room) return;
  const until = err.retryAfterMs === null ? null : Date.now() + err.retryAfterMs;
  if (err.code === "muted") room.mutedUntil = until ?? room.mutedUntil; // else roomInfo's
  else if (err.code === "slow_mode") room.slowUntil = until ?? 0;
  else if (err.code === "locked" && room.info) room.info.locked = true;
  else return;
  if (id === demo.active) renderNotice(demo);
}

/** Wire the room's tools (lock, slow mode, the audit's reload) and the notice's clock. */
export function wireModeration(demo) {
  $("mod-lock").addEventListener("click", () => {
    const info = demo.rooms.get(demo.active)?.info;
    if (info) act(demo, info.locked ? "unlock" : "lock");
  });
  $("mod-slow").addEventListener("change", (event) => {
    act(demo, "slow_mode", { seconds: Number(event.target.value) });
  });
  $("audit-refresh").addEventListener("click", () => refreshAudit(demo));
  setInterval(() => renderNotice(demo), 1000); // "muted for N s" counts down
}
