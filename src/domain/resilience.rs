//! The ladder of cures, as settings: what each dependency's client does when the
//! dependency is slow, hangs, flaps or is down — a timeout, retries (with backoff,
//! jitter and a budget), a circuit breaker, and for the mail server a fallback — per
//! dependency (the payment gateway, the mail server); all off by default, so the
//! blocking checkout stays the "before" picture. `crate::live_settings` keeps them in force on every
//! replica, like the faults.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::faults::{FaultProblem, MAX_DELAY};
use super::map_only::optional_map;
use super::whole_number::optional_whole;

/// The dependencies whose clients apply a policy, as the metrics' `dependency` label
/// names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::VariantArray)]
pub enum Dependency {
    PaymentGateway,
    MailServer,
}

impl Dependency {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PaymentGateway => "payment_gateway",
            Self::MailServer => "mail_server",
        }
    }
}

/// What the client of one dependency does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Policy {
    /// Give up a call after this many milliseconds (the whole call: the dependency's
    /// wait and its conversation); 0: no timeout of ours (the default).
    #[serde(default)]
    #[schema(maximum = 60000, example = 500)]
    pub timeout_ms: u64,
    /// The circuit breaker opens after this many failures in a row (an error, or a
    /// call given up by the timeout); 0: no breaker (the default).
    #[serde(default)]
    #[schema(maximum = 1000, example = 5)]
    pub breaker_failures: u32,
    /// An open breaker refuses every call at once for this long, then lets probes
    /// through (half-open).
    #[serde(default = "default_open_ms")]
    #[schema(minimum = 100, maximum = 60000, example = 5000)]
    pub breaker_open_ms: u64,
    /// Half-open, this many probes must succeed to close the breaker (one failure opens
    /// it again); no more than this many run at once.
    #[serde(default = "default_probes")]
    #[schema(minimum = 1, maximum = 100, example = 1)]
    pub breaker_probes: u32,
    /// Call again this many times after a failure (an error, or a call given up by the
    /// timeout; never a declined card, never a call the breaker refused); 0: no
    /// retries (the default).
    #[serde(default)]
    #[schema(maximum = 10, example = 3)]
    pub retries: u32,
    /// The first retry waits this long plus a random share of it (jitter, so that
    /// callers do not retry in step), each next one twice as long.
    #[serde(default = "default_backoff_ms")]
    #[schema(minimum = 1, maximum = 60000, example = 100)]
    pub retry_backoff_ms: u64,
    /// Retries may add at most this share of the calls, in percent (a token bucket:
    /// each first call earns a share of a retry, each retry spends one; at most ten
    /// kept); 0: no budget, every failure may be retried (a retry storm's recipe).
    #[serde(default)]
    #[schema(maximum = 100, example = 10)]
    pub retry_budget_percent: u32,
    /// The mail server only: when the confirmation cannot be sent (an error, the
    /// timeout, the breaker), queue it in the outbox and confirm the order anyway.
    #[serde(default)]
    pub fallback: bool,
}

fn default_open_ms() -> u64 {
    Policy::OFF.breaker_open_ms
}

fn default_probes() -> u32 {
    Policy::OFF.breaker_probes
}

fn default_backoff_ms() -> u64 {
    Policy::OFF.retry_backoff_ms
}

impl Default for Policy {
    fn default() -> Self {
        Self::OFF
    }
}

impl Policy {
    pub const OFF: Self = Self {
        timeout_ms: 0,
        breaker_failures: 0,
        breaker_open_ms: 5000,
        breaker_probes: 1,
        retries: 0,
        retry_backoff_ms: 100,
        retry_budget_percent: 0,
        fallback: false,
    };

    /// Whether the breaker is on.
    pub fn has_breaker(self) -> bool {
        self.breaker_failures > 0
    }

    pub fn breaker_open(self) -> Duration {
        Duration::from_millis(self.breaker_open_ms)
    }

    /// The timeout, if there is one.
    pub fn timeout(self) -> Option<Duration> {
        (self.timeout_ms > 0).then(|| Duration::from_millis(self.timeout_ms))
    }
}

/// The resilience of each dependency's client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct ResilienceSettings {
    /// The payment gateway's client (step 6, the charge).
    #[serde(default)]
    pub payment: Policy,
    /// The mail server's client (step 8, the confirmation; the outbox's e-mail jobs).
    #[serde(default)]
    pub email: Policy,
}

