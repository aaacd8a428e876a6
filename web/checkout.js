// The checkout: the form (address, payment method — remembered), the big button, the
// live timer while the customer waits, and the answer — the order, the time waited in
// large figures, the waterfall of the steps (Server-Timing) and the links to its trace.
// In async mode the 202 shows the order at once and its status is followed live.

import { action } from './api.js';
import { byId, h, show, store, stored, uuid, formatMoney, formatDuration, formatSeconds, announce } from './dom.js';
import { clearProblem, markField, showProblem } from './problems.js';
import { state, on, emit, setMode } from './state.js';
import { loadCart } from './cart.js';
import { followOrder, statusText } from './orders.js';
import { remember, lastIn } from './history.js';
import { parseServerTiming, waterfall, rungsNote, isRung, REMOTE_STEPS } from './waterfall.js';
import { followTimeline, timelineFigure } from './timeline.js';

const FORM_KEY = 'storefront.checkout-form';
const DEMO_ADDRESS = '1 Demo Street, Springfield';
const METHODS = { credit_card: 'credit card', debit_card: 'debit card', paypal: 'PayPal', bank_transfer: 'bank transfer' };

let waiting = false;
let controller = null; // aborts the wait ("Stop waiting"); the server carries on
let ticking = null; // the timer's interval
let shown = null; // the result on screen: {order, mode, refs}

export function initCheckout() {
  const form = byId('checkout-form');
  const saved = stored(localStorage, FORM_KEY, {});
  if (saved.payment_method && METHODS[saved.payment_method]) byId('payment-method').value = saved.payment_method;
  if (saved.shipping_address) byId('shipping-address').value = saved.shipping_address;
  byId('payment-method').addEventListener('change', rememberForm);
  byId('shipping-address').addEventListener('change', rememberForm);

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    if (waiting) return;
    const body = {
      shipping_address: byId('shipping-address').value.trim(),
      payment_method: byId('payment-method').value,
    };
    clearProblem(byId('checkout-problem'), form);
    if (!body.shipping_address) {
      markField(byId('shipping-address'), 'Where should the order go? Enter a shipping address.');
      byId('shipping-address').focus();
      return;
    }
    rememberForm();
    // A new click is a new intent: a new Idempotency-Key. "Try again" reuses it.
    run({ key: uuid(), body });
  });
  byId('stop-waiting').addEventListener('click', () => controller?.abort());

  on('session', (user) => {
    show(form, !!user);
    if (user && !byId('shipping-address').value && user.email === state.config?.demo_customer?.email) {
      byId('shipping-address').value = DEMO_ADDRESS; // one click away from feeling the checkout
    }
    if (!user) clearResult();
    updateButton();
  });
  on('cart', updateButton);
  on('mode', explainMode);
  on('order', ({ order }) => {
    if (shown && shown.order.id === order.id) updateShown(order);
  });
  explainMode();
}

function rememberForm() {
  store(localStorage, FORM_KEY, {
    payment_method: byId('payment-method').value,
    shipping_address: byId('shipping-address').value,
  });
}

function updateButton() {
  const button = byId('checkout-button');
  const empty = !(state.cart?.items?.length > 0);
  button.disabled = waiting || !state.user || empty;
  button.textContent = waiting ? 'Checking out…' : 'Checkout';
  const hint = byId('checkout-hint');
  hint.textContent = empty && !waiting ? 'Add something to your cart first.' : '';
  show(hint, empty && !waiting);
}

function explainMode() {
  byId('mode-name').textContent = state.mode;
  byId('mode-chip').classList.toggle('async', state.mode === 'async');
  byId('mode-explainer').classList.toggle('async', state.mode === 'async');
  byId('mode-explainer').textContent = state.mode === 'async'
    ? 'Asynchronous checkout: the shop reserves your items and answers at once; its workers charge the card and send the e-mail afterwards.'
    : 'Blocking checkout: before it answers, the shop charges your card at the payment gateway and sends the confirmation through the mail server, all inside one database transaction.';
}

// ---------------------------------------------------------------------------------

