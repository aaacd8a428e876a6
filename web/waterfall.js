// The checkout's steps on one time axis, drawn from the response's Server-Timing
// header (W3C Server Timing: `name;dur=1.2;desc="…"`, comma-separated). The steps of
// the checkout run one after another, so each bar starts where the previous ended.

import { h, formatMs, formatDuration } from './dom.js';

/** Steps that wait on another system: the slow part of the blocking checkout. */
export const REMOTE_STEPS = new Set(['process_payment', 'send_email']);

/**
 * What a rung of the ladder of cures did inside a step: `payment_gateway.attempt` (one
 * attempt of a retried call), `mail_server.breaker` (refused by an open breaker),
 * `mail_server.fallback` (the e-mail queued). They come before the step they belong to
 * and are drawn inside it, not after it.
 */
export const isRung = (entry) => entry.name.includes('.');

/** What the rungs did in this answer, in words for the customer; null if nothing. */
export function rungsNote(entries) {
  const rungs = entries.filter(isRung);
  const said = [];
  const attempts = rungs.filter((e) => e.name === 'payment_gateway.attempt');
  if (attempts.length > 1) {
    const failed = attempts.filter((e) => !e.desc.endsWith(': ok')).length;
    said.push(`The payment gateway failed ${failed} time${failed === 1 ? '' : 's'}; the shop tried again: ${attempts.length} attempts under one idempotency key, so never two charges.`);
  }
  const mails = rungs.filter((e) => e.name === 'mail_server.attempt');
  if (mails.length > 1) said.push(`The mail server needed ${mails.length} attempts.`);
  if (rungs.some((e) => e.name === 'payment_gateway.breaker')) {
    said.push('The payment gateway\'s circuit breaker is open: the shop did not call it.');
  }
  if (rungs.some((e) => e.name === 'mail_server.breaker')) {
    said.push('The mail server\'s circuit breaker is open: the shop did not call it.');
  }
  if (rungs.some((e) => e.name === 'mail_server.fallback')) {
    said.push('The mail server failed, so your confirmation e-mail is queued: it goes out once the mail server is back. Your order is confirmed all the same.');
  }
  return said.length ? said.join(' ') : null;
}

const WHAT = {
  validate_cart: 'load and lock the cart',
  check_inventory: 'lock the stock rows',
  reserve_inventory: 'reserve the units',
  create_order: 'insert the order',
  create_order_items: 'copy the prices',
  process_payment: 'payment gateway: remote call',
  record_payment: 'insert the payment',
  reduce_inventory: 'take the units from stock',
  send_email: 'mail server: remote call',
  create_notification: 'insert a notification',
  clear_cart: 'empty the cart',
  place_order: 'reserve, order, items, empty cart, outbox job: one statement',
  commit: 'COMMIT the transaction',
};

/** Parses a Server-Timing header into [{name, dur, desc}], skipping what it cannot read. */
export function parseServerTiming(header) {
  if (!header) return [];
  const entries = [];
  for (const raw of splitOutsideQuotes(header, ',')) {
    const [name, ...params] = splitOutsideQuotes(raw, ';').map((s) => s.trim());
    if (!name || !/^[!#$%&'*+\-.^_`|~\w]+$/.test(name)) continue;
    const entry = { name, dur: 0, desc: '' };
    const seen = new Set();
    for (const param of params) {
      const eq = param.indexOf('=');
      const key = (eq < 0 ? param : param.slice(0, eq)).trim().toLowerCase();
      if (!key || seen.has(key)) continue; // the first occurrence of a parameter wins
      seen.add(key);
      const value = unquote(eq < 0 ? '' : param.slice(eq + 1).trim());
      if (key === 'dur') {
        const ms = Number.parseFloat(value);
        entry.dur = Number.isFinite(ms) && ms >= 0 ? ms : 0;
      } else if (key === 'desc') {
        entry.desc = value;
      }
    }
    entries.push(entry);
  }
  return entries;
}

function splitOutsideQuotes(text, separator) {
  const parts = [];
  let current = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted && c === '\\' && i + 1 < text.length) {
      current += c + text[++i];
      continue;
    }
    if (c === '"') quoted = !quoted;
    if (c === separator && !quoted) {
      parts.push(current);
      current = '';
    } else {
      current += c;
    }
  }
  parts.push(current);
  return parts;
}

function unquote(value) {
  if (!value.startsWith('"')) return value;
  return value.slice(1, value.endsWith('"') && value.length > 1 ? -1 : undefined).replace(/\\(.)/g, '$1');
}

/**
 * The waterfall figure (data-testid="waterfall"), or a note saying this response had
 * no step timings. waitedMs: what the customer waited, for the caption.
 */