/// A change to one dependency's policy; absent fields keep their value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyUpdate {
    /// 0 turns the timeout off.
    #[schema(maximum = 60000)]
    #[serde(default, deserialize_with = "optional_whole")]
    pub timeout_ms: Option<u64>,
    /// 0 turns the breaker off.
    #[schema(maximum = 1000)]
    #[serde(default, deserialize_with = "optional_whole")]
    pub breaker_failures: Option<u64>,
    #[schema(minimum = 100, maximum = 60000)]
    #[serde(default, deserialize_with = "optional_whole")]
    pub breaker_open_ms: Option<u64>,
    #[schema(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "optional_whole")]
    pub breaker_probes: Option<u64>,
    /// 0 turns retries off.
    #[schema(maximum = 10)]
    #[serde(default, deserialize_with = "optional_whole")]
    pub retries: Option<u64>,
    #[schema(minimum = 1, maximum = 60000)]
    #[serde(default, deserialize_with = "optional_whole")]
    pub retry_backoff_ms: Option<u64>,
    /// 0: no budget.
    #[schema(maximum = 100)]
    #[serde(default, deserialize_with = "optional_whole")]
    pub retry_budget_percent: Option<u64>,
    /// The mail server only (the payment gateway has none: `false`).
    pub fallback: Option<bool>,
}

/// A change to some of the resilience settings; absent fields keep their value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResilienceUpdate {
    #[serde(default, deserialize_with = "optional_map")]
    pub payment: Option<PolicyUpdate>,
    #[serde(default, deserialize_with = "optional_map")]
    pub email: Option<PolicyUpdate>,
}

impl ResilienceSettings {
    /// The policy of `dependency`'s client.
    pub fn of(&self, dependency: Dependency) -> Policy {
        match dependency {
            Dependency::PaymentGateway => self.payment,
            Dependency::MailServer => self.email,
        }
    }

    /// Everything off: the checkout as the design card draws it.
    pub const OFF: Self = Self {
        payment: Policy::OFF,
        email: Policy::OFF,
    };

    /// These settings with the fields of `update` that are set.
    pub fn with(mut self, update: &ResilienceUpdate) -> Self {
        for (policy, change) in [
            (&mut self.payment, &update.payment),
            (&mut self.email, &update.email),
        ] {
            let Some(change) = change else { continue };
            if let Some(ms) = change.timeout_ms {
                policy.timeout_ms = ms;
            }
            // Out of u32's range is out of range: the problems say so.
            let narrow = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
            if let Some(failures) = change.breaker_failures {
                policy.breaker_failures = narrow(failures);
            }
            if let Some(ms) = change.breaker_open_ms {
                policy.breaker_open_ms = ms;
            }
            if let Some(probes) = change.breaker_probes {
                policy.breaker_probes = narrow(probes);
            }
            if let Some(retries) = change.retries {
                policy.retries = narrow(retries);
            }
            if let Some(ms) = change.retry_backoff_ms {
                policy.retry_backoff_ms = ms;
            }
            if let Some(percent) = change.retry_budget_percent {
                policy.retry_budget_percent = narrow(percent);
            }
            if let Some(fallback) = change.fallback {
                policy.fallback = fallback;
            }
        }
        self
    }

    /// Every value out of range, named as the admin API names it.
    pub fn problems(&self) -> Vec<FaultProblem> {
        let longest = MAX_DELAY.as_millis() as u64;
        let mut problems = Vec::new();
        if self.payment.fallback {
            problems.push(FaultProblem {
                field: "payment.fallback",
                message: "the payment gateway has none: a charge cannot wait for later in \
                          the blocking checkout (that is the asynchronous checkout)"
                    .into(),
            });
        }
        for (fields, policy) in [(PAYMENT_FIELDS, self.payment), (EMAIL_FIELDS, self.email)] {
            let [timeout, failures, open, probes, retries, backoff, budget] = fields;
            let values = [
                (
                    timeout,
                    policy.timeout_ms,
                    0..=longest,
                    " ms (0 turns it off)",
                ),
                (
                    failures,
                    u64::from(policy.breaker_failures),
                    0..=1000,
                    " (0 turns it off)",
                ),
                (open, policy.breaker_open_ms, 100..=longest, " ms"),
                (probes, u64::from(policy.breaker_probes), 1..=100, ""),
                (
                    retries,
                    u64::from(policy.retries),
                    0..=10,
                    " (0 turns them off)",
                ),
                (backoff, policy.retry_backoff_ms, 1..=longest, " ms"),
                (
                    budget,
                    u64::from(policy.retry_budget_percent),
                    0..=100,
                    " % (0: no budget)",
                ),
            ];
            for (field, value, range, unit) in values {
                if !range.contains(&value) {
                    problems.push(FaultProblem {
                        field,
                        message: format!(
                            "from {} to {}{unit}, got {value}",
                            range.start(),
                            range.end()
                        ),
                    });
                }
            }
        }
        problems
    }
}

