// The Lab panel, for everyone: the checkout mode, the faults (slow, declining, flapping
// or overloaded gateway; slow, absent or hung mail server) and the rungs of the ladder of
// cures in force. The admin switches them — or anyone signed in, with the classroom
// switch STOREFRONT_OPEN_LAB — and the others read them; the admin also reconciles the
// gateway's charges with the orders.

import { action } from './api.js';
import { byId, h, show, formatMoney, announce } from './dom.js';
import { clearProblem, showProblem } from './problems.js';
import { state, on, setMode } from './state.js';

const DEFAULT_FAULTS = {
  payment_delay_ms: 1000, payment_success_rate: 0.95, email_delay_ms: 2000, email_outage: false,
  email_hang: false, payment_flap_rate: 0, payment_capacity: 0,
};
const NUMBER_FAULTS = ['payment_delay_ms', 'payment_success_rate', 'email_delay_ms', 'payment_flap_rate', 'payment_capacity'];
const BOOLEAN_FAULTS = ['email_outage', 'email_hang'];
// The rungs the panel shows, as `dependency.field`; the others keep their value.
const RUNG_NUMBERS = ['payment.timeout_ms', 'payment.retries', 'payment.retry_budget_percent', 'payment.breaker_failures',
  'email.timeout_ms', 'email.retries', 'email.breaker_failures'];
const RUNGS_OFF = {
  payment: { timeout_ms: 0, retries: 0, retry_budget_percent: 0, breaker_failures: 0 },
  email: { timeout_ms: 0, retries: 0, breaker_failures: 0, fallback: false },
};

const isAdmin = () => state.user?.role === 'admin';
let labSettings = null; // the last GET /api/lab's `settings`
// The admin may change the live settings; with the classroom switch on, anyone signed in.
const mayChange = () => isAdmin() || (!!state.user && !!labSettings?.open_to_everyone);

/** Says who may change the settings, and enables the controls for whoever may. */
function renderAccess() {
  const editable = mayChange();
  const keeper = labSettings?.admin_email;
  byId('lab-access').textContent = isAdmin()
    ? 'You are the admin: what you switch here reaches every replica within a second.'
    : editable
      ? 'Classroom mode (STOREFRONT_OPEN_LAB): anyone signed in may switch these — every replica follows within a second.'
      : `Read-only: what the shop runs with now. Only the admin account${keeper ? ` (${keeper})` : ''} can change it — or start the shop with STOREFRONT_OPEN_LAB=true, the classroom switch.`;
  for (const id of ['faults-form', 'resilience-form']) {
    for (const element of byId(id).elements) element.disabled = !editable;
  }
  for (const id of ['mode-blocking', 'mode-async']) byId(id).disabled = !editable;
}

export function initLab() {
  byId('mode-blocking').addEventListener('click', () => switchMode('blocking'));
  byId('mode-async').addEventListener('click', () => switchMode('async'));
  byId('faults-form').addEventListener('submit', applyFaults);
  byId('faults-reset').addEventListener('click', resetFaults);
  byId('resilience-form').addEventListener('submit', applyRungs);
  byId('resilience-reset').addEventListener('click', () => putRungs(RUNGS_OFF, 'click Rungs off', 'Every rung is off.'));
  byId('recon-refresh').addEventListener('click', () => loadReconciliation('click Refresh reconciliation'));
  on('session', (user) => {
    const admin = user?.role === 'admin';
    show(byId('reconciliation'), admin);
    if (admin) loadLab();
    renderAccess();
  });
  // Everyone sees the settings in force (GET /api/lab, polled for the banner); who may
  // change them gets the forms, the others read them.
  on('lab-settings', (settings) => {
    const first = labSettings === null;
    labSettings = settings;
    renderAccess();
    if (!isAdmin() && (first || !mayChange())) {
      setMode(settings.checkout_mode);
      renderMode();
      fillFaults(settings.faults);
      fillRungs(settings.resilience);
    }
  });
  on('mode', renderMode);
  // Every checkout moves money: keep the reconciliation current.
  const refresh = () => {
    if (isAdmin()) loadReconciliation('refresh reconciliation');
  };
  on('order', refresh);
  on('checkout-ended', refresh);
}

async function loadLab() {
  try {
    await action('open lab', {}, async (call) => {
      const [mode, faults, rungs] = await Promise.all([
        call('GET', '/api/admin/checkout-mode'),
        call('GET', '/api/admin/faults'),
        call('GET', '/api/admin/resilience'),
      ]);
      setMode(mode.data.mode);
      renderMode();
      fillFaults(faults.data);
      fillRungs(rungs.data);
      await loadReconciliation(null, call);
    });
  } catch (error) {
    showProblem(byId('mode-problem'), error);
  }
}

function renderMode() {
  byId('mode-blocking').setAttribute('aria-pressed', String(state.mode === 'blocking'));
  byId('mode-async').setAttribute('aria-pressed', String(state.mode === 'async'));
}

async function switchMode(mode) {
  const slot = byId('mode-problem');
  clearProblem(slot);
  try {
    const reply = await action('click Checkout mode', { 'checkout.mode': mode }, (call) =>
      call('PUT', '/api/admin/checkout-mode', { body: { mode } }));
    setMode(reply.data?.mode ?? mode);
    renderMode();
    announce(`The checkout is now ${state.mode}.`);
  } catch (error) {
    showProblem(slot, error);
  }
}

