// Browser spans, W3C trace context, and an OTLP/HTTP JSON exporter — no library.
//
// A user action (a click, a submitted form) is a root span; every fetch made for it is a
// child span, and the request's `traceparent` header names that fetch span, so the
// server's span hangs under it and one trace starts at the click. When the server
// configures an endpoint (`browser_traces_url`), finished spans are sent there in small
// batches; without one nothing is exported, but traceparent is still sent.

export const SpanKind = { INTERNAL: 1, CLIENT: 3 };
const StatusCode = { UNSET: 0, OK: 1, ERROR: 2 };

function randomHex(bytes) {
  let id;
  do {
    id = Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) =>
      b.toString(16).padStart(2, '0')).join('');
  } while (/^0+$/.test(id)); // all-zero ids are invalid in W3C trace context
  return id;
}

// Epoch nanoseconds as a BigInt: a double cannot hold them exactly, so whole
// milliseconds and the fraction are combined separately.
function nowNanos() {
  const ms = performance.timeOrigin + performance.now();
  const whole = Math.floor(ms);
  return BigInt(whole) * 1000000n + BigInt(Math.round((ms - whole) * 1e6));
}

class Span {
  constructor(name, { parent = null, kind = SpanKind.INTERNAL, attributes = {} } = {}) {
    this.name = name;
    this.kind = kind;
    this.traceId = parent ? parent.traceId : randomHex(16);
    this.spanId = randomHex(8);
    this.parentSpanId = parent ? parent.spanId : '';
    this.attributes = { ...attributes };
    this.status = { code: StatusCode.UNSET };
    this.start = nowNanos();
    this.end_ = null;
  }

  /** The W3C header naming this span as the parent of whatever receives it. */
  traceparent() {
    return `00-${this.traceId}-${this.spanId}-01`;
  }

  set(key, value) {
    if (value !== undefined && value !== null) this.attributes[key] = value;
    return this;
  }

  fail(message) {
    this.status = { code: StatusCode.ERROR, message: String(message ?? '') };
    return this;
  }

  end() {
    if (this.end_ !== null) return;
    this.end_ = nowNanos();
    exporter.add(this);
  }
}

export const startSpan = (name, options) => new Span(name, options);

// ---------------------------------------------------------------------------------
// Export: OTLP/HTTP with the JSON encoding, batched, failures swallowed.

const BATCH = 32;
const exporter = {
  // undefined until the page has read its config: spans wait (the page load's own
  // spans end before anyone knows where to send them); null: export nothing.
  url: undefined,
  queue: [],
  timer: null,
  failures: 0,
  pausedUntil: 0,
  listeners: new Set(),

  add(span) {
    if (this.url === null || Date.now() < this.pausedUntil) return;
    this.queue.push(span);
    if (this.url === undefined) {
      this.queue = this.queue.slice(-100);
      return;
    }
    clearTimeout(this.timer);
    // Flush a second after the last span (a click's spans go out together), or at once
    // when a batch is full.
    if (this.queue.length >= BATCH) this.flush();
    else this.timer = setTimeout(() => this.flush(), 1000);
  },

  flush() {
    clearTimeout(this.timer);
    while (this.url && this.queue.length && Date.now() >= this.pausedUntil) {
      const batch = this.queue.splice(0, BATCH);
      const body = JSON.stringify(otlpBody(batch));
      fetch(this.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
        // keepalive lets the last batch leave while the page unloads (64 KB limit).
        keepalive: body.length < 60000,
        credentials: 'omit',
      })
        .then((response) => this.result(response.ok))
        .catch(() => this.result(false));
    }
  },

  // A missing collector must not fill the console: the browser itself logs every
  // failed request (a catch cannot hide that), so after a failure the page pauses
  // exporting — a minute, then two, four… — and drops the spans meanwhile.
  result(ok) {
    this.failures = ok ? 0 : this.failures + 1;
    if (!ok) {
      this.pausedUntil = Date.now() + 60000 * 2 ** Math.min(this.failures - 1, 6);
      this.queue = [];
    }
    this.listeners.forEach((fn) => fn(exportStatus()));
  },
};

/** Where to export, or null for nowhere (then spans are dropped when they end). */
export function configureExport(url) {
  exporter.url = url || null;
  exporter.failures = 0;
  exporter.pausedUntil = 0;
  if (exporter.url) exporter.flush();
  else exporter.queue = [];
  exporter.listeners.forEach((fn) => fn(exportStatus()));
}

/** 'off' (not configured), 'on', or 'paused' (the endpoint failed; retried later). */
export function exportStatus() {
  if (!exporter.url) return 'off';
  return exporter.failures > 0 ? 'paused' : 'on';
}

export function onExportStatus(fn) {
  exporter.listeners.add(fn);
}


// The page may be closed at any moment: hand the last spans over while it goes.
addEventListener('pagehide', () => exporter.flush());
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'hidden') exporter.flush();
});

function attribute(key, value) {
  if (typeof value === 'number' && Number.isInteger(value)) return { key, value: { intValue: value } };
  if (typeof value === 'number') return { key, value: { doubleValue: value } };
  if (typeof value === 'boolean') return { key, value: { boolValue: value } };
  return { key, value: { stringValue: String(value) } };
}

function otlpBody(spans) {
  return {
    resourceSpans: [{
      resource: {
        attributes: [
          attribute('service.name', 'storefront'),
          attribute('telemetry.sdk.language', 'webjs'),
          attribute('user_agent.original', navigator.userAgent),
        ],
      },
      scopeSpans: [{
        scope: { name: 'storefront', version: '1' },
        spans: spans.map((span) => ({
          traceId: span.traceId,
          spanId: span.spanId,
          ...(span.parentSpanId ? { parentSpanId: span.parentSpanId } : {}),
          name: span.name,
          kind: span.kind,
          startTimeUnixNano: span.start.toString(),
          endTimeUnixNano: span.end_.toString(),
          attributes: Object.entries(span.attributes).map(([k, v]) => attribute(k, v)),
          status: span.status,
        })),
      }],
    }],
  };
}
