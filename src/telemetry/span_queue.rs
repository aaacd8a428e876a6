//! The span processor of the OTLP/HTTP export: each finished span is written as
//! protobuf at once, on the thread that ended it, and the bytes wait in one queue for a
//! thread of its own to send them — in batches, every `OTEL_BSP_SCHEDULE_DELAY` or as
//! soon as `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` spans are waiting.
//!
//! Why not the SDK's batch processor (still used for gRPC): it moves every span's data
//! through a channel to its thread, which writes and frees it there — the channel, the
//! data moved twice, and memory freed by another thread than the one that took it,
//! which sends the request threads' next allocations down glibc's slower path. On the
//! cheapest request (a catalog read, two spans) that was ~2,400 instructions more per
//! read than writing the spans where they end (BENCHMARKS.md, "Spans written where they
//! end").

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry::{Context, InstrumentationScope};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

use super::finished_span::{Attributes, FinishedSpan};
use super::otlp_http::{EncodedSpans, ExportFailures, OtlpHttpExporter};
use crate::config::SpanBatchSettings;

/// Writes finished spans for [`OtlpHttpExporter`] and sends them from a thread of its own.
#[derive(Debug)]
pub struct EncodingSpanProcessor {
    shared: Arc<Shared>,
    exporting: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    exporter: OtlpHttpExporter,
    failures: ExportFailures,
    batches: SpanBatchSettings,
    queue: Mutex<Queue>,
    /// Wakes the exporting thread: a full batch, a flush, the shutdown.
    wake: Condvar,
    /// Tells those waiting for a flush or the shutdown that an export round ended.
    exported: Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    spans: EncodedSpans,
    /// The last batch's buffer, emptied, for the next one (see `EncodedSpans::clear`).
    spare: Option<EncodedSpans>,
    /// Spans not written because the queue was full, since the last export.
    dropped: usize,
    /// Flushes asked for, and the last one an export round has served.
    flushes_asked: u64,
    flushes_done: u64,
    stopping: bool,
    stopped: bool,
}

impl EncodingSpanProcessor {
    pub fn new(exporter: OtlpHttpExporter, endpoint: &str, batches: SpanBatchSettings) -> Self {
        let shared = Arc::new(Shared {
            exporter,
            failures: ExportFailures::new(endpoint),
            batches,
            queue: Mutex::default(),
            wake: Condvar::new(),
            exported: Condvar::new(),
        });
        let exporting = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("otlp-span-export".to_string())
                .spawn(move || export_until_stopped(&shared))
        };
        // Without its thread the processor still takes spans and drops them when full;
        // a service that cannot start a thread has other troubles to report first.
        let exporting = exporting
            .inspect_err(|e| tracing::warn!(error = %e, "cannot start the span export thread"))
            .ok();
        Self {
            shared,
            exporting: Mutex::new(exporting),
        }
    }
}

impl EncodingSpanProcessor {
    /// The queue itself, for the spans of our own (`super::own_spans`),
    /// which are exported under `scope`.
    pub fn queue(&self, scope: InstrumentationScope) -> SpanQueue {
        SpanQueue {
            shared: Arc::clone(&self.shared),
            scope,
        }
    }
}

/// The span queue, taking spans of our own (`super::own_spans`) beside the SDK's.
#[derive(Debug)]
pub struct SpanQueue {
    shared: Arc<Shared>,
    scope: InstrumentationScope,
}

impl SpanQueue {
    /// Writes `span` into the queue, as a span ended in the SDK would be.
    pub(super) fn write(
        &self,
        span: &FinishedSpan<'_>,
        attributes: impl FnOnce(&mut dyn Attributes),
    ) {
        self.shared
            .enqueue(|exporter, spans| exporter.encode_own(spans, &self.scope, span, attributes));
    }
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // A panic while the lock was held leaves a queue of whole spans: still usable.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes one span with `write`, unless the queue is stopping or full (then it is
    /// counted as dropped), and wakes the exporting thread when a batch is full.
    fn enqueue(&self, write: impl FnOnce(&OtlpHttpExporter, &mut EncodedSpans)) {
        let mut queue = self.queue();
        if queue.stopping {
            return;
        }
        if queue.spans.len() >= self.batches.max_queue {
            queue.dropped += 1;
            return;
        }
        write(&self.exporter, &mut queue.spans);
        if queue.spans.len() == self.batches.max_batch {
            self.wake.notify_one();
        }
    }
}

