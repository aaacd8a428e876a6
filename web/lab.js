// The lab (admins only, when /api/auth/me says role "admin"): switch the checkout mode,
// inject faults (slow gateway, declines, slow or absent mail server), and reconcile the
// gateway's charges with the orders.

import { action } from './api.js';
import { byId, h, show, formatMoney, announce } from './dom.js';
import { clearProblem, showProblem } from './problems.js';
import { state, on, setMode } from './state.js';

const DEFAULT_FAULTS = { payment_delay_ms: 1000, payment_success_rate: 0.95, email_delay_ms: 2000, email_outage: false };

const isAdmin = () => state.user?.role === 'admin';

export function initLab() {
  byId('mode-blocking').addEventListener('click', () => switchMode('blocking'));
  byId('mode-async').addEventListener('click', () => switchMode('async'));
  byId('faults-form').addEventListener('submit', applyFaults);
  byId('faults-reset').addEventListener('click', resetFaults);
  byId('recon-refresh').addEventListener('click', () => loadReconciliation('click Refresh reconciliation'));
  on('session', (user) => {
    const admin = user?.role === 'admin';
    show(byId('lab'), admin);
    show(byId('lab-shortcut'), admin);
    if (admin) loadLab();
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
      const [mode, faults] = await Promise.all([
        call('GET', '/api/admin/checkout-mode'),
        call('GET', '/api/admin/faults'),
      ]);
      setMode(mode.data.mode);
      renderMode();
      fillFaults(faults.data);
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
  form.elements.payment_delay_ms.value = f.payment_delay_ms;
  form.elements.payment_success_rate.value = f.payment_success_rate;
  form.elements.email_delay_ms.value = f.email_delay_ms;
  form.elements.email_outage.checked = !!f.email_outage;
  const differs = Object.entries(DEFAULT_FAULTS).some(([k, v]) => f[k] !== v);
  byId('faults-status').textContent = differs ? 'Faults are on: the shop is not running with its defaults.' : 'The defaults: 1 s gateway, 95 % approved, 2 s mail server.';
  form.classList.toggle('faulty', differs);
}

async function applyFaults(event) {
  event.preventDefault();
  const form = event.currentTarget;
  // Only what the form holds; an emptied field is left out (the PUT is partial).
  const body = {};
  for (const name of ['payment_delay_ms', 'payment_success_rate', 'email_delay_ms']) {
    const raw = form.elements[name].value.trim();
    if (raw !== '') body[name] = Number(raw);
  }
  body.email_outage = form.elements.email_outage.checked;
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
