// The state of one room's messages as a reader sees it: a pure reducer (no DOM, no
// network) over the room's events, shared by burrow.js (which re-exports it) and the demo.
//
//   const room = new RoomState("alice");
//   room.load(await chat.history("lobby", { before: 2 ** 53 }));  // a v2 history page
//   chat.on("message", (e) => room.apply(e));
//   chat.on("change", (e) => room.apply(e));                      // edit, delete, reaction
//   room.list();   // [{id, seq, sender, body, edit_count, edited_at, deleted_at, ...}]
//
// Why a reducer: edits, deletes and reactions are room events in the room's one order
// (docs/protocol.md, "Changes"), so applying them in seq order gives every reader the
// same state. It is idempotent: an event at or below the highest seq applied is ignored,
// and a message that is already known is not counted again, so the same event twice,
// or events replayed on resume over a history page, change nothing.

/** The types of change events (protocol v2); anything else with a seq is a message. */
export const CHANGE_TYPES = new Set(["edit", "delete", "reaction"]);
/** Room events that hold a seq but change no message (docs/moderation.md): skipped. */
export const ROOM_EVENT_TYPES = new Set(["moderation"]);

export class RoomState {
  /** *me*: the reader's user id (for `mine` of reactions and `mentionsMe`). */
  constructor(me) {
    this.me = me;
    this.seq = 0; // the highest seq applied
    this.byId = new Map(); // message id -> its state
  }

  /** Take in a page of v2 history (`GET .../messages?v=2`, ascending). Its messages are
   * in their current state already (edits, deletes, reply counts), so its edits and
   * deletes are not applied again. `advance` (default true): the page is the room up
   * to its last seq, so live events start after it, and every reaction to a message of
   * the page is in the page too: replayed, they tell who reacted, not only how many,
   * which later removals need. false for a thread page (replies only: counts only). */
  load(entries, { advance = true } = {}) {
    const fresh = new Set();
    for (const entry of entries) {
      if (advance) this.seq = Math.max(this.seq, entry.seq);
      if (CHANGE_TYPES.has(entry.type) || ROOM_EVENT_TYPES.has(entry.type) ||
          this.byId.has(entry.id)) continue;
      const message = fromEntry(entry);
      this.byId.set(entry.id, message);
      if (advance) {
        fresh.add(entry.id);
        message.reactions = new Map();
      }
    }
    for (const entry of entries) {
      const message = fresh.has(entry.target) && this.byId.get(entry.target);
      if (entry.type === "reaction" && message && message.deleted_at === null) {
        react(message.reactions, entry.emoji, entry.sender, entry.op !== "remove", this.me);
      }
    }
  }

  /** Apply one event (a `message` frame or a change frame) in seq order. Returns the id
   * of the message it changed or added, or null when it changed nothing. */
  apply(event) {
    if (!(event.seq > this.seq)) return null; // applied already (or older than the page)
    this.seq = event.seq;
    if (ROOM_EVENT_TYPES.has(event.type)) return null; // no message changes
    if (!CHANGE_TYPES.has(event.type)) return this.added(event);
    const message = this.byId.get(event.target);
    if (!message || message.deleted_at !== null) return null; // unknown to us, or gone
    if (event.type === "edit") {
      if (event.edit_count <= message.edit_count) return null; // the page had it
      message.body = event.body;
      message.edit_count = event.edit_count;
      message.edited_at = event.ts;
    } else if (event.type === "delete") {
      Object.assign(message, { body: "", attachments: [], mentions: null,
        reactions: new Map(), deleted_at: event.ts, deleted_by: event.deleted_by ?? event.sender });
    } else if (!react(message.reactions, event.emoji, event.sender, event.op !== "remove", this.me)) {
      return null;
    }
    return message.id;
  }

  added(event) {
    if (this.byId.has(event.id)) return null; // known from a thread page
    this.byId.set(event.id, fromEntry(event));
    const root = event.thread ? this.byId.get(event.thread) : undefined;
    // last_reply guards the count: a root from a page may have counted this reply
    if (root && !(root.last_reply && root.last_reply.seq >= event.seq)) {
      root.reply_count += 1;
      root.last_reply = { seq: event.seq, id: event.id, sender: event.sender, ts: event.ts };
    }
    return event.id;
  }

  /** One message as a plain object (see `view`), or undefined. */
  get(id) {
    const message = this.byId.get(id);
    return message && this.view(message);
  }

  /** Every message (not the change events), ascending seq. */
  list() {
    return [...this.byId.values()].sort((a, b) => a.seq - b.seq).map((m) => this.view(m));
  }

  /** The replies of thread *root*, ascending seq. */
  replies(root) {
    return this.list().filter((m) => m.thread === root);
  }

  view(message) {
    const { reactions, ...fields } = message;
    const mentions = message.mentions;
    return {
      ...fields,
      deleted: message.deleted_at !== null,
      reactions: [...reactions].map(([emoji, r]) => ({ emoji, count: r.count, me: r.me })),
      mentionsMe: message.sender !== this.me && !!mentions &&
        (mentions.room === true || (mentions.users ?? []).includes(this.me)),
    };
  }
}

function fromEntry(entry) {
  const reactions = new Map();
  for (const r of entry.reactions ?? []) {
    // from a page: counts and whether I reacted, not who else did
    reactions.set(r.emoji, { count: r.count, me: !!r.me, on: new Set(), off: new Set() });
  }
  return {
    id: entry.id, seq: entry.seq, sender: entry.sender, client_id: entry.client_id,
    ts: entry.ts, body: entry.body ?? "", edit_count: entry.edit_count ?? 0,
    edited_at: entry.edited_at ?? null, deleted_at: entry.deleted_at ?? null,
    deleted_by: entry.deleted_by ?? null, reply_to: entry.reply_to ?? null,
    thread: entry.thread ?? null, reply_count: entry.reply_count ?? 0,
    last_reply: entry.last_reply ?? null, attachments: entry.attachments ?? [],
    mentions: entry.mentions ?? null, reactions,
  };
}

/** One reaction event on a message's reactions; true when it changed them. The server
 * stores an add that is there already, or a remove that is not, and changes nothing:
 * so must we. Who reacted is known for events we saw; for counts from a history page
 * only my own part is known, and a remove by someone unseen takes one of the others. */
function react(reactions, emoji, user, add, me) {
  const r = reactions.get(emoji) ?? { count: 0, me: false, on: new Set(), off: new Set() };
  if (user === me) {
    if (r.me === add) return false;
    r.me = add;
  } else if (add) {
    if (r.on.has(user)) return false;
    r.on.add(user);
    r.off.delete(user);
  } else if (r.on.has(user)) {
    r.on.delete(user);
    r.off.add(user);
  } else {
    const unseen = r.count - (r.me ? 1 : 0) - r.on.size;
    if (r.off.has(user) || unseen <= 0) return false;
    r.off.add(user);
  }
  r.count += add ? 1 : -1;
  if (r.count > 0) reactions.set(emoji, r);
  else reactions.delete(emoji);
  return true;
}