/// Waits on `condvar` until `done` or `deadline`; false if the deadline came first.
fn wait_until<'a>(
    mut queue: MutexGuard<'a, Queue>,
    condvar: &Condvar,
    deadline: Instant,
    done: impl Fn(&Queue) -> bool,
) -> (MutexGuard<'a, Queue>, bool) {
    while !done(&queue) {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return (queue, false);
        };
        queue = condvar
            .wait_timeout(queue, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    (queue, true)
}

fn export_until_stopped(shared: &Shared) {
    let batch = shared.batches.max_batch;
    loop {
        let queue = shared.queue();
        let due = Instant::now() + shared.batches.delay;
        let (mut queue, _) = wait_until(queue, &shared.wake, due, |queue| {
            queue.stopping || queue.flushes_asked > queue.flushes_done || queue.spans.len() >= batch
        });
        let next = queue.spare.take().unwrap_or_default();
        let mut spans = std::mem::replace(&mut queue.spans, next);
        let dropped = std::mem::take(&mut queue.dropped);
        let (flushes, stopping) = (queue.flushes_asked, queue.stopping);
        drop(queue);

        if dropped > 0 {
            tracing::warn!(
                dropped_spans = dropped,
                "the span queue was full (OTEL_BSP_MAX_QUEUE_SIZE); spans were dropped"
            );
        }
        if !spans.is_empty() {
            let result = shared.exporter.export_encoded(&mut spans);
            shared.failures.after_export(&result, spans.len());
        }

        spans.clear();
        let mut queue = shared.queue();
        queue.spare = Some(spans);
        queue.flushes_done = flushes;
        queue.stopped = stopping;
        shared.exported.notify_all();
        if stopping {
            return;
        }
    }
}

impl SpanProcessor for EncodingSpanProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        // Only sampled spans are exported (a sampler may record without sampling).
        if !span.span_context.is_sampled() {
            return;
        }
        self.shared
            .enqueue(|exporter, spans| exporter.encode(spans, &span));
        // `span` is freed here, by the thread that made it.
    }

    fn force_flush(&self) -> OTelSdkResult {
        let shared = &self.shared;
        let mut queue = shared.queue();
        if queue.stopped {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        queue.flushes_asked += 1;
        let ticket = queue.flushes_asked;
        shared.wake.notify_one();
        // An export gives up after its timeout; a second one may be under way first.
        let deadline = Instant::now() + 2 * shared.exporter.timeout() + Duration::from_secs(1);
        let (queue, flushed) = wait_until(queue, &shared.exported, deadline, |queue| {
            queue.flushes_done >= ticket || queue.stopped
        });
        drop(queue);
        if flushed {
            Ok(())
        } else {
            Err(OTelSdkError::Timeout(
                deadline.saturating_duration_since(Instant::now()),
            ))
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let shared = &self.shared;
        let mut queue = shared.queue();
        if queue.stopping {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        queue.stopping = true;
        shared.wake.notify_one();
        let running = self
            .exporting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(running) = running else {
            return Ok(());
        };
        let (queue, stopped) =
            wait_until(queue, &shared.exported, Instant::now() + timeout, |queue| {
                queue.stopped
            });
        drop(queue);
        if !stopped {
            return Err(OTelSdkError::Timeout(timeout));
        }
        running
            .join()
            .map_err(|_| OTelSdkError::InternalFailure("the span export thread panicked".into()))
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.shared.exporter.use_resource(resource);
    }
}
