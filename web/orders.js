// My orders (status, total, how long until confirmed, Cancel where allowed) and
// following an order's status live: GET its Location with backoff, 250 ms doubling to
// 2 s, until it leaves `pending`.

import { action, request } from './api.js';
import { byId, h, show, formatMoney, formatDuration, formatDate, announce } from './dom.js';
import { clearProblem, showProblem } from './problems.js';
import { startSpan } from './tracing.js';
import { state, on, emit } from './state.js';
import { modeOf } from './history.js';
import { fetchTimeline, timelineFigure } from './timeline.js';

const PAGE = 10;
let orders = [];
let more = false;

export function initOrders() {
  byId('orders-refresh').addEventListener('click', () => loadOrders('click Refresh orders'));
  byId('orders-more').addEventListener('click', () => loadOrders('click Show older orders', orders.length));
  on('session', (user) => {
    show(byId('my-orders'), !!user);
    show(byId('orders-shortcut'), !!user);
    orders = [];
    render();
    if (user) loadOrders('load my orders');
  });
  on('order', ({ order }) => {
    const i = orders.findIndex((o) => o.id === order.id);
    if (i >= 0) orders[i] = order;
    else orders.unshift(order);
    render();
  });
}

/** Loads the newest orders (offset 0) or the next older page. */
async function loadOrders(name, offset = 0) {
  if (!state.user) return;
  const slot = byId('orders-problem');
  try {
    const reply = await action(name, {}, (call) => call('GET', `/api/orders/my-orders?limit=${PAGE}&offset=${offset}`));
    clearProblem(slot);
    const page = Array.isArray(reply.data) ? reply.data : reply.data?.items ?? [];
    orders = offset === 0 ? page : [...orders, ...page.filter((o) => !orders.some((x) => x.id === o.id))];
    more = page.length === PAGE;
    render();
    // Orders still pending from an earlier visit: follow them too.
    for (const o of page) if (o.status === 'pending') followOrder(o.id);
  } catch (error) {
    showProblem(slot, error);
  }
}

function render() {
  const list = byId('order-rows');
  list.replaceChildren(...orders.map(row));
  if (state.user && orders.length === 0) {
    list.append(h('li', { class: 'empty muted', text: 'No orders yet.' }));
  }
  show(byId('orders-more'), more);
}

function row(order) {
  const slot = h('div', { class: 'slot' });
  const items = order.items ?? [];
  const summary = items.map((i) => `${i.quantity} × ${i.product_name}`).join(', ');
  const mode = modeOf(order.id);
  const failed = order.status === 'payment_failed';
  return h('li', { class: ['order-row', failed ? 'failed' : null], 'data-testid': 'order-row', 'data-order-id': order.id, 'data-status': order.status },
    h('div', { class: 'order-main' },
      h('p', { class: 'order-title' },
        h('strong', { text: `Order #${order.id}` }),
        h('span', { class: 'muted', text: ` · ${formatDate(order.created_at)}` })),
      h('p', { class: 'order-items muted', text: summary })),
    h('span', { class: ['status', order.status], text: statusText(order.status) }),
    failed
      ? h('span', { class: 'order-total' }, h('s', { text: formatMoney(order.total) }), h('span', { class: 'muted small-text', text: ' not charged' }))
      : h('span', { class: 'order-total', text: formatMoney(order.total) }),
    h('span', { class: 'order-duration' }, durationText(order, mode)),
    order.status === 'confirmed'
      ? h('button', {
        type: 'button',
        class: 'button ghost small',
        'data-testid': 'cancel-order',
        'aria-label': `Cancel order #${order.id}`,
        on: { click: (e) => cancel(order, e.currentTarget, slot) },
      }, 'Cancel')
      : h('span', { class: 'order-action' }),
    timelineDisclosure(order),
    slot);
}

// The order's timeline, fetched when the customer opens it.
function timelineDisclosure(order) {
  const body = h('div', { class: 'order-timeline-body' });
  return h('details', {
    class: 'order-timeline',
    'data-testid': 'order-timeline',
    on: {
      toggle: async (event) => {
        if (!event.currentTarget.open) return;
        body.replaceChildren(h('p', { class: 'muted small-text', text: 'Loading…' }));
        try {
          const timeline = await fetchTimeline(order.id);
          body.replaceChildren(timelineFigure(timeline));
        } catch (error) {
          showProblem(body, error);
        }
      },
    },
  }, h('summary', { text: 'When it happened' }), body);
}

export function statusText(status) {
  return String(status ?? '').replace(/_/g, ' ');
}

function durationText(order, mode) {
  if (order.status === 'payment_failed') {
    return h('span', { class: 'order-failure', 'data-testid': 'order-failure', text: 'Payment declined: nothing was charged, and the items went back to your cart.' });
  }
  const ms = order.processing_time_ms;
  if (ms === null || ms === undefined) return order.status === 'pending' ? 'confirming…' : '';
  const how = mode === 'blocking' ? ' by the shop’s clock (blocking: you waited for all of it)' : mode === 'async' ? ' by the shop’s clock (async: after the 202)' : ' by the shop’s clock';
  return [h('span', { class: 'muted', text: 'confirmed after ' }), h('strong', { text: formatDuration(ms) }), h('span', { class: 'muted', text: how })];
}

async function cancel(order, button, slot) {
  clearProblem(slot);
  button.disabled = true;
  try {
    const reply = await action('click Cancel order', { 'order.id': order.id }, (call) =>
      call('POST', `/api/orders/${order.id}/cancel`));
    emit('order', { order: reply.data?.id ? reply.data : { ...order, status: 'cancelled' } });
    announce(`Order #${order.id} is cancelled.`);
  } catch (error) {
    button.disabled = false;
    showProblem(slot, error);
  }
}

// -----------------------------------------------------------------------------------
// Following an order: each order is followed once, whoever asks.

const followed = new Map();

/**
 * Polls the order until it leaves `pending`; emits 'order' at every status change.
 * parent: the span of the click that placed it (the polls join its trace).
 */
export function followOrder(id, { path = `/api/orders/${id}`, parent = null } = {}) {
  if (followed.has(id)) return followed.get(id);
  const span = startSpan(`follow order`, { parent, attributes: { 'order.id': id } });
  const done = (async () => {
    let wait = 250;
    let last = 'pending';
    const giveUp = Date.now() + 10 * 60 * 1000;
    try {
      while (state.user && Date.now() < giveUp) {
        await sleep(wait);
        wait = Math.min(wait * 2, 2000);
        let order;
        try {
          order = (await request('GET', path, { parent: span })).data;
        } catch (error) {
          if (error.status === 401 || error.status === 404) throw error;
          continue; // a hiccup: try again at the next tick
        }
        if (order.status !== last) {
          last = order.status;
          emit('order', { order });
        }
        if (order.status !== 'pending') {
          span.set('order.status', order.status);
          return order;
        }
      }
      span.set('order.status', last);
      return null;
    } catch (error) {
      span.fail(error.message);
      return null;
    } finally {
      span.end();
      followed.delete(id);
    }
  })();
  followed.set(id, done);
  return done;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
