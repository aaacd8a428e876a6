// Signing in and out: the one-click demo customer, the sign-in and register forms, who
// is signed in (header), and what happens when a session ends on its own.

import { action } from './api.js';
import { byId, show, announce } from './dom.js';
import { clearProblem, showProblem } from './problems.js';
import { state, on, keepToken, signedIn, signOut, token } from './state.js';

export function initAccount() {
  byId('demo-signin').addEventListener('click', demoSignIn);
  byId('signin-form').addEventListener('submit', submitSignIn);
  byId('register-form').addEventListener('submit', submitRegister);
  byId('signout').addEventListener('click', () => {
    signOut();
    announce('Signed out.');
    byId('demo-signin').focus();
  });
  on('session', render);
  on('signed-out', (reason) => notice(reason));
  render(null);
}

/** At start: a token kept in this tab is still good if /api/auth/me says so. */
export async function resumeSession() {
  if (!token()) return;
  try {
    const me = await action('resume session', {}, (call) => call('GET', '/api/auth/me'));
    signedIn(me.data);
  } catch {
    // A 401 already signed us out (and said so). Anything else (the shop away for a
    // moment): stay signed out on screen, but keep the token for the next reload.
  }
}

async function demoSignIn() {
  const button = byId('demo-signin');
  const slot = byId('demo-problem');
  clearProblem(slot);
  const demo = state.config?.demo_customer;
  if (!demo) {
    showProblem(slot, { problem: { title: 'No demo customer', detail: 'The shop did not say which demo account to use.' } });
    return;
  }
  button.disabled = true;
  try {
    await action('click Shop as the demo customer', {}, (call) => logIn(call, demo.email, demo.password));
    announce('Signed in as the demo customer.');
  } catch (error) {
    showProblem(slot, error);
  } finally {
    button.disabled = false;
  }
}

async function submitSignIn(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const slot = byId('signin-problem');
  clearProblem(slot, form);
  const { email, password } = Object.fromEntries(new FormData(form));
  setBusy(form, true);
  try {
    await action('submit Sign in', {}, (call) => logIn(call, email, password));
  } catch (error) {
    showProblem(slot, error, { form });
  } finally {
    setBusy(form, false);
  }
}

async function submitRegister(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const slot = byId('register-problem');
  clearProblem(slot, form);
  const body = Object.fromEntries(new FormData(form));
  setBusy(form, true);
  try {
    await action('submit Create account', {}, async (call) => {
      await call('POST', '/api/auth/register', { body, auth: false });
      await logIn(call, body.email, body.password);
    });
    announce('Account created; you are signed in.');
  } catch (error) {
    showProblem(slot, error, { form });
  } finally {
    setBusy(form, false);
  }
}

async function logIn(call, email, password) {
  const login = await call('POST', '/api/auth/login', { body: { email, password }, auth: false });
  keepToken(login.data.access_token, login.data.expires_in);
  const me = await call('GET', '/api/auth/me');
  hideNotice();
  // Whichever way in, the panel's old errors and typed values are stale now.
  for (const [form, slot] of [['signin-form', 'signin-problem'], ['register-form', 'register-problem']]) {
    clearProblem(byId(slot), byId(form));
    byId(form).reset();
  }
  clearProblem(byId('demo-problem'));
  signedIn(me.data);
  // The sign-in panel is gone: keep the keyboard on the page, at the products.
  byId('catalog').focus();
}

function render(user) {
  show(byId('welcome'), !user);
  show(byId('signed-in'), !!user);
  show(byId('signout'), !!user);
  byId('signed-in-as').textContent = user ? `${user.full_name} (${user.email})` : '';
  byId('signed-in').classList.toggle('is-admin', user?.role === 'admin');
  document.body.classList.toggle('signed-in', !!user);
}

function notice(message) {
  const box = byId('notice');
  box.textContent = message;
  show(box, true);
}

function hideNotice() {
  show(byId('notice'), false);
}

function setBusy(form, busy) {
  // Only the buttons: disabled inputs could not take the focus of a field error.
  form.querySelectorAll('button').forEach((el) => { el.disabled = busy; });
}
