//! The workers of the asynchronous checkout, in the same binary: one dispatcher per
//! replica claims due jobs from the outbox (`crate::outbox`) in batches and runs each in
//! a task of its own (`super::jobs` says what each job does).
//!
//! How many jobs run at once is bounded by what the gateway and the mail server can
//! take (`OUTBOX_CONCURRENCY`, a semaphore), not by the connection pool: a job holds a
//! connection only to claim and to finish, never while it waits on the gateway (1 s) or
//! the mail server (2 s). A task waiting on a socket costs kilobytes.
//!
//! Leases: every running job's lease is renewed by one heartbeat per replica (one
//! statement for all of them), so a job is taken again only when its worker is gone —
//! within `OUTBOX_LEASE_SECONDS` of a crash. A job whose lease another worker took stops.
//! A job that fails because the database went away is handed back the moment it answers
//! again. After `OUTBOX_MAX_ATTEMPTS` (failed or expired alike) a job is dead-lettered,
//! counted and alerted on; `outbox replay` puts dead letters back.
//!
//! Each job's spans continue the trace of the request that enqueued it (the stored
//! `traceparent` is their parent, and a span link), so one trace shows the 202 and the
//! work seconds later.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use strum::{IntoStaticStr, VariantArray};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::jobs::{JobError, Jobs};
use super::outcomes::count_checkout;
use crate::config::WorkerSettings;
use crate::db::Database;
use crate::domain::{CheckoutMode, CheckoutOutcome, JobKind};
use crate::mailer::Mailer;
use crate::outbox::{self, Finished, Job};
use crate::payment::PaymentGateway;
use crate::telemetry::metrics::{
    OUTBOX_ATTEMPTS, OUTBOX_CONCURRENCY_LIMIT, OUTBOX_DEAD, OUTBOX_IN_FLIGHT, OUTBOX_JOB_DURATION,
    OUTBOX_OLDEST_AGE, OUTBOX_PENDING, OUTBOX_PROCESSED, OUTBOX_REPLAYED,
};

/// The most jobs one claim takes (one statement, one connection for a moment).
const CLAIM_AT_MOST: usize = 64;
/// The least time from one claim to the next while jobs keep coming. Each claim is a
/// round trip and a commit; woken by every enqueued job, the dispatcher claimed them one
/// at a time (two claims per order). Gathered for this long, a claim takes all the jobs
/// that fell due meanwhile (at 200 orders/s, about four), for at most this much more
/// wait on a job that already waits a second on the gateway. A claim after a quiet
/// spell is not held back.
const CLAIM_GATHER: Duration = Duration::from_millis(10);
/// How often the queue's gauges are read.
const DEPTH_EVERY: Duration = Duration::from_secs(2);

/// How one attempt at a job ended: `outbox_jobs_processed_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub(super) enum JobOutcome {
    Done,
    /// Nothing left to do when it ran: the confirmation of an order cancelled meanwhile.
    Skipped,
    Retried,
    DeadLettered,
    /// Another worker holds the job now: this attempt's result was refused, or the
    /// attempt stopped when its lease could not be renewed.
    LeaseLost,
}

impl JobOutcome {
    fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The job counters exist from the start, at zero (see `checkout::start_metrics_at_zero`).
pub(super) fn start_metrics_at_zero() {
    for kind in JobKind::VARIANTS {
        counter!(OUTBOX_ATTEMPTS, "kind" => kind.as_str()).absolute(0);
        counter!(OUTBOX_REPLAYED, "kind" => kind.as_str()).absolute(0);
        gauge!(OUTBOX_IN_FLIGHT, "kind" => kind.as_str()).set(0.0);
        for outcome in JobOutcome::VARIANTS {
            counter!(OUTBOX_PROCESSED, "kind" => kind.as_str(), "outcome" => outcome.as_str())
                .absolute(0);
        }
    }
}

/// A running job, for the heartbeat: its lease token, and how to stop it.
struct Held {
    kind: JobKind,
    lease_token: uuid::Uuid,
    lost: CancellationToken,
}

/// The outbox's workers of this replica; cheap to clone.
#[derive(Clone)]
pub struct Workers {
    shared: Arc<Shared>,
}

struct Shared {
    db: Database,
    /// What each job does.
    jobs: Jobs,
    settings: WorkerSettings,
    /// Told when a job was enqueued (LISTEN/NOTIFY) or a slot fell free; the poll covers
    /// what notifications miss.
    wake: Arc<Notify>,
    /// One permit per job that may run at once.
    slots: Arc<Semaphore>,
    /// The jobs running now, by id.
    held: Mutex<HashMap<i64, Held>>,
    /// SIGTERM: take no new job.
    draining: CancellationToken,
    /// The shutdown deadline: drop the jobs in hand; their leases run out, and another
    /// worker (after a restart, this one) finishes them.
    stopping: CancellationToken,
}

impl Workers {
    pub fn new(
        db: Database,
        gateway: Arc<dyn PaymentGateway>,
        mailer: Mailer,
        settings: WorkerSettings,
        draining: CancellationToken,
        stopping: CancellationToken,
    ) -> Self {
        gauge!(OUTBOX_CONCURRENCY_LIMIT).set(settings.concurrency as f64);
        Self {
            shared: Arc::new(Shared {
                jobs: Jobs::new(db.clone(), gateway, mailer, stopping.clone()),
                db,
                slots: Arc::new(Semaphore::new(settings.concurrency)),
                settings,
                wake: Arc::new(Notify::new()),
                held: Mutex::default(),
                draining,
                stopping,
            }),
        }
    }

