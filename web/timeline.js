// An order's work on one seconds axis — the lesson of the cure on the screen: the
// asynchronous checkout answers at once, and the payment and the e-mail still happen,
// after the answer, in the outbox's workers. The axis is shared with the customer's last
// blocking checkout, so both are drawn to the same scale.

import { request } from './api.js';
import { h, formatDuration } from './dom.js';

const WHAT = {
  placed: 'the order is written',
  charged: 'the payment is taken',
  declined: 'the payment is declined',
  confirmed: 'the order is confirmed',
  email_sent: 'the confirmation e-mail goes out',
  email_skipped: 'no e-mail: the order was cancelled',
  charge_trying: 'the payment is under way',
  email_trying: 'the e-mail is under way',
  cancelled: 'the order is cancelled',
};

/** GET /api/orders/{id}/timeline. */
export async function fetchTimeline(orderId, parent = null) {
  return (await request('GET', `/api/orders/${orderId}/timeline`, { parent })).data;
}

/**
 * Follows an order's timeline until it is settled (or a minute passes), calling
 * `render(timeline)` each time it changed.
 */
export async function followTimeline(orderId, render) {
  let seen = '';
  const giveUp = Date.now() + 60_000;
  while (Date.now() < giveUp) {
    let timeline = null;
    try {
      timeline = await fetchTimeline(orderId);
    } catch (error) {
      if (error.status === 401 || error.status === 404) return;
    }
    if (timeline) {
      const now = JSON.stringify(timeline);
      if (now !== seen) {
        seen = now;
        render(timeline);
      }
      if (timeline.settled) return;
    }
    await new Promise((resolve) => setTimeout(resolve, 400));
  }
}

/**
 * The lane (data-testid="timeline"): the answer, then each event at its second. When
 * `answeredMs` is given (the asynchronous checkout), events after it are marked "after
 * your answer"; `blockingMs` (the last blocking checkout's wait) is drawn as a reference
 * row and stretches the axis to it.
 */
export function timelineFigure(timeline, { answeredMs = null, blockingMs = null } = {}) {
  const events = timeline.events.filter((e) => e.event !== 'placed');
  const ends = events.map((e) => e.seconds * 1000);
  const axis = Math.max(1, answeredMs ?? 0, blockingMs ?? 0, ...ends);
  const pct = (ms) => `${Math.min(100, Math.max(0, (ms / axis) * 100)).toFixed(3)}%`;
  // A bar from where the work began (its first attempt, when the outbox knows it) to
  // where it ended; each attempt's start is a tick on the bar.
  const lane = (label, what, fromMs, toMs, kind, testid, triesMs = []) =>
    h('li', { class: ['tl-row'].concat(kind), 'data-testid': testid, 'data-ms': Math.round(toMs) },
      h('span', { class: 'wf-label' }, h('span', { class: 'wf-step', text: label }), h('span', { class: 'wf-what', text: what })),
      h('span', { class: 'wf-track' },
        h('span', { class: 'tl-bar', vars: { '--start': pct(fromMs), '--width': pct(Math.max(toMs - fromMs, 0)) } }),
        triesMs.map((ms, i) => h('span', {
          class: 'tl-try', 'data-testid': 'timeline-try', title: `attempt ${i + 1} began at ${formatDuration(ms)}`, vars: { '--at': pct(ms) },
        }))),
      h('span', { class: 'wf-ms', text: formatDuration(toMs) }));

  const rows = [];
  if (blockingMs !== null) {
    rows.push(lane('your last blocking checkout', 'you waited for all of it', 0, blockingMs, 'reference', 'timeline-reference'));
  }
  if (answeredMs !== null) {
    rows.push(lane('your answer', 'the shop answered 202: you are free', 0, answeredMs, 'answer', 'timeline-answer'));
  }
  for (const event of events) {
    const ms = event.seconds * 1000;
    const tries = (event.attempt_seconds ?? []).map((s) => s * 1000);
    const after = answeredMs !== null && ms > answeredMs;
    const from = tries.length ? Math.min(tries[0], ms) : after ? answeredMs : 0;
    const attempts = tries.length > 1
      ? ` (${tries.length} attempts, begun at ${tries.map(formatDuration).join(', ')})`
      : event.attempts > 1 ? ` (${event.attempts} attempts)` : '';
    rows.push(lane(event.event.replace(/_/g, ' '), `${WHAT[event.event] ?? event.event}${attempts}${after ? ' — after your answer' : ''}`,
      from, ms, [after ? 'after' : 'during', event.event === 'declined' ? 'failed' : null], 'timeline-event', tries.length > 1 ? tries : []));
  }
  const caption = timeline.settled
    ? 'The whole order on one time axis: what you waited for, and what happened after you had your answer'
    : 'Following the order: the work still under way after your answer…';
  return h('figure', { class: 'timeline', 'data-testid': 'timeline', 'data-settled': String(timeline.settled) },
    h('figcaption', { text: caption }),
    h('ol', { class: 'wf-rows' }, rows));
}
