// Mention autocomplete for the composer: typing "@" lists the room's members (and
// @room), filtered as you type; choosing one writes "@bob " and remembers bob, and the
// send carries {users: ["bob"], room?: true} for the names still written in it
// (docs/protocol.md, mentions). Keyboard: arrows move, Enter or Tab choose, Escape closes.
// Names are shown with textContent only.

/** The word "@..." being typed just before the caret: {start, query}, or null. */
export function mentionQuery(text, caret) {
  const found = /(^|\s)@([^\s@]{0,128})$/.exec(text.slice(0, caret));
  return found ? { start: caret - found[2].length - 1, query: found[2] } : null;
}

const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** The mentions a send of *text* carries: those *chosen* that are still written in it. */
export function mentionsIn(text, chosen) {
  const written = (name) => new RegExp(`(^|\\s)@${escapeRe(name)}(?=$|[\\s.,:;!?)])`).test(text);
  const users = [...chosen.users].filter(written);
  const room = chosen.room && written("room");
  return users.length || room ? { users, ...(room ? { room: true } : {}) } : null;
}

export class MentionBox {
  /** *members*: () => the room's member ids; *me*: left out of the list. */
  constructor(input, list, members, me) {
    Object.assign(this, { input, list, members, me, options: [], active: 0, at: null });
    this.chosen = { users: new Set(), room: false };
    list.setAttribute("role", "listbox");
    list.hidden = true;
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-controls", list.id);
    input.setAttribute("aria-expanded", "false");
    input.addEventListener("input", () => this.update());
    input.addEventListener("keydown", (event) => this.key(event));
    // closed when the focus has left for good (not if it came back within the delay)
    input.addEventListener("blur", () => setTimeout(() => {
      if (document.activeElement !== input) this.hide();
    }, 150));
  }

  update() {
    this.at = mentionQuery(this.input.value, this.input.selectionStart ?? this.input.value.length);
    if (!this.at) return this.hide();
    const query = this.at.query.toLowerCase();
    this.options = this.members().filter((u) => u !== this.me && u !== "room" &&
      u.toLowerCase().startsWith(query)).sort();
    if ("room".startsWith(query)) this.options.push("room");
    this.active = 0;
    this.render();
  }

  render() {
    this.list.replaceChildren();
    this.options.forEach((name, i) => {
      const item = document.createElement("li");
      item.id = `${this.list.id}-${i}`;
      item.setAttribute("role", "option");
      item.setAttribute("aria-selected", String(i === this.active));
      item.dataset.user = name;
      item.textContent = name === "room" ? "@room (everyone here)" : `@${name}`;
      item.addEventListener("mousedown", (event) => {
        event.preventDefault(); // keep the focus in the input
        this.choose(name);
      });
      this.list.append(item);
    });
    const open = this.options.length > 0;
    this.list.hidden = !open;
    this.input.setAttribute("aria-expanded", String(open));
    if (open) this.input.setAttribute("aria-activedescendant", `${this.list.id}-${this.active}`);
    else this.input.removeAttribute("aria-activedescendant");
  }

  hide() {
    this.options = [];
    this.render();
  }

  key(event) {
    if (this.list.hidden) return;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      const step = event.key === "ArrowDown" ? 1 : -1;
      this.active = (this.active + step + this.options.length) % this.options.length;
      this.render();
    } else if (event.key === "Enter" || event.key === "Tab") {
      this.choose(this.options[this.active]);
    } else if (event.key === "Escape") {
      this.hide();
    } else {
      return;
    }
    event.preventDefault(); // Enter picks a name here: it does not send
  }

  choose(name) {
    const { value } = this.input;
    const caret = this.input.selectionStart ?? value.length;
    const before = value.slice(0, this.at.start) + `@${name} `;
    this.input.value = before + value.slice(caret);
    this.input.setSelectionRange(before.length, before.length);
    if (name === "room") this.chosen.room = true;
    else this.chosen.users.add(name);
    this.hide();
    this.input.focus();
  }

  /** The mentions of the text about to be sent; forgets the choices. */
  take() {
    const mentions = mentionsIn(this.input.value, this.chosen);
    this.chosen = { users: new Set(), room: false };
    return mentions;
  }
}