    /// Wakes the dispatcher (a job was enqueued).
    pub fn waker(&self) -> Arc<Notify> {
        self.shared.wake.clone()
    }

    /// Starts the dispatcher on `tracker`, and the heartbeat, the poll and the queue's
    /// gauges beside it.
    pub fn spawn(&self, tracker: &TaskTracker) {
        tracker.spawn(self.clone().dispatch(tracker.clone()));
        tokio::spawn(self.clone().heartbeat());
        tokio::spawn(poll(
            self.shared.wake.clone(),
            self.shared.settings.poll_every,
        ));
        tokio::spawn(export_depth(self.shared.db.clone()));
    }

    /// Runs every job that is due now, and those they enqueue, to the end; returns how
    /// many attempts it made. For tests, which then need no background workers and no
    /// waiting (zero2prod's `try_execute_task`).
    pub async fn run_due(&self) -> anyhow::Result<usize> {
        let mut attempts = 0;
        loop {
            let jobs = self.claim(CLAIM_AT_MOST).await?;
            if jobs.is_empty() {
                return Ok(attempts);
            }
            attempts += jobs.len();
            let mut running = tokio::task::JoinSet::new();
            for job in jobs {
                let workers = self.clone();
                running.spawn(async move { workers.attempt(job).await });
            }
            while running.join_next().await.is_some() {}
        }
    }

    async fn claim(&self, at_most: usize) -> sqlx::Result<Vec<Job>> {
        let settings = &self.shared.settings;
        outbox::claim(
            &self.shared.db,
            at_most,
            settings.lease,
            settings.max_attempts,
        )
        .await
    }

    /// Claims as many due jobs as there are free slots (up to a batch), starts each in a
    /// task of its own, and sleeps until woken when nothing more is due; claims are
    /// [`CLAIM_GATHER`] apart at least.
    async fn dispatch(self, tracker: TaskTracker) {
        let mut last_claim: Option<tokio::time::Instant> = None;
        loop {
            let first = tokio::select! {
                permit = self.shared.slots.clone().acquire_owned() => permit,
                () = self.shared.draining.cancelled() => return,
            };
            let Ok(first) = first else { return };
            if let Some(at) = last_claim {
                tokio::select! {
                    () = tokio::time::sleep_until(at + CLAIM_GATHER) => {}
                    () = self.shared.draining.cancelled() => return,
                }
            }
            last_claim = Some(tokio::time::Instant::now());
            let mut slots = vec![first];
            while slots.len() < CLAIM_AT_MOST {
                match self.shared.slots.clone().try_acquire_owned() {
                    Ok(slot) => slots.push(slot),
                    Err(_) => break,
                }
            }
            let wanted = slots.len();
            match self.claim(wanted).await {
                Ok(jobs) => {
                    let claimed = jobs.len();
                    for (job, slot) in jobs.into_iter().zip(slots.drain(..)) {
                        tracker.spawn(self.clone().run_held(job, slot));
                    }
                    if claimed == wanted {
                        // There may be more due: claim again, after the gap.
                        continue;
                    }
                }
                Err(error) => tracing::debug!(%error, "cannot claim outbox jobs"),
            }
            drop(slots);
            tokio::select! {
                () = self.shared.wake.notified() => {}
                () = self.shared.draining.cancelled() => return,
            }
        }
    }