export function waterfall(entries, { waitedMs = null, mode = 'blocking' } = {}) {
  if (!entries.length) return withoutTimings(mode);
  const sum = entries.filter((e) => !isRung(e)).reduce((t, e) => t + e.dur, 0);
  const axis = Math.max(sum, 0.001);
  const step = tickStep(axis);
  const ticks = [];
  for (let t = 0; t <= axis + 1e-9; t += step) ticks.push(t);

  let start = 0;
  const longest = Math.max(...entries.filter((e) => !isRung(e)).map((e) => e.dur));
  const bar = (entry, at, sub) => {
    const remote = REMOTE_STEPS.has(entry.name);
    return h('li', { class: ['wf-row', remote && 'remote', sub && 'wf-sub', !sub && entry.dur === longest && 'longest'] },
      h('span', { class: 'wf-label' },
        h('span', { class: 'wf-step', text: entry.name }),
        h('span', { class: 'wf-what', text: (!sub && WHAT[entry.name]) || entry.desc })),
      h('span', { class: 'wf-track' },
        h('span', {
          class: 'wf-bar',
          'data-testid': sub ? 'waterfall-rung' : 'waterfall-bar',
          'data-step': entry.name,
          'data-ms': entry.dur,
          'data-remote': remote ? 'true' : null,
          title: `${entry.name}: ${formatMs(entry.dur)}${entry.desc ? ` (${entry.desc})` : ''}`,
          vars: { '--start': pct(at / axis), '--width': pct(entry.dur / axis) },
        })),
      h('span', { class: 'wf-ms', text: formatMs(entry.dur) }));
  };
  const rows = [];
  let pending = [];
  for (const entry of entries) {
    if (isRung(entry)) {
      pending.push(entry);
      continue;
    }
    rows.push(bar(entry, start, false));
    // The rungs inside this step, one after another, each after the backoff it waited;
    // a fallback comes once the call has failed, at the step's end.
    let at = start;
    for (const rung of pending) {
      at += Number(/after (\d+) ms/.exec(rung.desc)?.[1] ?? 0);
      const end = rung.name.endsWith('.fallback');
      rows.push(bar(rung, end ? start + entry.dur - rung.dur : at, true));
      at += rung.dur;
    }
    pending = [];
    start += entry.dur;
  }

  const caption = waitedMs === null
    ? `The steps of this request, ${formatDuration(sum)} in all, on one time axis`
    : `Where the time went: ${formatDuration(sum)} of steps, by the shop's clock, in the ${formatDuration(waitedMs)} you waited by your browser's (the rest is the network and the HTTP layer)`;

  return h('figure', { class: 'waterfall', 'data-testid': 'waterfall', vars: { '--tick': pct(step / axis) } },
    h('figcaption', { text: caption }),
    h('div', { class: 'wf-axis', 'aria-hidden': 'true' },
      h('span'),
      h('span', { class: 'wf-ticks' },
        ticks.map((t) => h('span', { class: ['wf-tick', t / axis > 0.9 && 'end'], vars: { '--pos': pct(t / axis) }, text: tickLabel(t, step) }))),
      h('span')),
    h('ol', { class: 'wf-rows' }, rows),
    h('p', { class: 'wf-legend' },
      h('span', { class: 'key remote' }), ' remote call (waits on another system) ',
      h('span', { class: 'key db' }), ' database work'));
}

/** The steps each mode runs, in order: what the page can still show without timings. */
const STEPS = {
  blocking: ['validate_cart', 'check_inventory', 'reserve_inventory', 'create_order', 'create_order_items',
    'process_payment', 'record_payment', 'reduce_inventory', 'send_email', 'create_notification', 'clear_cart', 'commit'],
  async: ['validate_cart', 'check_inventory', 'place_order', 'commit'],
};

function withoutTimings(mode) {
  const steps = STEPS[mode] ?? STEPS.blocking;
  return h('figure', { class: 'waterfall missing', 'data-testid': 'waterfall' },
    h('figcaption', { text: 'No step timings in this response.' }),
    h('p', { class: 'muted small-text', text: 'The answer carried no Server-Timing header, so the page cannot draw the steps to scale. What the shop ran, in order, in one transaction (the trace in Jaeger has every duration):' }),
    h('ol', { class: 'steps-list' }, steps.map((name) =>
      h('li', { class: REMOTE_STEPS.has(name) ? 'remote' : null },
        h('span', { class: 'wf-step', text: name }), ' ', h('span', { class: 'wf-what', text: WHAT[name] })))),
    mode === 'async' ? h('p', { class: 'muted small-text', text: 'Then, outside this request: the workers call the payment gateway and the mail server.' }) : null);
}

const pct = (fraction) => `${Math.min(100, Math.max(0, fraction * 100)).toFixed(3)}%`;

// 1, 2 or 5 times a power of ten, so that the axis gets about four ticks.
function tickStep(axis) {
  const raw = axis / 4;
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * power >= raw) return m * power;
  return 10 * power;
}

function tickLabel(ms, step) {
  if (ms === 0) return '0';
  if (step >= 100) {
    const s = ms / 1000;
    return `${Number.isInteger(Math.round(s * 1000) / 1000) ? s.toFixed(0) : s.toFixed(1)} s`;
  }
  return `${step < 1 ? ms.toFixed(1) : Math.round(ms)} ms`;
}