function fillFaults(f) {
  const form = byId('faults-form');
  for (const name of NUMBER_FAULTS) form.elements[name].value = f[name] ?? '';
  for (const name of BOOLEAN_FAULTS) form.elements[name].checked = !!f[name];
  const differs = Object.entries(DEFAULT_FAULTS).some(([k, v]) => f[k] !== v);
  byId('faults-status').textContent = differs ? 'Faults are on: the shop is not running with its defaults.' : 'The defaults: 1 s gateway, 95 % approved, 2 s mail server.';
  form.classList.toggle('faulty', differs);
}

async function applyFaults(event) {
  event.preventDefault();
  const form = event.currentTarget;
  // Only what the form holds; an emptied field is left out (the PUT is partial).
  const body = {};
  for (const name of NUMBER_FAULTS) {
    const raw = form.elements[name].value.trim();
    if (raw !== '') body[name] = Number(raw);
  }
  for (const name of BOOLEAN_FAULTS) body[name] = form.elements[name].checked;
  await putFaults(body, 'submit Faults', 'Faults applied.');
}

function resetFaults() {
  return putFaults({ ...DEFAULT_FAULTS }, 'click Reset faults', 'Faults reset to the defaults.');
}

async function putFaults(body, name, done) {
  const form = byId('faults-form');
  const slot = byId('faults-problem');
  clearProblem(slot, form);
  try {
    const reply = await action(name, {}, (call) => call('PUT', '/api/admin/faults', { body }));
    fillFaults(reply.data ?? body);
    announce(done);
  } catch (error) {
    showProblem(slot, error, { form });
  }
}

function fillRungs(r) {
  const form = byId('resilience-form');
  for (const path of RUNG_NUMBERS) {
    const [dependency, field] = path.split('.');
    form.elements[path].value = r[dependency]?.[field] ?? '';
  }
  form.elements['email.fallback'].checked = !!r.email?.fallback;
  const on = [];
  if (r.payment?.timeout_ms) on.push(`gateway timeout ${r.payment.timeout_ms} ms`);
  if (r.payment?.retries) on.push(`gateway retries ${r.payment.retries}${r.payment.retry_budget_percent ? ` (budget ${r.payment.retry_budget_percent} %)` : ''}`);
  if (r.payment?.breaker_failures) on.push('gateway breaker');
  if (r.email?.timeout_ms) on.push(`mail timeout ${r.email.timeout_ms} ms`);
  if (r.email?.retries) on.push(`mail retries ${r.email.retries}`);
  if (r.email?.breaker_failures) on.push('mail breaker');
  if (r.email?.fallback) on.push('mail fallback');
  byId('resilience-status').textContent = on.length ? `On: ${on.join(', ')}.` : 'Every rung is off: the blocking checkout as designed.';
  form.classList.toggle('faulty', on.length > 0);
}

async function applyRungs(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const body = { payment: {}, email: {} };
  for (const path of RUNG_NUMBERS) {
    const [dependency, field] = path.split('.');
    const raw = form.elements[path].value.trim();
    if (raw !== '') body[dependency][field] = Number(raw);
  }
  body.email.fallback = form.elements['email.fallback'].checked;
  await putRungs(body, 'submit Resilience', 'Resilience applied.');
}

async function putRungs(body, name, done) {
  const form = byId('resilience-form');
  const slot = byId('resilience-problem');
  clearProblem(slot, form);
  try {
    const reply = await action(name, {}, (call) => call('PUT', '/api/admin/resilience', { body }));
    fillRungs(reply.data ?? body);
    announce(done);
  } catch (error) {
    showProblem(slot, error, { form });
  }
}

async function loadReconciliation(name, call = null) {
  const slot = byId('recon-problem');
  try {
    const get = (c) => c('GET', '/api/admin/reconciliation');
    const reply = call ? await get(call) : await action(name, {}, get);
    clearProblem(slot);
    renderReconciliation(reply.data);
  } catch (error) {
    showProblem(slot, error);
  }
}

function renderReconciliation(r) {
  const rows = [
    ['Approved charges', r.approved_charges],
    ['… with an order', r.with_order],
    ['… refunded', r.refunded],
    ['… without an order', r.without_order, r.without_order > 0],
    ['Money taken without an order', formatMoney(r.without_order_amount), Number(r.without_order_amount) > 0],
    ['Declined charges', r.declined_charges],
  ];
  byId('recon-figures').replaceChildren(...rows.map(([label, value, bad]) =>
    h('div', { class: ['recon-row', bad && 'bad'] }, h('dt', { text: label }), h('dd', { text: value ?? '—' }))));

  const orphans = r.charges_without_order ?? [];
  byId('recon-orphans').replaceChildren(orphans.length
    ? h('details', { class: 'orphans' },
      h('summary', { text: `${orphans.length} charge${orphans.length === 1 ? '' : 's'} without an order` }),
      h('ul', {}, orphans.map((c) => h('li', { class: 'mono small-text', text: describe(c) }))))
    : '');
}

// A charge without an order: the order id it was for (rolled back), the amount, when,
// and the gateway's transaction id. Unknown shapes are shown field by field.
function describe(charge) {
  if (!charge || typeof charge !== 'object') return String(charge);
  if ('amount' in charge && 'transaction_id' in charge) {
    const when = charge.charged_at ? new Date(charge.charged_at).toLocaleTimeString('en-GB') : '';
    const order = charge.order_id ? `order #${charge.order_id} (gone)` : 'no order';
    return [formatMoney(charge.amount), order, when, charge.transaction_id].filter(Boolean).join(' · ');
  }
  return Object.entries(charge).map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' · ');
}
