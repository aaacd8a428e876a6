// What the page knows (the server's config, who is signed in, the checkout mode) and
// the events the modules use to tell each other that something changed:
//   'session'  the user signed in or out (detail: user or null)
//   'cart'     the cart was (re)loaded (detail: the cart)
//   'mode'     the checkout mode changed (detail: 'blocking' | 'async')
//   'order'    an order was placed or its status changed (detail: {order, mode?})
//   'checkout-ended'  a checkout request ended, whatever its answer
//   'signed-out'      the session ended by itself (detail: the reason to show)

import { stored, store } from './dom.js';

const bus = new EventTarget();
export const on = (type, fn) => bus.addEventListener(type, (e) => fn(e.detail));
export const emit = (type, detail) => bus.dispatchEvent(new CustomEvent(type, { detail }));

export const state = {
  config: null, // GET /api/storefront/config
  mode: 'blocking',
  user: null, // GET /api/auth/me
  cart: null,
};

// The token lives in sessionStorage: it survives a reload of this tab, is never put in
// a URL, and is forgotten when the tab closes.
const SESSION_KEY = 'storefront.session';

export function token() {
  const s = stored(sessionStorage, SESSION_KEY, null);
  if (!s?.token) return null;
  if (s.expiresAt && Date.now() >= s.expiresAt) {
    store(sessionStorage, SESSION_KEY, null);
    return null;
  }
  return s.token;
}

let expiryTimer = null;

export function keepToken(accessToken, expiresInSeconds) {
  const expiresAt = expiresInSeconds ? Date.now() + expiresInSeconds * 1000 : null;
  store(sessionStorage, SESSION_KEY, { token: accessToken, expiresAt });
  scheduleExpiry(expiresAt);
}

/** Signs out locally (tokens are stateless: nothing to tell the server). */
export function signOut(reason = null) {
  store(sessionStorage, SESSION_KEY, null);
  clearTimeout(expiryTimer);
  const wasSignedIn = state.user !== null;
  state.user = null;
  state.cart = null;
  if (wasSignedIn || reason) emit('session', null);
  if (reason) emit('signed-out', reason);
}

export function signedIn(user) {
  state.user = user;
  const s = stored(sessionStorage, SESSION_KEY, null);
  scheduleExpiry(s?.expiresAt ?? null);
  emit('session', user);
}

// Say "your session expired" when it does, not at the next click that fails.
function scheduleExpiry(expiresAt) {
  clearTimeout(expiryTimer);
  if (!expiresAt) return;
  const wait = expiresAt - Date.now();
  // setTimeout's limit is ~24.8 days; longer tokens are checked at the next call.
  if (wait < 2 ** 31 - 1) {
    expiryTimer = setTimeout(() => signOut('Your session expired, so you were signed out. Sign in again to carry on.'), Math.max(0, wait));
  }
}

export function setMode(mode) {
  if (mode !== 'blocking' && mode !== 'async') return;
  if (state.mode === mode) return;
  state.mode = mode;
  emit('mode', mode);
}