/// Each policy's fields, as the admin API and the problems name them.
const PAYMENT_FIELDS: [&str; 7] = [
    "payment.timeout_ms",
    "payment.breaker_failures",
    "payment.breaker_open_ms",
    "payment.breaker_probes",
    "payment.retries",
    "payment.retry_backoff_ms",
    "payment.retry_budget_percent",
];
const EMAIL_FIELDS: [&str; 7] = [
    "email.timeout_ms",
    "email.breaker_failures",
    "email.breaker_open_ms",
    "email.breaker_probes",
    "email.retries",
    "email.retry_backoff_ms",
    "email.retry_budget_percent",
];

impl From<ResilienceSettings> for ResilienceUpdate {
    /// An update that sets every field to these settings (`resilience reset`).
    fn from(settings: ResilienceSettings) -> Self {
        let policy = |p: Policy| {
            Some(PolicyUpdate {
                timeout_ms: Some(p.timeout_ms),
                breaker_failures: Some(u64::from(p.breaker_failures)),
                breaker_open_ms: Some(p.breaker_open_ms),
                breaker_probes: Some(u64::from(p.breaker_probes)),
                retries: Some(u64::from(p.retries)),
                retry_backoff_ms: Some(p.retry_backoff_ms),
                retry_budget_percent: Some(u64::from(p.retry_budget_percent)),
                fallback: Some(p.fallback),
            })
        };
        Self {
            payment: policy(settings.payment),
            email: policy(settings.email),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_is_off_by_default() {
        assert_eq!(ResilienceSettings::default(), ResilienceSettings::OFF);
        assert_eq!(ResilienceSettings::OFF.email.timeout(), None);
        let stored: ResilienceSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(stored, ResilienceSettings::OFF);
    }

    #[test]
    fn an_update_changes_only_what_it_names_and_zero_turns_off() {
        let on = ResilienceSettings::OFF.with(&ResilienceUpdate {
            email: Some(PolicyUpdate {
                timeout_ms: Some(500),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(on.email.timeout(), Some(Duration::from_millis(500)));
        assert_eq!(on.payment, Policy::OFF);
        let off = on.with(&ResilienceUpdate {
            email: Some(PolicyUpdate {
                timeout_ms: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(off, ResilienceSettings::OFF);
    }

    #[test]
    fn every_value_out_of_range_is_named() {
        let problems = ResilienceSettings::OFF
            .with(&ResilienceUpdate {
                payment: Some(PolicyUpdate {
                    timeout_ms: Some(60_001),
                    breaker_open_ms: Some(50),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .problems();
        let fields: Vec<&str> = problems.iter().map(|p| p.field).collect();
        assert_eq!(fields, ["payment.timeout_ms", "payment.breaker_open_ms"]);
    }

    #[test]
    fn only_the_mail_server_has_a_fallback_and_retries_are_bounded() {
        let update: ResilienceUpdate = serde_json::from_value(serde_json::json!({
            "payment": {"fallback": true, "retries": 11},
            "email": {"fallback": true, "retries": 3, "retry_budget_percent": 101}
        }))
        .unwrap();
        let fields: Vec<&str> = ResilienceSettings::OFF
            .with(&update)
            .problems()
            .iter()
            .map(|p| p.field)
            .collect();
        assert_eq!(
            fields,
            [
                "payment.fallback",
                "payment.retries",
                "email.retry_budget_percent"
            ]
        );
    }
}
