// Showing what went wrong, next to what went wrong: an RFC 9457 problem's title and
// detail in a box, and a 422's field errors right under the fields they are about.

import { h } from './dom.js';
import { state } from './state.js';

/**
 * Renders `error` (an ApiProblem, or anything with a message) into `slot`.
 * With a form, field errors whose field names an input of the form go under that
 * input (data-testid="field-error", data-field=…); the others stay in the box.
 * extra: more nodes for the box (a retry button, a hint).
 */
export function showProblem(slot, error, { form = null, extra = [], customer = null } = {}) {
  clearProblem(slot, form);
  const problem = error?.problem ?? { title: 'Something went wrong', detail: String(error?.message ?? error) };
  customer ??= customerWords(error);
  const leftover = [];
  let firstField = null;
  for (const fieldError of problem.errors ?? []) {
    const input = form?.elements?.namedItem?.(fieldError.field);
    if (input instanceof HTMLElement) {
      markField(input, fieldError.message);
      firstField ??= input;
    } else {
      leftover.push(fieldError);
    }
  }

  const lines = [];
  for (const p of problem.products ?? []) {
    // insufficient-stock problems list the products concerned
    if (p && typeof p === 'object') {
      lines.push(`${p.product_name ?? `Product #${p.product_id}`}: ${p.requested} wanted, ${p.available} available`);
    }
  }
  for (const f of leftover) lines.push(`${f.field}: ${f.message}`);
  if (error?.retryAfter) lines.push(`The shop asks to try again in ${error.retryAfter} s.`);

  const technical = [
    problem.detail ? h('p', { class: 'problem-detail', 'data-testid': 'problem-detail', text: problem.detail }) : null,
    lines.length && !customer?.lines ? h('ul', { class: 'problem-list' }, lines.map((line) => h('li', { text: line }))) : null,
  ];
  slot.append(customer
    // In the customer's words first — what happened, to the money, what to do now — and
    // the server's own words (the problem, its type, the trace) below, on request.
    ? h('div', { class: 'problem', 'data-testid': 'problem', 'data-type': problem.type ?? '', role: 'alert' },
      h('p', { class: 'problem-title', 'data-testid': 'problem-headline', text: customer.headline }),
      customer.money ? h('p', { 'data-testid': 'problem-money', text: customer.money }) : null,
      h('p', { 'data-testid': 'problem-next', text: customer.next }),
      customer.lines && lines.length ? h('ul', { class: 'problem-list', 'data-testid': 'problem-lines' }, lines.map((line) => h('li', { text: line }))) : null,
      extra,
      h('details', { class: 'problem-technical', 'data-testid': 'problem-technical' },
        h('summary', { text: 'Technical detail' }),
        h('p', { class: 'small-text' }, h('span', { 'data-testid': 'problem-title', text: problem.title ?? 'Error' }), ` — ${problem.type ?? 'no type'}`),
        technical,
        traceLine(error?.traceId ?? problem.trace_id)))
    : h('div', { class: 'problem', 'data-testid': 'problem', role: 'alert' },
      h('p', { class: 'problem-title', 'data-testid': 'problem-title', text: problem.title ?? 'Error' }),
      technical,
      extra,
      traceLine(error?.traceId ?? problem.trace_id),
    ));
  slot.hidden = false;
  firstField?.focus();
}

/**
 * A refusal in the customer's words — a headline and what to do now — by the problem's
 * type; null for a problem the page wrote itself or a shop that did not answer (no
 * type: their title and detail are already meant for the customer). The checkout has
 * its own words, with the money. lines: the problem's own list (products short of
 * stock, fields) goes with the customer's words, not under Technical detail.
 */
export function customerWords(error) {
  const problem = error?.problem;
  const type = String(problem?.type ?? '').split('/').pop();
  const status = error?.status ?? 0;
  const wait = error?.retryAfter ? `in ${error.retryAfter} s` : 'in a moment';
  if (!problem?.type) return null;
  switch (type) {
    case 'insufficient-stock':
      return { headline: 'Not enough in stock', next: 'Lower the quantity or choose another product.', lines: true };
    case 'validation-error':
    case 'bad-request':
      return { headline: 'Please check what you entered', next: 'What is missing or wrong is said next to it.', lines: true };
    case 'unauthorized':
      return { headline: 'Please sign in', next: 'The e-mail and password did not match, or your session ended: sign in again.' };
    case 'forbidden':
      return { headline: 'Your account cannot do this', next: 'It is kept for the shop’s admin.' };
    case 'not-found':
      return { headline: 'We could not find that', next: 'It may have been removed: reload the page and try again.' };
    case 'already-exists':
      return { headline: 'That is already there', next: /account|email/i.test(problem.detail ?? '') ? 'Sign in with that e-mail instead, or register with another.' : 'Nothing more to do: it was saved before.' };
    case 'invalid-transition':
      return { headline: 'This order can no longer be changed', next: 'It has moved on since the page was drawn: refresh My orders to see where it is.' };
    case 'request-in-progress':
      return { headline: 'Your earlier request is still being handled', next: `Wait for it, then try again ${wait}: nothing is done twice.` };
    case 'too-many-requests':
    case 'service-unavailable':
      return { headline: 'The shop is busy just now', next: `Try again ${wait}.` };
    default:
      if (status >= 500) return { headline: 'Something went wrong on the shop’s side', next: 'Try again in a moment; quote the trace below if it keeps happening.' };
      return { headline: sentenceCase(problem.title ?? 'Something went wrong'), next: problem.detail ?? '' };
  }
}

const sentenceCase = (title) => title.charAt(0) + title.slice(1).toLowerCase();

export function clearProblem(slot, form = null) {
  if (slot) {
    slot.replaceChildren();
  }
  if (form) {
    form.querySelectorAll('[data-testid="field-error"]').forEach((el) => el.remove());
    form.querySelectorAll('[aria-invalid="true"]').forEach((el) => {
      el.removeAttribute('aria-invalid');
      el.removeAttribute('aria-describedby');
    });
  }
}

/** A field error under an input, announced with the input (aria-describedby). */
export function markField(input, message) {
  const id = `${input.id || input.name}-error`;
  input.setAttribute('aria-invalid', 'true');
  input.setAttribute('aria-describedby', id);
  const note = h('p', { class: 'field-error', 'data-testid': 'field-error', 'data-field': input.name, id, text: message });
  input.insertAdjacentElement('afterend', note);
}

function traceLine(traceId) {
  if (!traceId) return null;
  const jaeger = state.config?.tools?.jaeger; // only a Jaeger that answered lately
  return h('p', { class: 'problem-trace' },
    'Trace ', h('code', { text: traceId.slice(0, 12) + '…', title: traceId }),
    jaeger ? [' · ', h('a', { href: `${jaeger}/trace/${traceId}`, target: '_blank', rel: 'noopener', text: 'see it in Jaeger' })] : null,
  );
}