async function run(attempt) {
  const slot = byId('checkout-problem');
  clearProblem(slot);
  clearResult();
  const mode = state.mode;
  const started = performance.now();
  setWaiting(true, mode, started);
  try {
    await action('click Checkout', { 'checkout.mode': mode }, async (call, span) => {
      const reply = await call('POST', '/api/orders/checkout', {
        body: attempt.body,
        headers: { 'Idempotency-Key': attempt.key },
        signal: controller.signal,
      });
      const waitedMs = performance.now() - started;
      setWaiting(false);
      const order = reply.data;
      const answeredMode = reply.status === 202 ? 'async' : 'blocking';
      setMode(answeredMode); // the mode may have changed since the page loaded
      span.set('order.id', order.id).set('order.status', order.status);

      const replayed = reply.headers.get('idempotent-replayed') === 'true';
      showResult({
        order,
        mode: answeredMode,
        waitedMs,
        timings: parseServerTiming(reply.headers.get('server-timing')),
        traceId: reply.traceId,
        replayed,
        acceptedAt: performance.now(),
      });
      // A replayed answer came at once; the checkout itself took what the shop measured.
      const tookMs = Math.round(replayed && answeredMode === 'blocking' ? order.processing_time_ms ?? waitedMs : waitedMs);
      remember({
        orderId: order.id,
        mode: answeredMode,
        waitedMs: tookMs,
        confirmedMs: answeredMode === 'blocking' ? tookMs : null,
        status: order.status,
      });
      emit('order', { order, mode: answeredMode });
      if (order.status === 'pending') followOrder(order.id, { path: reply.location ?? undefined, parent: span });
      await loadCart(null, call);
      revealResult();
    });
  } catch (error) {
    const waitedMs = performance.now() - started;
    setWaiting(false);
    failed(error, attempt, waitedMs);
  } finally {
    emit('checkout-ended'); // refused or not, money may have moved (the lab reconciles)
  }
}

function setWaiting(active, mode = state.mode, started = 0) {
  waiting = active;
  clearInterval(ticking);
  const panel = byId('checkout-waiting');
  show(panel, active);
  byId('checkout-form').classList.toggle('is-waiting', active);
  if (active) {
    controller = new AbortController();
    const timer = byId('checkout-timer');
    let told = null;
    const tick = () => {
      const elapsed = performance.now() - started;
      timer.textContent = `${(elapsed / 1000).toFixed(1)} s`;
      // An async checkout answers in milliseconds; still waiting means it is blocking
      // now (switched from the command line, say): say what the customer waits for.
      const now = mode === 'async' && elapsed < 800 ? 'async' : 'blocking';
      if (now !== told) {
        told = now;
        explainWait(now, mode);
      }
    };
    tick();
    ticking = setInterval(tick, 100);
    panel.scrollIntoView({ block: 'nearest' });
  }
  updateButton();
  // The checkout button is disabled while the customer waits: the focus goes to the one
  // thing they can do now, rather than falling to the page's body.
  if (active) byId('stop-waiting').focus({ preventScroll: true });
}

function explainWait(now, believed) {
  byId('waiting-message').textContent = now === 'async'
    ? 'Placing your order…'
    : 'You are now waiting for the payment gateway and the mail server. The shop calls both inside one database transaction, and answers only when both are done.';
  byId('waiting-aside').textContent = now === 'async'
    ? 'The shop only reserves the stock and queues the work: this should take milliseconds.'
    : believed === 'async'
      ? 'This is taking longer than an asynchronous checkout would: the shop has probably been switched back to the blocking checkout.'
      : 'This page cannot see which step is running: the answer comes all at once. Afterwards, the waterfall shows where the time went.';
}

// ---------------------------------------------------------------------------------
// The answer

function clearResult() {
  shown = null;
  byId('checkout-result').replaceChildren();
}

