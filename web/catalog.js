// The catalog: search, category filter, paging, and a card per product with its price,
// rating, stock ("3 left", "sold out") and an Add to cart button.

import { action, busy } from './api.js';
import { byId, h, formatMoney, announce } from './dom.js';
import { clearProblem, showProblem } from './problems.js';
import { state, on } from './state.js';
import { addToCart } from './cart.js';

const PAGE = 12;
const LOW_STOCK = 5;
const query = { q: '', categoryId: '', offset: 0 };
let total = 0;
let products = [];
const adding = new Set();
let latest = 0; // answers to older searches are dropped when a newer one was sent

export function initCatalog() {
  const form = byId('catalog-tools');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    search();
  });
  // Search as the visitor types, 300 ms after the last key; the page counts as busy
  // meanwhile, so that nobody (a test) reads the old results as the new ones.
  let typing = null;
  byId('search').addEventListener('input', () => {
    if (typing === null) busy(+1);
    clearTimeout(typing);
    typing = setTimeout(() => {
      typing = null;
      search();
      busy(-1);
    }, 300);
  });
  byId('category-filter').addEventListener('change', search);
  byId('prev-page').addEventListener('click', () => page(-1));
  byId('next-page').addEventListener('click', () => page(+1));
  // The buttons say "Sign in to buy" or "Add to cart", and show what is in the cart.
  on('session', () => render());
  on('cart', () => render());
  on('order', () => loadProducts('refresh stock'));
}

export async function loadCategories(call) {
  try {
    const reply = await call('GET', '/api/products/categories');
    const select = byId('category-filter');
    const sorted = [...reply.data].sort((a, b) => a.name.localeCompare(b.name));
    select.replaceChildren(h('option', { value: '', text: 'All categories' }),
      ...sorted.map((c) => h('option', { value: c.id, text: c.name })));
  } catch (error) {
    showProblem(byId('catalog-problem'), error);
  }
}

function search() {
  query.q = byId('search').value.trim();
  query.categoryId = byId('category-filter').value;
  query.offset = 0;
  loadProducts('search catalog');
}

function page(direction) {
  query.offset = Math.max(0, query.offset + direction * PAGE);
  loadProducts(direction > 0 ? 'click Next page' : 'click Previous page').then(() => byId('catalog').focus());
}

/** Loads the current page; `call` joins a running action, else one is started. */
export async function loadProducts(name, call = null) {
  const ticket = ++latest;
  const params = new URLSearchParams({ limit: PAGE, offset: query.offset });
  if (query.q) params.set('q', query.q);
  if (query.categoryId) params.set('category_id', query.categoryId);
  const get = (c) => c('GET', `/api/products?${params}`);
  byId('products').setAttribute('aria-busy', 'true');
  try {
    const reply = call ? await get(call) : await action(name, {}, get);
    if (ticket !== latest) return;
    clearProblem(byId('catalog-problem'));
    products = reply.data.items ?? [];
    total = reply.data.total ?? products.length;
    // A page beyond the end (stock sold, filter changed): go back to the last one.
    if (products.length === 0 && query.offset > 0 && total > 0) {
      query.offset = Math.floor((total - 1) / PAGE) * PAGE;
      return loadProducts(name, call);
    }
    render();
  } catch (error) {
    if (ticket === latest) showProblem(byId('catalog-problem'), error);
  } finally {
    if (ticket === latest) byId('products').setAttribute('aria-busy', 'false');
  }
}

