// Tiny DOM helpers. Everything the page shows goes through h(): text always ends up
// as text nodes or textContent, never as HTML, so a product called
// `<img src=x onerror=alert(1)>` is shown as exactly that and runs nothing.

/**
 * Builds an element. props: attributes (data-*, aria-*, …) plus a few specials:
 *   class: string or array, text: textContent, on: {event: handler},
 *   vars: {'--name': value} CSS custom properties (the CSP forbids style attributes).
 * children: strings, numbers, nodes, arrays of those; null/false are skipped.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') {
      el.className = Array.isArray(value) ? value.filter(Boolean).join(' ') : value;
    } else if (key === 'text') {
      el.textContent = String(value);
    } else if (key === 'on') {
      for (const [event, handler] of Object.entries(value)) el.addEventListener(event, handler);
    } else if (key === 'vars') {
      for (const [name, v] of Object.entries(value)) el.style.setProperty(name, String(v));
    } else if (key === 'style' || key.startsWith('on')) {
      // The CSP blocks both; refusing them here makes the mistake loud in development.
      throw new Error(`h(): use classes or vars instead of ${key}`);
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** The element with this id (the page's fixed skeleton lives in index.html). */
export const byId = (id) => document.getElementById(id);

/** Shows or hides an element (the `hidden` attribute; CSS never overrides it). */
export function show(el, visible) {
  el.hidden = !visible;
}

const money = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD' });

/** "349.00" (the API's decimal strings) → "$349.00". */
export function formatMoney(amount) {
  const n = Number(amount);
  return Number.isFinite(n) ? money.format(n) : String(amount ?? '');
}

/** A duration a person can read: "8 ms", "312 ms", "3.04 s". */
export function formatDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(Number(ms))) return '—';
  const n = Number(ms);
  return n < 1000 ? `${Math.round(n)} ms` : `${(n / 1000).toFixed(2)} s`;
}

/** Seconds with two decimals, for the lesson's sentences: "3.04 s". */
export const formatSeconds = (ms) => `${(Number(ms) / 1000).toFixed(2)} s`;

/** Milliseconds as the waterfall labels them: "0.4 ms", "1001.2 ms". */
export function formatMs(ms) {
  const n = Number(ms);
  return `${n >= 100 ? n.toFixed(0) : n.toFixed(1)} ms`;
}

const dateTime = new Intl.DateTimeFormat('en-GB', { dateStyle: 'medium', timeStyle: 'short' });
export function formatDate(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : dateTime.format(d);
}

/** Says something to screen readers (and shows it briefly in the status line). */
export function announce(message) {
  const region = byId('announcer');
  if (!region) return;
  region.textContent = '';
  // A fresh text node after a tick makes screen readers read a repeated message too.
  setTimeout(() => { region.textContent = message; }, 30);
}

/** localStorage/sessionStorage that never throws (private modes, full quota). */
export function stored(storage, key, fallback) {
  try {
    const raw = storage.getItem(key);
    return raw === null ? fallback : JSON.parse(raw);
  } catch {
    return fallback;
  }
}

export function store(storage, key, value) {
  try {
    if (value === undefined || value === null) storage.removeItem(key);
    else storage.setItem(key, JSON.stringify(value));
  } catch {
    // Nothing to do: the page works without remembering.
  }
}

/** A UUID for Idempotency-Key; randomUUID needs a secure context, so fall back. */
export function uuid() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const x = Array.from(b, (v) => v.toString(16).padStart(2, '0')).join('');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}