function showResult({ order, mode, waitedMs, timings, traceId, replayed, acceptedAt }) {
  const refs = {};
  const blocking = mode === 'blocking';
  refs.status = h('span', { class: ['status', order.status], text: statusText(order.status) });
  refs.lesson = h('p', { class: 'lesson' });
  if (!blocking) refs.toConfirmed = h('span', { 'data-testid': 'time-to-confirmed', text: '…' });
  const method = order.payment?.method ?? byId('payment-method').value;

  refs.section = h('section', {
    class: ['panel', 'result', mode],
    'data-testid': 'order-confirmation',
    'data-order-id': order.id,
    'data-status': order.status,
    'aria-labelledby': 'result-title',
    tabindex: -1,
  },
  h('div', { class: 'result-summary' },
    h('p', { class: 'result-kicker', text: blocking ? 'Blocking checkout' : 'Asynchronous checkout' }),
    h('h2', { id: 'result-title', class: 'result-title' },
      h('span', {}, 'Order #', h('span', { 'data-testid': 'order-number', text: order.id })), refs.status),
    h('div', { class: 'figures' },
      figure(replayed ? 'This answer took (your browser’s clock)' : 'You waited (your browser’s clock)', h('span', { 'data-testid': 'time-waited', text: blocking ? formatSeconds(waitedMs) : formatDuration(waitedMs) }), 'main'),
      blocking ? null : figure('Confirmed after', refs.toConfirmed, 'second'),
      figure('Total', h('span', { 'data-testid': 'order-total', text: formatMoney(order.total) })),
      blocking ? splitFigures(timings) : null),
    refs.lesson,
    rungsNote(timings) ? h('p', { class: 'rungs-note', 'data-testid': 'rungs-note', text: rungsNote(timings) }) : null,
    compareLine(order.id, mode),
    traceLinks(traceId, blocking ? 'checkout-anatomy' : 'blocking-vs-async'),
    order.shipping_address ? h('p', { class: 'muted small-text', text: `Ships to ${order.shipping_address}${method ? `, paid by ${METHODS[method] ?? method}` : ''}.` }) : null),
  h('div', { class: 'result-detail' },
    waterfall(timings, { waitedMs: blocking ? waitedMs : null, mode }),
    refs.timeline = blocking ? null : h('div', { class: 'timeline-slot', 'data-testid': 'timeline-slot' })));

  shown = { order, mode, waitedMs, timings, acceptedAt, replayed, refs };
  if (!blocking) {
    // The work after the answer, on the axis of the last blocking checkout's wait.
    const blockingMs = lastIn('blocking', order.id, { succeeded: true })?.waitedMs ?? null;
    followTimeline(order.id, (timeline) => {
      if (shown?.order.id !== order.id) return;
      refs.timeline.replaceChildren(timelineFigure(timeline, { answeredMs: waitedMs, blockingMs }));
    });
  }
  writeLesson();
  byId('checkout-result').replaceChildren(refs.section);
  announce(refs.lesson.textContent);
}

/** Brings the answer into view (after the cart emptied, so that nothing moves it). */
function revealResult() {
  if (!shown) return;
  const section = shown.refs.section;
  // Glide when it is close; jump when it is far (a long glide would still be moving).
  const far = Math.abs(section.getBoundingClientRect().top) > 1.5 * innerHeight;
  const smooth = !far && !matchMedia('(prefers-reduced-motion: reduce)').matches;
  section.scrollIntoView({ behavior: smooth ? 'smooth' : 'auto', block: 'start' });
  section.focus({ preventScroll: true });
}

function updateShown(order) {
  const { refs } = shown;
  // A declined order's items are back in the cart (the workers put them there).
  if (order.status === 'payment_failed' && shown.order.status !== 'payment_failed') loadCart('refresh cart');
  shown.order = order;
  refs.section.dataset.status = order.status;
  refs.status.className = `status ${order.status}`;
  refs.status.textContent = statusText(order.status);
  writeLesson();
  if (order.status !== 'pending') announce(refs.lesson.textContent);
}

function writeLesson() {
  const { order, mode, waitedMs, timings, acceptedAt, replayed, refs } = shown;
  if (replayed && mode === 'blocking') {
    // The first request did the work; this one only fetched its stored answer.
    const took = order.processing_time_ms;
    refs.lesson.textContent = `The shop had carried on after you stopped waiting${took ? ` and finished this checkout in ${formatSeconds(took)}` : ''}. Asking again with the same Idempotency-Key returned that first answer (Idempotent-Replayed): one order, one charge.`;
    return;
  }
  if (mode === 'blocking') {
    refs.lesson.textContent = blockingLesson(waitedMs, timings);
    return;
  }
  const accepted = `Order #${order.id} accepted in ${formatDuration(waitedMs)}`;
  const later = order.processing_time_ms ?? Math.round(performance.now() - acceptedAt);
  if (order.status === 'pending') {
    refs.toConfirmed.textContent = '…';
    refs.lesson.textContent = `${accepted} — confirming… You can keep shopping: this panel follows the order by itself.`;
  } else if (order.status === 'payment_failed') {
    refs.toConfirmed.textContent = 'never'; // “declined” does not fit the box; the lesson says it
    refs.section.classList.add('failed');
    refs.lesson.textContent = `${accepted}; ${formatSeconds(later)} later the payment gateway declined it. Nothing was charged: the order is “payment failed”, its stock went back on the shelf and its items back in your cart, to try again.`;
  } else {
    refs.toConfirmed.textContent = formatSeconds(later);
    refs.lesson.textContent = `${accepted}, confirmed ${formatSeconds(later)} later: the workers charged the card and queued the e-mail after you already had your answer.`;
  }
}