function render() {
  const grid = byId('products');
  // Re-rendering must not throw the keyboard focus away: remember which button had it.
  const focused = document.activeElement?.closest?.('[data-testid="product-card"]');
  const focusedId = focused?.dataset.productId;

  const inCart = new Map((state.cart?.items ?? []).map((i) => [String(i.product_id), i.quantity]));
  grid.replaceChildren(...products.map((p) => card(p, inCart.get(String(p.id)) ?? 0)));
  if (products.length === 0) {
    grid.append(h('p', { class: 'empty', text: query.q || query.categoryId ? 'No product matches this search.' : 'The catalog is empty.' }));
  }
  if (focusedId) grid.querySelector(`[data-product-id="${CSS.escape(focusedId)}"] button`)?.focus();

  const first = total === 0 ? 0 : query.offset + 1;
  const last = query.offset + products.length;
  byId('page-info').textContent = total ? `${first}–${last} of ${total}` : '';
  byId('catalog-count').textContent = `${total} product${total === 1 ? '' : 's'}`;
  byId('prev-page').disabled = query.offset === 0;
  byId('next-page').disabled = last >= total;
}

function card(product, quantityInCart) {
  const stock = Number(product.stock ?? 0);
  const soldOut = stock <= 0;
  const feedback = h('p', { class: 'card-feedback', 'aria-live': 'polite' },
    quantityInCart ? [`In your cart: ${quantityInCart}`, h('a', { href: '#cart', text: 'view cart' })] : '');
  const problemSlot = h('div', { class: 'slot' });

  let label = 'Add to cart';
  if (soldOut) label = 'Sold out';
  else if (!state.user) label = 'Sign in to buy';
  const button = h('button', {
    type: 'button',
    class: ['button', 'add', !state.user && !soldOut && 'ghost'],
    'data-testid': 'add-to-cart',
    disabled: soldOut,
    'aria-label': soldOut ? `${product.name}: sold out` : `${label}: ${product.name}`,
    on: { click: () => add(product, feedback, problemSlot) },
  }, label);

  return h('article', {
    class: ['product', soldOut && 'sold-out'],
    'data-testid': 'product-card',
    'data-product-id': product.id,
    'data-stock': stock,
  },
  h('p', { class: 'product-category', text: product.category_name ?? '' }),
  h('h3', { class: 'product-name', 'data-testid': 'product-name', text: product.name }),
  product.description ? h('p', { class: 'product-desc', text: product.description }) : null,
  rating(product),
  h('div', { class: 'product-foot' },
    h('span', { class: 'price', text: formatMoney(product.price) }),
    stockLabel(stock)),
  button,
  feedback,
  problemSlot);
}

function stockLabel(stock) {
  if (stock <= 0) return h('span', { class: 'stock out', text: 'Sold out' });
  if (stock <= LOW_STOCK) return h('span', { class: 'stock low', text: `Only ${stock} left` });
  return h('span', { class: 'stock', text: 'In stock' });
}

function rating(product) {
  const count = Number(product.review_count ?? 0);
  if (product.average_rating === null || product.average_rating === undefined || count === 0) {
    return h('p', { class: 'rating none', text: 'No reviews yet' });
  }
  const avg = Number(product.average_rating);
  const full = Math.round(avg);
  return h('p', { class: 'rating', 'aria-label': `Rated ${avg.toFixed(1)} out of 5 from ${count} review${count === 1 ? '' : 's'}` },
    h('span', { class: 'stars', 'aria-hidden': 'true', text: '★'.repeat(full) + '☆'.repeat(Math.max(0, 5 - full)) }),
    h('span', { 'aria-hidden': 'true', text: ` ${avg.toFixed(1)} · ${count} review${count === 1 ? '' : 's'}` }));
}

async function add(product, feedback, slot) {
  if (!state.user) {
    // Not a dead end: take the visitor to the one-click sign-in.
    const demo = byId('demo-signin');
    demo.scrollIntoView({ behavior: 'smooth', block: 'center' });
    demo.focus({ preventScroll: true });
    announce('Sign in first: use the demo customer button or the forms.');
    return;
  }
  if (adding.has(product.id)) return; // a double click adds once
  adding.add(product.id);
  clearProblem(slot);
  feedback.textContent = 'Adding…';
  try {
    await addToCart(product);
    // The 'cart' event re-renders the card with "In your cart: N".
    announce(`${product.name} is in your cart.`);
  } catch (error) {
    feedback.textContent = '';
    showProblem(slot, error);
  } finally {
    adding.delete(product.id);
  }
}
