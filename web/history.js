// "Before and after": this browser's last checkouts, side by side — the mode, how long
// the customer waited, and when the order was confirmed. Kept in localStorage so that
// one person switching the mode sees 3 s turn into milliseconds.

import { byId, h, show, store, stored, formatDuration } from './dom.js';
import { on } from './state.js';

const KEY = 'storefront.checkouts';
const KEEP = 8;

export function initHistory() {
  byId('history-clear').addEventListener('click', () => {
    store(localStorage, KEY, null);
    render();
  });
  // Another tab of the shop may check out too.
  addEventListener('storage', (e) => {
    if (e.key === KEY) render();
  });
  on('order', ({ order }) => update(order));
  render();
}

/** A checkout just answered. entry: {orderId, mode, waitedMs, confirmedMs, status}. */
export function remember(entry) {
  const rows = stored(localStorage, KEY, []).filter((r) => r.orderId !== entry.orderId);
  rows.unshift({ ...entry, at: new Date().toISOString() });
  store(localStorage, KEY, rows.slice(0, KEEP));
  render();
}

/**
 * The newest remembered checkout in `mode`, other than `orderId`; with `succeeded`, only
 * one whose order was not declined or cancelled (comparisons are between successes).
 */
export function lastIn(mode, orderId, { succeeded = false } = {}) {
  const failed = (r) => r.status === 'payment_failed' || r.status === 'cancelled';
  return stored(localStorage, KEY, []).find((r) => r.mode === mode && r.orderId !== orderId && !(succeeded && failed(r))) ?? null;
}

/** The mode an order was placed in, if this browser placed it. */
export function modeOf(orderId) {
  return stored(localStorage, KEY, []).find((r) => r.orderId === orderId)?.mode ?? null;
}

// An async order settled: note when.
function update(order) {
  if (!order) return;
  const rows = stored(localStorage, KEY, []);
  const row = rows.find((r) => r.orderId === order.id);
  if (!row || row.status === order.status) return;
  row.status = order.status;
  if (row.mode === 'async' && order.status !== 'pending' && order.processing_time_ms !== null && order.processing_time_ms !== undefined) {
    row.confirmedMs = order.processing_time_ms;
  }
  store(localStorage, KEY, rows);
  render();
}

function render() {
  const rows = stored(localStorage, KEY, []);
  show(byId('history'), rows.length > 0);
  // One scale for every bar, so 3 s and 8 ms look as different as they are.
  const longest = Math.max(1, ...rows.map((r) => Number(r.waitedMs) || 0));
  byId('history-rows').replaceChildren(...rows.map((r) => row(r, longest)));
}

function row(r, longest) {
  return h('li', { class: ['history-row', r.mode], 'data-testid': 'history-row', 'data-mode': r.mode, 'data-order-id': r.orderId },
    h('span', { class: ['mode-tag', r.mode], text: r.mode }),
    h('span', { class: 'history-order', text: `#${r.orderId}` }),
    h('span', { class: 'history-figure' }, 'waited ', h('strong', { text: formatDuration(r.waitedMs) })),
    h('span', { class: 'history-confirmed', text: confirmation(r) }),
    h('span', { class: 'history-track', 'aria-hidden': 'true' },
      h('span', { class: 'history-bar', vars: { '--w': `${Math.max(0.5, (Number(r.waitedMs) / longest) * 100).toFixed(2)}%` } })));
}

function confirmation(r) {
  if (r.status === 'payment_failed') return 'payment declined';
  if (r.status === 'cancelled') return 'cancelled';
  if (r.mode === 'blocking') return 'confirmed with the answer';
  if (r.status === 'pending') return 'confirming…';
  return r.confirmedMs !== null && r.confirmedMs !== undefined ? `confirmed ${formatDuration(r.confirmedMs)} later` : 'confirmed';
}
