// The lab's experiments (lab/*.toml, played by `ecommerce-monolith lab run`): the banner
// everyone sees while one runs — its title, the phase, the time left — and the list in
// the Lab panel, each with its question and the command that runs it.
//
// GET /api/lab is read with a plain fetch, not as a traced action: a background poll is
// not something the person did, and its spans would bury theirs.

import { byId, h, show, announce } from './dom.js';
import { emit } from './state.js';

// How often the page asks what runs: more often while an experiment runs.
const POLL_IDLE_MS = 15000;
const POLL_RUNNING_MS = 5000;

let running = null; // {experiment, title, phase, position, phases, ends: ms since epoch}
let timer = null;

export function initExperiments() {
  poll();
  setInterval(tick, 1000);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') poll();
  });
}

async function poll() {
  clearTimeout(timer);
  try {
    const response = await fetch('/api/lab', { headers: { accept: 'application/json' }, cache: 'no-store' });
    if (response.ok) {
      const lab = await response.json();
      update(lab.running);
      renderList(lab.experiments ?? []);
      if (lab.settings) emit('lab-settings', lab.settings);
    }
  } catch {
    // The next poll tries again; the banner keeps counting down meanwhile.
  }
  if (document.visibilityState !== 'hidden') {
    timer = setTimeout(poll, running ? POLL_RUNNING_MS : POLL_IDLE_MS);
  }
}

function update(phase) {
  const before = running;
  running = phase
    ? { ...phase, ends: Date.now() + 1000 * Number(phase.seconds_left ?? 0) }
    : null;
  const changed = (before?.experiment ?? null) !== (running?.experiment ?? null)
    || (before?.phase ?? null) !== (running?.phase ?? null);
  if (changed) {
    announce(running
      ? `Experiment ${running.title}: phase ${running.phase} began.`
      : `Experiment ${before.title} is over.`);
    byId('experiment-list').querySelectorAll('li').forEach((li) =>
      li.classList.toggle('running', li.dataset.name === running?.experiment));
  }
  tick();
}

// The banner's text, its time left counted down here between polls.
function tick() {
  const banner = byId('lab-banner');
  show(banner, !!running);
  if (!running) return;
  const left = Math.max(0, Math.round((running.ends - Date.now()) / 1000));
  const step = running.phases > 1 ? ` (${running.position + 1} of ${running.phases})` : '';
  byId('lab-banner-text').replaceChildren(
    h('strong', { text: running.title }),
    ' — phase ',
    h('em', { text: running.phase }),
    `${step}, ${clock(left)} left`,
  );
}

const clock = (seconds) => `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, '0')}`;

function renderList(experiments) {
  const list = byId('experiment-list');
  if (list.childElementCount === experiments.length) return;
  list.replaceChildren(...experiments.map((e) =>
    h('li', { 'data-name': e.name, class: e.name === running?.experiment && 'running' },
      h('h4', { text: e.title }),
      h('p', { text: e.question }),
      h('code', { text: e.command }))));
}
