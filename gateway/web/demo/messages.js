// One message of the demo on screen: body (or its tombstone), edited mark, the quote of
// the message it answers, attachments (image thumbnails and download links from the
// gateway's signed URLs), reaction chips, and its buttons (react, reply, thread, edit,
// delete). Every user-provided string goes in with textContent, never as HTML.

export const EMOJI = ["👍", "❤️", "😂", "🎉", "😮"];

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(className, text, label, onClick) {
  const node = el("button", className, text);
  node.type = "button";
  node.setAttribute("aria-label", label);
  node.title = label;
  node.addEventListener("click", onClick);
  return node;
}

function clock(ts) {
  return new Date(ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

const IMAGE = /^image\/(png|jpeg|gif|webp)$/;

/**
 * The <li> of message *m* (a RoomState view). *ui*: {me, role, quote(id) -> view?,
 * url(attachment) -> signed URL or null (asked for, the page re-renders when it comes),
 * editing: {id, input}?, picking: id?, inThread, and the actions react(m, emoji, mine),
 * pick(m), reply(m), thread(m), edit(m), delete(m)}.
 */
export function messageItem(m, ui) {
  const item = el("li", "message");
  item.dataset.seq = String(m.seq);
  item.dataset.id = m.id;
  item.dataset.sender = m.sender;
  if (m.sender === ui.me) item.classList.add("mine");
  if (m.mentionsMe) item.classList.add("mention");
  if (m.deleted) item.classList.add("deleted");
  if (m.reply_to && !ui.inThread) item.append(quote(ui.quote(m.reply_to)));
  item.append(el("span", "time", clock(m.ts)), el("span", "seq", `#${m.seq}`),
    el("span", "sender", m.sender));
  if (m.deleted) {
    item.append(el("span", "body tombstone", "message deleted"));
    return item;
  }
  if (ui.editing?.id === m.id) item.append(ui.editing.form);
  else item.append(el("span", "body", m.body));
  if (m.edit_count) {
    const mark = el("span", "edited", "(edited)");
    mark.title = `edited ${m.edit_count}× — last at ${clock(m.edited_at)}`;
    item.append(mark);
  }
  if (m.attachments.length) item.append(attachments(m, ui));
  item.append(reactions(m, ui), actions(m, ui));
  return item;
}

function quote(parent) {
  const box = el("blockquote", "quote");
  if (!parent) box.textContent = "↪ an earlier message";
  else if (parent.deleted) box.textContent = `↪ ${parent.sender}: message deleted`;
  else box.textContent = `↪ ${parent.sender}: ${parent.body.slice(0, 80) || "(attachment)"}`;
  return box;
}

function attachments(m, ui) {
  const box = el("div", "attachments");
  for (const a of m.attachments) {
    const url = ui.url(a);
    if (IMAGE.test(a.type)) {
      const img = el("img", "thumb");
      img.alt = a.name;
      img.dataset.attachment = a.id;
      if (a.width && a.height) Object.assign(img, { width: Math.min(a.width, 240) });
      if (url) img.src = url;
      box.append(img);
    } else {
      const link = el("a", "file", `${a.name} (${size(a.size)})`);
      link.dataset.attachment = a.id;
      if (url) {
        link.href = url;
        link.download = a.name;
      }
      box.append(link);
    }
  }
  return box;
}

function reactions(m, ui) {
  const box = el("div", "reactions");
  for (const r of m.reactions) {
    const chip = button(r.me ? "chip mine" : "chip", `${r.emoji} ${r.count}`,
      `${r.emoji}: ${r.count}${r.me ? ", yours (click to remove)" : " (click to add yours)"}`,
      () => ui.react(m, r.emoji, r.me));
    chip.dataset.emoji = r.emoji;
    chip.setAttribute("aria-pressed", String(r.me));
    box.append(chip);
  }
  if (ui.picking === m.id) {
    const picker = el("span", "picker");
    picker.setAttribute("role", "group");
    picker.setAttribute("aria-label", "pick a reaction");
    for (const emoji of EMOJI) {
      const mine = m.reactions.some((r) => r.emoji === emoji && r.me);
      picker.append(button("pick", emoji, `react with ${emoji}`, () => ui.react(m, emoji, mine)));
    }
    box.append(picker);
  }
  return box;
}

function actions(m, ui) {
  const box = el("span", "actions");
  box.append(button("react", "☺+", "add a reaction", () => ui.pick(m)));
  if (!ui.inThread) {
    box.append(button("reply", "Reply", "reply to this message", () => ui.reply(m)));
    if (!m.thread) {
      const n = m.reply_count;
      box.append(button("thread", n ? `${n} ${n === 1 ? "reply" : "replies"}` : "Thread",
        `open the thread (${n} replies)`, () => ui.thread(m)));
    }
  }
  if (m.sender === ui.me) box.append(button("edit", "Edit", "edit this message", () => ui.edit(m)));
  if (m.sender === ui.me || ui.role === "owner" || ui.role === "moderator") {
    box.append(button("delete", "Delete", "delete this message", () => ui.delete(m)));
  }
  return box;
}
