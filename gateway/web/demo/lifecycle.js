// The demo's message lifecycle on screen: what a message's buttons do (react, reply,
// thread, edit in place, delete), the thread view, and the signed URLs of attachments.
// Split from demo.js, which owns the page's state (`demo`) and calls `wire` once.
import { el, messageItem } from "./messages.js";

const $ = (id) => document.getElementById(id);
let demo;
let renderMessages;

/** Give this module the page's state and its render function. */
export function wire(state, render) {
  demo = state;
  renderMessages = render;
}

/** What a message's buttons do, and what its rendering needs to know (messages.js). */
export function actions(room, inThread = false) {
  return {
    // the edit box shows where the edit started (a message can be in both lists)
    editing: demo.editing?.inThread === inThread ? demo.editing : null,
    me: demo.user, role: room.role, inThread, picking: demo.picking,
    quote: (id) => room.state.get(id),
    url: (attachment) => attachmentUrl(room.id, attachment.id),
    pick: (m) => {
      demo.picking = demo.picking === m.id ? null : m.id;
      renderMessages();
      // keyboard users land in the picker they opened
      $(inThread ? "thread" : "messages").querySelector(`li[data-id="${CSS.escape(m.id)}"] .pick`)?.focus();
    },
    react: (m, emoji, mine) => {
      demo.picking = null;
      renderMessages();
      change(demo.client.react(room.id, m.id, emoji, { remove: mine }));
    },
    reply: (m) => {
      demo.replyTo = m.id;
      $("replying-to").textContent = `Replying to ${m.sender}: ${m.body.slice(0, 60)}`;
      $("replying").hidden = false;
      $("compose-body").focus();
    },
    thread: (m) => openThread(m.id),
    edit: (m) => startEdit(room, m, inThread),
    delete: (m) => change(demo.client.delete(room.id, m.id)),
  };
}

/** A change's refusal (edit window, forbidden...) is shown; its success arrives as an event. */
function change(promise) {
  promise.catch((err) => { $("room-error").textContent = `not changed: ${err.message}`; });
}

/** The signed URL of an attachment, asked for once and again shortly before it expires;
 * null until it comes (then the messages render again). Only the gateway's own file
 * URLs are used: a link never leads elsewhere. */
function attachmentUrl(room, id) {
  const known = demo.urls.get(id);
  if (known === "asking") return null;
  if (known && known.until > Date.now()) return known.url;
  demo.urls.set(id, "asking");
  demo.client.attachmentUrl(room, id).then((url) => {
    if (!url.startsWith(`${location.origin}/v1/files/`)) throw new Error(`not a file URL: ${url}`);
    demo.urls.set(id, { url, until: Date.now() + 240_000 }); // signed for 300 s
    renderMessages();
  }).catch((err) => {
    demo.urls.set(id, { url: null, until: Date.now() + 30_000 }); // not asked again at once
    $("room-error").textContent = `attachment: ${err.message}`;
  });
  return null;
}

function startEdit(room, m, inThread) {
  const form = el("form", "edit-form");
  const input = el("input");
  input.value = m.body;
  input.setAttribute("aria-label", "edit the message");
  input.maxLength = 16384;
  const save = el("button", "", "Save");
  save.type = "submit";
  form.append(input, save);
  const stop = () => { demo.editing = null; renderMessages(); };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.value !== m.body) change(demo.client.edit(room.id, m.id, input.value));
    stop();
  });
  input.addEventListener("keydown", (event) => { if (event.key === "Escape") stop(); });
  demo.editing = { id: m.id, form, input, inThread };
  renderMessages();
  input.focus();
}

export function renderThread() {
  const room = demo.rooms.get(demo.active);
  const aside = $("thread");
  aside.hidden = !room || !demo.thread;
  if (aside.hidden) return;
  const root = room.state.get(demo.thread);
  const ui = actions(room, true);
  $("thread-root").replaceChildren(...(root ? [messageItem(root, ui)] : []));
  const replies = room.state.replies(demo.thread);
  const count = Math.max(root?.reply_count ?? 0, replies.length);
  $("thread-count").textContent = `${count} ${count === 1 ? "reply" : "replies"}`;
  $("thread-replies").replaceChildren(...replies.map((m) => messageItem(m, ui)));
}

export async function openThread(root) {
  demo.thread = root;
  renderThread();
  const room = demo.rooms.get(demo.active);
  try {
    // replies older than the room's loaded page: a snapshot, live events go on after it
    room.state.load(await demo.client.thread(room.id, root, { limit: 500 }), { advance: false });
    renderThread();
    $("thread-body").focus();
  } catch (err) {
    $("room-error").textContent = err.message;
  }
}
