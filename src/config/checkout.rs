//! The checkout's parts: the mail server, the live settings put in force at start, and
//! the asynchronous checkout's workers.

use std::time::Duration;

use super::reader::Reader;
use crate::domain::{CheckoutMode, FaultSettings, FaultsUpdate};

#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub from: String,
    /// Upper bound for one SMTP conversation, so a stuck server cannot hold a
    /// checkout's transaction and row locks forever.
    pub timeout: Duration,
}

/// The live settings (fault injection, checkout mode) named in the environment. Each one
/// set is put in force at start, on every replica (they share the settings through
/// Postgres); each one left unset keeps the shared value (the default on a fresh
/// database), so that a restart does not undo what an admin switched live.
#[derive(Debug, Clone, Default)]
pub struct LiveStart {
    pub faults: FaultsUpdate,
    pub checkout_mode: Option<CheckoutMode>,
}

/// The workers of the asynchronous checkout and their outbox.
#[derive(Debug, Clone, Copy)]
pub struct WorkerSettings {
    /// Jobs running at once in this process: what the gateway and the mail server can
    /// take, not a number of connections (a job holds none while it waits on them).
    pub concurrency: usize,
    /// How long a claimed job is a worker's own without a heartbeat; the heartbeat
    /// renews it every third of it. After a crash, the jobs are taken again this soon.
    pub lease: Duration,
    /// Attempts (failed, or whose lease ran out) before a job is dead-lettered.
    pub max_attempts: u32,
    /// How often the idle dispatcher looks for jobs when no notification woke it.
    pub poll_every: Duration,
    /// Whether the workers run on their own. Always true from the environment; tests
    /// that drive the outbox themselves (`Workers::run_due`) switch it off.
    pub in_background: bool,
}

impl SmtpSettings {
    pub(super) fn read(r: &mut Reader) -> Self {
        let smtp = Self {
            host: r.string("SMTP_HOST", "localhost"),
            port: r.parse("SMTP_PORT", 1025u16, "a port number"),
            from: r.string("MAIL_FROM", "Monolith Shop <shop@example.com>"),
            timeout: r.millis("SMTP_TIMEOUT_MS", 10_000),
        };
        if smtp.from.parse::<lettre::message::Mailbox>().is_err() {
            r.problem(format!(
                "MAIL_FROM: expected a mailbox such as \"Shop <shop@example.com>\", got {:?}",
                smtp.from
            ));
        }
        smtp
    }
}

impl LiveStart {
    pub(super) fn read(r: &mut Reader) -> Self {
        Self {
            faults: read_faults(r),
            checkout_mode: r.optional("CHECKOUT_MODE", "blocking or async"),
        }
    }
}

impl WorkerSettings {
    pub(super) fn read(r: &mut Reader) -> Self {
        let workers = Self {
            concurrency: r.parse("OUTBOX_CONCURRENCY", 2048usize, "a whole number of jobs"),
            lease: Duration::from_secs(r.parse("OUTBOX_LEASE_SECONDS", 10u64, "whole seconds")),
            max_attempts: r.parse("OUTBOX_MAX_ATTEMPTS", 10u32, "a whole number"),
            poll_every: r.millis("OUTBOX_POLL_MS", 1000),
            in_background: true,
        };
        if workers.concurrency == 0 {
            r.problem("OUTBOX_CONCURRENCY: at least 1 (the outbox must drain)".to_string());
        }
        if workers.lease < Duration::from_secs(1) {
            r.problem("OUTBOX_LEASE_SECONDS: at least 1".to_string());
        }
        if workers.max_attempts == 0 {
            r.problem("OUTBOX_MAX_ATTEMPTS: at least 1".to_string());
        }
        workers
    }
}

/// The fault settings named in the environment; each variable is the admin API's field
/// name in capitals, and both are checked by the same rules.
fn read_faults(r: &mut Reader) -> FaultsUpdate {
    let whole_ms = "a whole number of milliseconds";
    let faults = FaultsUpdate {
        payment_delay_ms: r.optional("PAYMENT_DELAY_MS", whole_ms),
        payment_success_rate: r.optional("PAYMENT_SUCCESS_RATE", "a number from 0 to 1"),
        email_delay_ms: r.optional("EMAIL_DELAY_MS", whole_ms),
        email_outage: r.optional_bool("EMAIL_OUTAGE"),
        email_hang: r.optional_bool("EMAIL_HANG"),
        payment_flap_rate: r.optional("PAYMENT_FLAP_RATE", "a number from 0 to 1"),
        payment_capacity: r.optional("PAYMENT_CAPACITY", "a whole number of calls a second"),
    };
    for problem in FaultSettings::DEFAULT.with(&faults).problems() {
        r.problem(format!(
            "{}: {}",
            problem.field.to_ascii_uppercase(),
            problem.message
        ));
    }
    faults
}