function blockingLesson(waitedMs, timings) {
  const waited = `You waited ${formatSeconds(waitedMs)}.`;
  const pay = timings.find((t) => t.name === 'process_payment');
  const mail = timings.find((t) => t.name === 'send_email');
  if (!pay && !mail) {
    return `${waited} Most of it is the payment gateway and the mail server, which this checkout calls inside one database transaction (this response did not say how long each took).`;
  }
  const remote = (pay?.dur ?? 0) + (mail?.dur ?? 0);
  const parts = [pay && `the payment gateway (${formatSeconds(pay.dur)})`, mail && `the mail server (${formatSeconds(mail.dur)})`].filter(Boolean);
  const db = timings.reduce((t, e) => t + e.dur, 0) - remote;
  return `${waited} ${formatSeconds(remote)} of it was ${parts.join(' and ')} inside one database transaction. The database work itself took ${formatDuration(db)}.`;
}

/** Before and after: the last successful checkout of the other mode, from this browser's history. */
function compareLine(orderId, mode) {
  const other = lastIn(mode === 'blocking' ? 'async' : 'blocking', orderId, { succeeded: true });
  if (!other) return null;
  const text = mode === 'blocking'
    ? `Your last asynchronous checkout (#${other.orderId}) answered in ${formatDuration(other.waitedMs)}.`
    : `Your last blocking checkout (#${other.orderId}) kept you waiting ${formatDuration(other.waitedMs)}.`;
  return h('p', { class: 'compare', text });
}

/** Remote calls vs database work, when the response said how long each step took. */
function splitFigures(timings) {
  if (!timings.length) return null;
  const steps = timings.filter((t) => !isRung(t)); // a rung's time is inside its step's
  const remote = steps.filter((t) => REMOTE_STEPS.has(t.name)).reduce((n, t) => n + t.dur, 0);
  const db = steps.reduce((n, t) => n + t.dur, 0) - remote;
  return [figure('Remote calls', formatDuration(remote), 'remote'), figure('Database work', formatDuration(db), 'db')];
}

function figure(label, value, kind = '') {
  return h('div', { class: ['figure', kind] }, h('p', { class: 'figure-label', text: label }), h('p', { class: 'figure-value' }, value));
}

function traceLinks(traceId, dashboard) {
  // Links only to the tools that answered the service lately.
  const jaeger = state.config?.tools?.jaeger;
  const grafana = state.config?.tools?.grafana;
  return h('div', { class: 'trace-links' },
    h('p', { class: 'muted small-text' }, 'Trace ', h('code', { class: 'trace-id', 'data-testid': 'trace-id', text: traceId ?? 'unknown' })),
    h('p', { class: 'link-row' },
      traceId && jaeger ? h('a', { class: 'button ghost small', 'data-testid': 'trace-link', href: `${jaeger}/trace/${traceId}`, target: '_blank', rel: 'noopener', text: 'Open this checkout in Jaeger' }) : null,
      grafana ? h('a', { class: 'button ghost small', 'data-testid': 'grafana-link', href: `${grafana}/d/${dashboard}`, target: '_blank', rel: 'noopener', text: dashboard === 'checkout-anatomy' ? 'Checkout anatomy in Grafana' : 'Blocking vs async in Grafana' }) : null));
}

// ---------------------------------------------------------------------------------
// When it goes wrong: say what happened, what it means, and offer a safe retry.

/**
 * What a failed checkout means to the customer: a headline in their words, what
 * happened to their money (with its currency), what to do now. The lesson for the
 * learner, and the server's own problem, come after it.
 */
