// Wiring: reads the shop's config, starts every part of the page, restores a session
// kept in this tab. Each part lives in its own module; they talk through state.js.

import { action, configureApi } from './api.js';
import { byId } from './dom.js';
import { configureExport, exportStatus, onExportStatus } from './tracing.js';
import { state, token, signOut, setMode } from './state.js';
import { showProblem } from './problems.js';
import { initAccount, resumeSession } from './account.js';
import { initCatalog, loadCategories, loadProducts } from './catalog.js';
import { initCart } from './cart.js';
import { initCheckout } from './checkout.js';
import { initHistory } from './history.js';
import { initOrders } from './orders.js';
import { initLab } from './lab.js';
import { initExperiments } from './experiments.js';

configureApi({
  token,
  onUnauthorized: () => signOut('Your session has ended (the shop no longer accepts its token), so you are signed out. Sign in again to carry on.'),
});

initAccount();
initCatalog();
initCart();
initCheckout();
initHistory();
initOrders();
initLab();
initExperiments();
onExportStatus(describeExport);

start();

async function start() {
  try {
    await action('load page', {}, async (call) => {
      const config = await call('GET', '/api/storefront/config');
      applyConfig(config.data);
      await Promise.all([loadCategories(call), loadProducts(null, call)]);
    });
  } catch (error) {
    configureExport(null);
    showProblem(byId('catalog-problem'), error);
  }
  await resumeSession();

  // Back to this tab: an admin (or the CLI) may have switched the mode meanwhile.
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') refreshMode();
  });
}

function applyConfig(config) {
  state.config = config;
  configureExport(config.browser_traces_url);
  setMode(config.checkout_mode);
  // A link for each tool that answered the service lately, and none to one that did not.
  const tools = config.tools ?? {};
  const link = (id, url) => {
    byId(id).parentElement.hidden = !url;
    if (url) byId(id).href = url;
  };
  link('jaeger-about', tools.jaeger);
  link('grafana-about', tools.grafana && `${tools.grafana}/d/checkout-anatomy`);
  link('grafana-compare-about', tools.grafana && `${tools.grafana}/d/blocking-vs-async`);
  link('prometheus-about', tools.prometheus && `${tools.prometheus}/alerts`);
  link('mail-about', tools.mail);
  describeExport(exportStatus());
}

async function refreshMode() {
  try {
    const reply = await action('refresh config', {}, (call) => call('GET', '/api/storefront/config'));
    state.config = { ...state.config, checkout_mode: reply.data.checkout_mode };
    setMode(reply.data.checkout_mode);
  } catch {
    // The next checkout's answer tells the mode anyway.
  }
}

function describeExport(status) {
  const url = state.config?.browser_traces_url;
  byId('export-status').textContent = {
    on: `It also exports its own spans (service “storefront”: the clicks, and the calls they made) over OTLP/HTTP to ${url}.`,
    off: 'Its own spans are not exported (no STOREFRONT_OTLP_TRACES_URL is configured), but the trace ids still start here.',
    paused: `Exporting its own spans to ${url} failed, so the page pauses its export for a while (it still propagates the trace).`,
  }[status];
}
