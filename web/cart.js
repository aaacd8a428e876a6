// The cart: its lines with a quantity field and a Remove button, the total, and the
// calls that change it. Every change reloads the cart from the server, which is the
// only one that knows the truth (prices, what another tab did).

import { action } from './api.js';
import { byId, h, show, formatMoney, announce } from './dom.js';
import { clearProblem, showProblem } from './problems.js';
import { state, on, emit } from './state.js';

export function initCart() {
  byId('cart-clear').addEventListener('click', emptyCart);
  on('session', (user) => {
    if (user) loadCart('load cart');
    else setCart(null);
  });
}

/** Reloads the cart; `call` joins a running action (e.g. the checkout's). */
export async function loadCart(name, call = null) {
  if (!state.user) return;
  try {
    const get = (c) => c('GET', '/api/cart');
    const reply = call ? await get(call) : await action(name, {}, get);
    clearProblem(byId('cart-problem'));
    setCart(reply.data);
  } catch (error) {
    showProblem(byId('cart-problem'), error);
  }
}

/** POST /api/cart/items; throws the ApiProblem for the caller (the product card) to show. */
export async function addToCart(product) {
  await action('click Add to cart', { 'product.id': product.id }, async (call) => {
    await call('POST', '/api/cart/items', { body: { product_id: product.id, quantity: 1 } });
    await loadCart(null, call);
  });
}

function setCart(cart) {
  state.cart = cart;
  render();
  emit('cart', cart);
}

function render() {
  const cart = state.cart;
  const items = cart?.items ?? [];
  const lines = byId('cart-lines');
  // Keep the focus on the same line's control across a re-render.
  const focused = document.activeElement?.closest?.('[data-testid="cart-line"]');
  const focusedId = focused?.dataset.cartItemId;
  const focusedRole = document.activeElement?.dataset?.testid;

  lines.replaceChildren(...items.map(line));
  if (focusedId) {
    lines.querySelector(`[data-cart-item-id="${CSS.escape(focusedId)}"] [data-testid="${focusedRole}"]`)?.focus();
  }

  const empty = byId('cart-empty');
  empty.textContent = !state.user ? 'Sign in to fill a cart.' : 'Your cart is empty. Add something from the products.';
  show(empty, items.length === 0);
  show(byId('cart-total-line'), items.length > 0);
  show(byId('cart-clear'), items.length > 0);
  byId('cart-total').textContent = formatMoney(cart?.total ?? 0);
  const count = items.reduce((n, i) => n + Number(i.quantity), 0);
  byId('cart-count').textContent = String(count);
}

function line(item) {
  const slot = h('div', { class: 'slot line-problem' });
  const id = `qty-${item.id}`;
  const quantity = h('input', {
    id,
    type: 'number',
    min: 1,
    step: 1,
    inputmode: 'numeric',
    value: item.quantity,
    class: 'qty',
    'data-testid': 'cart-quantity',
    on: { change: (e) => changeQuantity(item, e.currentTarget, slot) },
  });
  return h('li', { class: 'cart-line', 'data-testid': 'cart-line', 'data-cart-item-id': item.id },
    h('div', { class: 'line-main' },
      h('p', { class: 'line-name', text: item.product_name }),
      h('p', { class: 'line-unit muted', text: `${formatMoney(item.unit_price)} each` })),
    h('div', { class: 'line-controls' },
      h('label', { for: id, class: 'visually-hidden', text: `Quantity of ${item.product_name}` }),
      quantity,
      h('span', { class: 'line-subtotal', text: formatMoney(item.subtotal) }),
      h('button', {
        type: 'button',
        class: 'button link small remove',
        'data-testid': 'cart-remove',
        'aria-label': `Remove ${item.product_name} from the cart`,
        on: { click: () => remove(item, slot) },
      }, 'Remove')),
    slot);
}

async function changeQuantity(item, input, slot) {
  clearProblem(slot);
  const quantity = Number(input.value);
  if (!Number.isInteger(quantity) || quantity < 1) {
    // Not worth a round trip: say it here, and put the old value back.
    showProblem(slot, { problem: { title: 'Not a quantity', detail: 'A quantity is a whole number, 1 or more. To take the product out, use Remove.' } });
    input.value = item.quantity;
    return;
  }
  try {
    await action('change cart quantity', { 'cart_item.id': item.id }, async (call) => {
      await call('PATCH', `/api/cart/items/${item.id}`, { body: { quantity } });
      await loadCart(null, call);
    });
    announce(`${item.product_name}: quantity ${quantity}.`);
  } catch (error) {
    input.value = item.quantity;
    showProblem(slot, error);
  }
}

async function remove(item, slot) {
  clearProblem(slot);
  try {
    await action('click Remove', { 'cart_item.id': item.id }, async (call) => {
      await call('DELETE', `/api/cart/items/${item.id}`);
      await loadCart(null, call);
    });
    announce(`${item.product_name} removed from the cart.`);
    byId('cart').focus(); // the line is gone; keep the keyboard in the cart
  } catch (error) {
    showProblem(slot, error);
  }
}

async function emptyCart() {
  const slot = byId('cart-problem');
  clearProblem(slot);
  try {
    await action('click Empty the cart', {}, async (call) => {
      await call('DELETE', '/api/cart');
      await loadCart(null, call);
    });
    announce('The cart is empty.');
  } catch (error) {
    showProblem(slot, error);
  }
}
