//! The ladder of cures, as settings: what each dependency's client does when the
//! dependency is slow or hangs. One rung so far — a timeout — per dependency (the
//! payment gateway, the mail server); all off by default, so the blocking checkout
//! stays the "before" picture. `crate::live_settings` keeps them in force on every
//! replica, like the faults.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::faults::{FaultProblem, MAX_DELAY};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct Policy {
    /// Give up a call after this many milliseconds (the whole call: the dependency's
    /// wait and its conversation); 0: no timeout of ours (the default).
    #[serde(default)]
    #[schema(maximum = 60000, example = 500)]
    pub timeout_ms: u64,
}

impl Policy {
    pub const OFF: Self = Self { timeout_ms: 0 };

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
}

/// A change to some of the resilience settings; absent fields keep their value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResilienceUpdate {
    #[serde(default)]
    pub payment: Option<PolicyUpdate>,
    #[serde(default)]
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
            if let Some(ms) = change.as_ref().and_then(|c| c.timeout_ms) {
                policy.timeout_ms = ms;
            }
        }
        self
    }

    /// Every value out of range, named as the admin API names it.
    pub fn problems(&self) -> Vec<FaultProblem> {
        [
            ("payment.timeout_ms", self.payment),
            ("email.timeout_ms", self.email),
        ]
        .into_iter()
        .filter(|(_, policy)| policy.timeout_ms > MAX_DELAY.as_millis() as u64)
        .map(|(field, policy)| FaultProblem {
            field,
            message: format!(
                "at most {} ms (0 turns it off), got {} ms",
                MAX_DELAY.as_millis(),
                policy.timeout_ms
            ),
        })
        .collect()
    }
}

impl From<ResilienceSettings> for ResilienceUpdate {
    /// An update that sets every field to these settings (`resilience reset`).
    fn from(settings: ResilienceSettings) -> Self {
        let policy = |p: Policy| {
            Some(PolicyUpdate {
                timeout_ms: Some(p.timeout_ms),
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
            }),
            ..Default::default()
        });
        assert_eq!(on.email.timeout(), Some(Duration::from_millis(500)));
        assert_eq!(on.payment, Policy::OFF);
        let off = on.with(&ResilienceUpdate {
            email: Some(PolicyUpdate {
                timeout_ms: Some(0),
            }),
            ..Default::default()
        });
        assert_eq!(off, ResilienceSettings::OFF);
    }

    #[test]
    fn a_timeout_beyond_a_minute_is_named() {
        let problems = ResilienceSettings::OFF
            .with(&ResilienceUpdate {
                payment: Some(PolicyUpdate {
                    timeout_ms: Some(60_001),
                }),
                ..Default::default()
            })
            .problems();
        let fields: Vec<&str> = problems.iter().map(|p| p.field).collect();
        assert_eq!(fields, ["payment.timeout_ms"]);
    }
}
