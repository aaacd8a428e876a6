// Every call to the shop's API goes through request(): JSON in and out, the bearer
// token, a `traceparent` naming a fresh client span, RFC 9457 problem details turned
// into ApiProblem errors, and document.body.dataset.busy while anything is in flight.

import { startSpan, SpanKind } from './tracing.js';

let tokenOf = () => null;
let unauthorized = () => {};

/** token(): the bearer token or null; onUnauthorized(): a 401 on a signed-in call. */
export function configureApi({ token, onUnauthorized }) {
  tokenOf = token;
  unauthorized = onUnauthorized;
}

// document.body.dataset.busy is "true" while a request or a user action (which
// includes drawing its answer) is under way; tests wait for "false".
let inFlight = 0;
export function busy(delta) {
  inFlight += delta;
  document.body.dataset.busy = inFlight > 0 ? 'true' : 'false';
}

/** A refusal or failure, carrying the problem details to show next to what failed. */
export class ApiProblem extends Error {
  constructor(problem, { status = 0, traceId = null, retryAfter = null, aborted = false, reply = null } = {}) {
    super(problem.detail || problem.title);
    this.problem = problem; // {type, title, status, detail, errors?, products?, …}
    this.status = status;
    this.traceId = traceId;
    this.retryAfter = retryAfter; // seconds, from Retry-After
    this.aborted = aborted;
    this.reply = reply; // the headers and timing of the failed response, if any
  }
}

/** `/api/orders/12/cancel` → `/api/orders/{id}/cancel`: span names stay few. */
const routeOf = (path) => path.split('?')[0].replace(/\/\d+(?=\/|$)/g, '/{id}');

/**
 * One API call. options: body (JSON), headers, parent (the span of the user action),
 * signal (AbortSignal), auth (send the token; default true).
 * Resolves to {status, data, headers, traceId, location}; rejects with ApiProblem.
 */
export async function request(method, path, { body, headers = {}, parent = null, signal, auth = true } = {}) {
  const span = startSpan(`${method} ${routeOf(path)}`, {
    parent,
    kind: SpanKind.CLIENT,
    attributes: {
      'http.request.method': method,
      'url.full': new URL(path, location.href).href,
      'url.path': path.split('?')[0],
      'http.route': routeOf(path),
    },
  });
  const sent = { accept: 'application/json, application/problem+json', traceparent: span.traceparent(), ...headers };
  const token = auth ? tokenOf() : null;
  if (token) sent.authorization = `Bearer ${token}`;
  if (body !== undefined) sent['content-type'] = 'application/json';

  busy(+1);
  let response;
  let text = '';
  try {
    response = await fetch(path, {
      method,
      headers: sent,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      credentials: 'same-origin',
      cache: 'no-store',
    });
    text = await response.text();
  } catch (error) {
    const aborted = error?.name === 'AbortError';
    span.fail(aborted ? 'aborted by the user' : String(error?.message ?? error)).end();
    throw new ApiProblem(aborted
      ? { title: 'You stopped waiting', detail: 'The page stopped waiting for this answer.' }
      : { title: 'The shop did not answer', detail: 'The request did not reach the shop or its answer was lost (is the server running?).' },
    { traceId: span.traceId, aborted });
  } finally {
    busy(-1);
  }

  const data = parseJson(text, response.headers.get('content-type'));
  const traceId = traceIdOf(response.headers) ?? data?.trace_id ?? span.traceId;
  span.set('http.response.status_code', response.status);
  if (response.status >= 400) span.fail(`HTTP ${response.status}`);
  span.end();

  const reply = {
    status: response.status,
    data,
    headers: response.headers,
    traceId,
    location: response.headers.get('location'),
  };
  if (response.ok) return reply;

  if (response.status === 401 && token) unauthorized();
  const problem = data && typeof data === 'object' && !Array.isArray(data) && data.title
    ? data
    : { title: response.statusText || `HTTP ${response.status}`, detail: text.slice(0, 300) || 'The shop gave no explanation.' };
  throw new ApiProblem(problem, {
    status: response.status,
    traceId,
    retryAfter: retryAfterOf(response.headers.get('retry-after')),
    reply,
  });
}

/**
 * Runs a user action as a root span: `call` makes requests that are its children.
 *   await action('click Checkout', {…attributes}, async (call, span) => { … })
 */
export async function action(name, attributes, fn) {
  const root = startSpan(name, { kind: SpanKind.INTERNAL, attributes });
  const call = (method, path, options = {}) => request(method, path, { ...options, parent: options.parent ?? root });
  busy(+1);
  try {
    return await fn(call, root);
  } catch (error) {
    root.fail(error?.message ?? error);
    throw error;
  } finally {
    root.end();
    busy(-1);
  }
}

function parseJson(text, contentType) {
  if (!text || !/json/i.test(contentType ?? '')) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** The server's trace id: `traceresponse` (W3C), else `X-Trace-Id`. */
function traceIdOf(headers) {
  const tr = headers.get('traceresponse');
  const m = tr && /^[\da-f]{2}-([\da-f]{32})-[\da-f]{16}-[\da-f]{2}$/i.exec(tr.trim());
  if (m) return m[1].toLowerCase();
  const x = headers.get('x-trace-id');
  return x && /^[\da-f]{32}$/i.test(x.trim()) ? x.trim().toLowerCase() : null;
}

function retryAfterOf(value) {
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}