    /// One attempt at a claimed job, registered for the heartbeat while it runs.
    async fn run_held(self, job: Job, slot: OwnedSemaphorePermit) {
        let lost = self.shared.stopping.child_token();
        let (id, kind) = (job.id, job.kind);
        self.held_jobs().insert(
            id,
            Held {
                kind,
                lease_token: job.lease_token,
                lost: lost.clone(),
            },
        );
        let in_flight = gauge!(OUTBOX_IN_FLIGHT, "kind" => kind.as_str());
        in_flight.increment(1.0);
        tokio::select! {
            () = self.attempt(job) => {}
            () = lost.cancelled() => {
                if !self.shared.stopping.is_cancelled() {
                    counter!(OUTBOX_PROCESSED, "kind" => kind.as_str(),
                        "outcome" => JobOutcome::LeaseLost.as_str()).increment(1);
                }
            }
        }
        in_flight.decrement(1.0);
        self.held_jobs().remove(&id);
        drop(slot);
    }

    fn held_jobs(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Held>> {
        self.shared.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One attempt at `job`, in a span that continues the trace that enqueued it.
    async fn attempt(&self, job: Job) {
        let kind = job.kind.as_str();
        let span = tracing::info_span!(
            "outbox.job",
            otel.name = %format!("outbox.{kind}"),
            otel.kind = "consumer",
            messaging.system = "postgresql",
            messaging.destination.name = outbox::CHANNEL,
            messaging.operation.type = "process",
            job.id = job.id,
            job.kind = kind,
            job.attempt = job.attempts,
            order.id = job.order_id,
        );
        if let Some(enqueued_by) = job.traceparent.as_deref().map(parent_context) {
            let link = enqueued_by.span().span_context().clone();
            if link.is_valid() {
                let _ = span.set_parent(enqueued_by);
                span.add_link(link);
            }
        }
        let started = Instant::now();
        counter!(OUTBOX_ATTEMPTS, "kind" => kind).increment(1);
        let result = self
            .shared
            .jobs
            .perform(&job)
            .instrument(span.clone())
            .await;
        let outcome = match result {
            Ok(Finished::Done) => JobOutcome::Done,
            Ok(Finished::Skipped) => JobOutcome::Skipped,
            Err(JobError::LeaseLost) => JobOutcome::LeaseLost,
            // Whatever failed, while the database is away the job cannot be given back.
            Err(JobError::Retry(error)) if self.shared.db.is_reachable() => {
                span.set_status(Status::error(error.clone()));
                self.give_back(&job, &error).instrument(span).await
            }
            Err(JobError::Retry(error) | JobError::DatabaseAway(error)) => {
                span.set_status(Status::error(error.clone()));
                self.give_back_when_reachable(&job, &error)
                    .instrument(span)
                    .await
            }
        }
        .as_str();
        counter!(OUTBOX_PROCESSED, "kind" => kind, "outcome" => outcome).increment(1);
        histogram!(OUTBOX_JOB_DURATION, "kind" => kind, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
    }

    /// A failed attempt: try again after a backoff, or give up after the last one.
    async fn give_back(&self, job: &Job, error: &str) -> JobOutcome {
        let last =
            u32::try_from(job.attempts).unwrap_or(u32::MAX) >= self.shared.settings.max_attempts;
        if !last {
            let delay = outbox::backoff(job.attempts);
            tracing::warn!(delay_ms = delay.as_millis() as u64, %error, "outbox job failed; retrying");
            if let Err(db) = outbox::retry_later(&self.shared.db, job, error, delay).await {
                tracing::warn!(error = %db, "could not reschedule; the lease will run out");
            }
            return JobOutcome::Retried;
        }
        tracing::error!(
            order.id = job.order_id,
            job.kind = job.kind.as_str(),
            attempts = job.attempts,
            %error,
            "outbox job dead-lettered: it needs a person (the order itself is unchanged); \
             `ecommerce-monolith outbox replay` runs it again"
        );
        if let Err(db) = outbox::dead_letter(&self.shared.db, job, error).await {
            tracing::warn!(error = %db, "could not dead-letter; the lease will run out");
        }
        dead_lettered(job.kind);
        JobOutcome::DeadLettered
    }

    /// The database went away in the middle of the attempt: wait until it answers (the
    /// heartbeat keeps renewing nothing meanwhile), then hand the job back, due at once —
    /// it runs again seconds after the outage, not a lease later.
    async fn give_back_when_reachable(&self, job: &Job, error: &str) -> JobOutcome {
        tracing::warn!(%error, "outbox job interrupted by the database; retrying when it answers");
        tokio::select! {
            () = self.shared.db.until_reachable() => {}
            () = self.shared.stopping.cancelled() => return JobOutcome::Retried,
        }
        if u32::try_from(job.attempts).unwrap_or(u32::MAX) >= self.shared.settings.max_attempts {
            return self.give_back(job, error).await;
        }
        if let Err(db) = outbox::retry_later(&self.shared.db, job, error, Duration::ZERO).await {
            tracing::warn!(error = %db, "could not reschedule; the lease will run out");
        }
        self.shared.wake.notify_one();
        JobOutcome::Retried
    }

    /// Every third of a lease: renews the leases of the running jobs (one statement for
    /// all of them), stops those another worker has taken, and dead-letters the jobs
    /// whose last attempt's lease ran out. Also right after the database answers again.
    async fn heartbeat(self) {
        let every = (self.shared.settings.lease / 3).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_reachable = true;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.shared.db.until_reachable(), if !was_reachable => {}
            }
            was_reachable = self.shared.db.is_reachable();
            if !was_reachable {
                continue;
            }
            self.renew_leases().await;
            match outbox::dead_letter_exhausted(&self.shared.db, self.shared.settings.max_attempts)
                .await
            {
                Ok(exhausted) => {
                    for job in exhausted {
                        tracing::error!(
                            order.id = job.order_id,
                            job.kind = job.kind.as_str(),
                            attempts = job.attempts,
                            "outbox job dead-lettered: its last attempt's lease ran out \
                             (the worker died or lost the database); \
                             `ecommerce-monolith outbox replay` runs it again"
                        );
                        dead_lettered(job.kind);
                    }
                }
                Err(error) => tracing::debug!(%error, "cannot sweep exhausted outbox jobs"),
            }
        }
    }

    async fn renew_leases(&self) {
        let held: Vec<(i64, uuid::Uuid)> = self
            .held_jobs()
            .iter()
            .map(|(id, held)| (*id, held.lease_token))
            .collect();
        if held.is_empty() {
            return;
        }
        // A failure (the database away) renews nothing and stops nothing: the jobs
        // cannot finish either, and their leases are renewed when it answers again.
        let Ok(taken) = outbox::renew(&self.shared.db, &held, self.shared.settings.lease).await
        else {
            return;
        };
        // Only the attempts this renewal was about: jobs started while it was on its
        // way to the database are not in `held`, and they are not anyone else's.
        let running = self.held_jobs();
        for (id, token) in held.iter().filter(|(id, _)| taken.contains(id)) {
            if let Some(attempt) = running.get(id).filter(|a| a.lease_token == *token) {
                tracing::warn!(
                    job.id = id,
                    job.kind = attempt.kind.as_str(),
                    "outbox job stopped: another worker holds its lease now"
                );
                attempt.lost.cancel();
            }
        }
    }
}

/// Puts the dead-lettered jobs (all, or those of one kind) back in the queue, due now
/// with their attempts reset; logs and counts them. Returns how many of each kind.
pub async fn replay_dead_letters(
    db: &Database,
    kind: Option<JobKind>,
) -> sqlx::Result<Vec<(JobKind, i64)>> {
    let replayed = outbox::replay_dead(db, kind).await?;
    for (kind, count) in &replayed {
        counter!(OUTBOX_REPLAYED, "kind" => kind.as_str())
            .increment(u64::try_from(*count).unwrap_or(0));
        tracing::warn!(
            job.kind = kind.as_str(),
            count,
            "dead-lettered outbox jobs put back in the queue"
        );
    }
    Ok(replayed)
}

/// A job given up for good: its checkout, if it was the charge, ended without a
/// settled payment.
fn dead_lettered(kind: JobKind) {
    if kind == JobKind::ChargeOrder {
        count_checkout(CheckoutMode::Async, CheckoutOutcome::Error);
    }
}

/// Wakes the dispatcher every `every`: one query per interval while all is quiet, for
/// retries that fell due and notifications that were lost.
async fn poll(wake: Arc<Notify>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        wake.notify_one();
    }
}

/// The trace context a job was enqueued in.
fn parent_context(traceparent: &str) -> opentelemetry::Context {
    let carrier =
        std::collections::HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// Keeps the queue's gauges current: depth and age of the oldest job per kind, dead
/// letters.
async fn export_depth(db: Database) {
    let mut tick = tokio::time::interval(DEPTH_EVERY);
    loop {
        tick.tick().await;
        if !db.is_reachable() {
            continue;
        }
        let Ok(depths) = outbox::depth(&db).await else {
            continue;
        };
        for &kind in JobKind::VARIANTS {
            let depth = depths.iter().find(|d| d.kind == kind);
            let label = kind.as_str();
            gauge!(OUTBOX_PENDING, "kind" => label).set(depth.map_or(0.0, |d| d.pending as f64));
            gauge!(OUTBOX_OLDEST_AGE, "kind" => label)
                .set(depth.map_or(0.0, |d| d.oldest_pending_seconds));
            gauge!(OUTBOX_DEAD, "kind" => label).set(depth.map_or(0.0, |d| d.dead as f64));
        }
    }
}
