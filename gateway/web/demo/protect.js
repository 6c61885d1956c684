// The demo's "users protect themselves" parts (docs/moderation.md): blocked users'
// messages collapsed, Block / Unblock beside each member, Leave, and invitations to
// accept or decline. The block list comes from the API (client.loadBlocks); the room's
// stream still carries those messages, this only hides them.
import { el } from "./messages.js";

const $ = (id) => document.getElementById(id);

/** What the message list shows instead of a message from someone I block. */
export function blockedItem(m) {
  const item = el("li", "message blocked", `a message from ${m.sender}, whom you block`);
  item.dataset.seq = String(m.seq);
  item.dataset.id = m.id;
  item.dataset.sender = m.sender;
  return item;
}

/** The Block / Unblock button of a member of the list (not me). */
export function blockButton(demo, user) {
  const blocked = demo.client.isBlocked(user);
  const button = el("button", "block", blocked ? "Unblock" : "Block");
  button.type = "button";
  button.setAttribute("aria-label", `${blocked ? "unblock" : "block"} ${user}`);
  button.addEventListener("click", async () => {
    try {
      await (blocked ? demo.client.unblock(user) : demo.client.block(user));
    } catch (err) {
      $("room-error").textContent = err.message;
    }
  });
  return button;
}

function renderInvitations(demo, invitations, refreshRooms) {
  const list = $("invitations");
  list.replaceChildren();
  $("invitations-box").hidden = invitations.length === 0;
  for (const invitation of invitations) {
    const item = el("li", "invitation",
      `${invitation.by} invites you to ${invitation.name || invitation.room}`);
    item.dataset.id = invitation.id;
    for (const [label, act] of [["Accept", "acceptInvitation"], ["Decline", "declineInvitation"]]) {
      const button = el("button", label.toLowerCase(), label);
      button.type = "button";
      button.addEventListener("click", async () => {
        try {
          await demo.client[act](invitation.id);
          await refreshInvitations(demo, refreshRooms);
          await refreshRooms();
        } catch (err) {
          $("invitations-error").textContent = err.message;
        }
      });
      item.append(button);
    }
    list.append(item);
  }
}

/** Load my pending invitations into the list (refreshed with the rooms). */
export async function refreshInvitations(demo, refreshRooms) {
  try {
    renderInvitations(demo, await demo.client.invitations(), refreshRooms);
  } catch (err) {
    $("invitations-error").textContent = err.message;
  }
}

/** Wire the Leave button and the block list's re-rendering. */
export function wireProtect(demo, { rerender, leftRoom }) {
  demo.client.on("blocks", rerender);
  $("leave").addEventListener("click", async () => {
    const room = demo.active;
    if (!room) return;
    try {
      await demo.client.leave(room, demo.user);
      leftRoom(room);
    } catch (err) {
      $("room-error").textContent = err.message; // an owner with members: owner_stays
    }
  });
}