function inCustomerWords(error) {
  const type = String(error?.problem?.type ?? '').split('/').pop();
  const total = formatMoney(state.cart?.total ?? 0);
  const status = error?.status ?? 0;
  if (error?.aborted) {
    return { headline: 'You stopped waiting — the shop did not', money: `Your card may be charged ${total} for an order still being placed.`, next: 'Ask for the result: the same request returns what the shop did, never a second order.' };
  }
  switch (type) {
    case 'payment-declined':
      return { headline: 'Your card was declined', money: 'Nothing was charged.', next: 'Your cart is as it was: try again, or choose another payment method.' };
    case 'email-failed':
      if (/circuit breaker is open/.test(error.problem?.detail ?? '')) {
        // Refused before the charge: the mail server's breaker is open.
        return { headline: 'The shop cannot confirm orders just now', money: 'Nothing was charged: the shop refused before taking your payment.', next: 'Your cart is as it was; try again in a few seconds.' };
      }
      return { headline: 'Your order could not be completed', money: `Your payment of ${total} was taken, and no order was made: the shop owes it back, and its reconciliation shows it as a payment to refund.`, next: 'Do not pay again for the refund. Your cart is as it was; you can check out again once the shop is well.' };
    case 'insufficient-stock':
      return { headline: 'Not enough in stock', money: 'Nothing was charged.', next: 'Lower the quantity or remove the item, then check out again.', lines: true };
    case 'empty-cart':
      return { headline: 'Your cart is empty', money: 'Nothing was charged.', next: 'Add something from the products first.' };
    case 'cart-changed':
      return { headline: 'Your cart changed since your first try', money: 'The earlier payment was refunded in full.', next: 'Check the cart and check out again.' };
    default:
      if (status === 503 || status === 0) {
        return { headline: 'The shop could not finish your checkout just now', money: 'You are not charged twice, whatever happened: trying again repeats the same request.', next: 'Try again in a moment.' };
      }
      return null; // the words of any other refusal (problems.js)
  }
}

function failed(error, attempt, waitedMs) {
  const slot = byId('checkout-problem');
  const form = byId('checkout-form');
  const status = error?.status ?? 0;
  const extra = [];
  const retry = (label) => h('button', {
    type: 'button',
    class: 'button small',
    on: { click: () => run(attempt) },
  }, label);

  if (error?.aborted) {
    extra.push(
      h('p', { text: 'The shop did not stop, though: a checkout is not cancelled by a closed connection, and the card may already be charged. Asking again with the same Idempotency-Key returns this checkout’s result — never a second order.' }),
      retry('Ask for the result'));
  } else if (status === 0 || status === 503 || (status === 409 && /progress/i.test(error.problem?.type ?? error.problem?.title ?? ''))) {
    extra.push(
      h('p', { text: 'Trying again is safe: it sends the same Idempotency-Key, so the shop answers with the first result instead of charging twice.' }),
      retry('Try again'));
  } else if (status === 402) {
    extra.push(h('p', { text: 'The whole transaction rolled back: no order, nothing taken from stock, and your cart is as it was.' }));
  } else if (status === 502) {
    extra.push(h('p', { text: 'The mail server failed after the gateway had charged the card, and the transaction rolled back: money taken for an order that does not exist — an orphaned payment (the Lab’s reconciliation counts them).' }));
  }
  if (!error?.aborted && status !== 0) {
    extra.push(h('p', { class: 'muted small-text', text: `Answered after ${formatSeconds(waitedMs)}.` }));
  }
  showProblem(slot, error, { form, extra, customer: inCustomerWords(error) });

  // A refusal that took seconds (402 after the gateway, 502 after the mail server)
  // has a waterfall too, when the response carried Server-Timing.
  const timings = parseServerTiming(error?.reply?.headers?.get('server-timing'));
  if (timings.length) {
    byId('checkout-result').replaceChildren(h('section', { class: 'panel result failed', 'aria-label': 'The failed checkout, step by step' },
      h('div', { class: 'result-summary' },
        h('p', { class: 'result-kicker', text: 'Failed checkout' }),
        h('h2', { class: 'result-title', text: inCustomerWords(error)?.headline ?? error.problem?.title ?? 'Checkout failed' }),
        h('div', { class: 'figures' },
          figure('You waited (your browser’s clock)', h('span', { 'data-testid': 'time-waited', text: formatSeconds(waitedMs) }), 'main'),
          splitFigures(timings)),
        rungsNote(timings) ? h('p', { class: 'rungs-note', 'data-testid': 'rungs-note', text: rungsNote(timings) }) : null,
        traceLinks(error.traceId, 'checkout-anatomy')),
      h('div', { class: 'result-detail' }, waterfall(timings, { waitedMs }))));
  }
  slot.scrollIntoView({ block: 'nearest' });
}
