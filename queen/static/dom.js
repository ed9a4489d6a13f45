// Small DOM and formatting helpers. Every string reaches the page through textContent:
// narration, job errors and hive reports are untrusted, so nothing here parses HTML.

const ACTOR_COLOURS = 8; // style.css defines .actor-0 … .actor-7

/** `el("td", {class: "x", text: "y"}, child…)`: an element whose text is set as text. */
export function el(tag, { class: cls, text, title, data } = {}, ...children) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (title) node.title = title;
  for (const [key, value] of Object.entries(data ?? {})) node.dataset[key] = String(value);
  for (const child of children) if (child) node.append(child);
  return node;
}

let skew = 0; // queen clock minus this browser's clock, in seconds

/** Note the queen's time from an event it just sent, so elapsed times ignore clock skew. */
export function noteQueenTime(ts) {
  if (typeof ts === "number") skew = ts - Date.now() / 1000;
}

/** The queen's current time (seconds since the epoch), as far as this page can tell. */
export function queenNow() {
  return Date.now() / 1000 + skew;
}

export function byId(id) {
  return document.getElementById(id);
}

/** A stable colour class for an actor name, so each component keeps its colour. */
export function actorClass(actor) {
  let hash = 0;
  for (const ch of String(actor)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return `actor actor-${hash % ACTOR_COLOURS}`;
}

export function clock(ts) {
  return typeof ts === "number" ? new Date(ts * 1000).toLocaleTimeString() : "—";
}

export function dateTime(ts) {
  return typeof ts === "number" ? new Date(ts * 1000).toLocaleString() : "—";
}

export function duration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "—";
  if (seconds < 10) return `${Math.max(seconds, 0).toFixed(1)} s`;
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  return m ? `${m}m ${rest}s` : `${s} s`;
}

export function bytes(n) {
  if (typeof n !== "number") return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** A state badge: its class carries the colour, its text the state. */
export function stateBadge(state) {
  return el("span", { class: `state state-${String(state).replace(/[^a-z]/g, "")}`, text: state ?? "—" });
}

/**
 * Make `body`'s rows follow `items` in order, reusing the row of each key (`rows`: key ->
 * row) so an unchanged row keeps its focus; `make(item)` builds a new row and
 * `update(row, item)` refreshes its cells. Rows of keys no longer listed are removed.
 */
export function syncRows(body, rows, items, keyOf, make, update) {
  const seen = new Set();
  items.forEach((item, index) => {
    const key = keyOf(item);
    seen.add(key);
    let row = rows.get(key);
    if (!row) {
      row = make(item);
      rows.set(key, row);
    }
    update(row, item);
    if (body.children[index] !== row) body.insertBefore(row, body.children[index] ?? null);
  });
  for (const [key, row] of rows) {
    if (!seen.has(key)) {
      row.remove();
      rows.delete(key);
    }
  }
}
