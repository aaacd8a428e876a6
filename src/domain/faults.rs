//! Fault injection: the slow parts of the checkout can be made slower, or made to fail,
//! while the service runs — like a feature-flag service in a demo. These are the values
//! and their rules; `crate::live_settings` keeps them in force on every replica and
//! exports them as gauges, so a dashboard shows when a fault was switched on.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::whole_number::optional_whole;

/// An injected delay is capped so that a typo cannot park checkouts for hours.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultSettings {
    pub payment_delay: Duration,
    pub payment_success_rate: f64,
    pub email_delay: Duration,
    pub email_outage: bool,
    /// The mail server accepts the connection and never answers: a call waits until
    /// the client gives up (`SMTP_TIMEOUT_MS`, or the resilience timeout).
    pub email_hang: bool,
    /// The gateway flaps: this share of its calls fail (after its delay, nothing
    /// charged), 0 to 1.
    pub payment_flap_rate: f64,
    /// The gateway serves this many calls per second at its delay, that is
    /// `capacity × delay` calls in flight (Little's law; one at least); with more in
    /// flight (`n`) each takes `n / limit` times as long and is turned away with
    /// probability `1 − limit / n` (after the plain delay, nothing charged). Per second,
    /// so that a shorter delay (a quick lab run) overloads it at the same offered rate.
    /// 0: unlimited.
    pub payment_capacity: u32,
}

/// The most calls a second a gateway's capacity may name.
pub const MAX_CAPACITY: u32 = 10_000;

/// A setting that is out of range: the field as the admin API names it (the
/// environment variable is the same name in capitals) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultProblem {
    pub field: &'static str,
    pub message: String,
}

impl FaultSettings {
    /// The design's defaults: a 1 s gateway approving 95 %, a 2 s mail server, no outage.
    pub const DEFAULT: Self = Self {
        payment_delay: Duration::from_millis(1000),
        payment_success_rate: 0.95,
        email_delay: Duration::from_millis(2000),
        email_outage: false,
        email_hang: false,
        payment_flap_rate: 0.0,
        payment_capacity: 0,
    };

    /// Every value out of range, for the start-up configuration and the admin API alike.
    pub fn problems(&self) -> Vec<FaultProblem> {
        let mut problems = Vec::new();
        for (field, rate) in [
            ("payment_success_rate", self.payment_success_rate),
            ("payment_flap_rate", self.payment_flap_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                problems.push(FaultProblem {
                    field,
                    message: format!("must be between 0 and 1, got {rate}"),
                });
            }
        }
        if self.payment_capacity > MAX_CAPACITY {
            problems.push(FaultProblem {
                field: "payment_capacity",
                message: format!(
                    "at most {MAX_CAPACITY} calls a second (0 is unlimited), got {}",
                    self.payment_capacity
                ),
            });
        }
        for (field, delay) in [
            ("payment_delay_ms", self.payment_delay),
            ("email_delay_ms", self.email_delay),
        ] {
            if delay > MAX_DELAY {
                problems.push(FaultProblem {
                    field,
                    message: format!(
                        "at most {} ms, got {} ms",
                        MAX_DELAY.as_millis(),
                        delay.as_millis()
                    ),
                });
            }
        }
        problems
    }

    /// What `in_flight` calls (this one included) do to the gateway: how much slower a
    /// served call is, and the chance that a call is turned away. Within its capacity
    /// (or without one) neither; beyond it, `n / limit` times slower, and turned away
    /// with probability `1 − limit / n` — so its successes per second fall as the calls
    /// in flight grow, which is what makes a retry storm feed itself.
    pub fn gateway_load(&self, in_flight: u32) -> (f64, f64) {
        if self.payment_capacity == 0 {
            return (1.0, 0.0);
        }
        let limit = (f64::from(self.payment_capacity) * self.payment_delay.as_secs_f64()).max(1.0);
        let over = f64::from(in_flight) / limit;
        if over <= 1.0 {
            return (1.0, 0.0);
        }
        (over, 1.0 - 1.0 / over)
    }

    /// These settings with the fields of `update` that are set.
    pub fn with(mut self, update: &FaultsUpdate) -> Self {
        if let Some(ms) = update.payment_delay_ms {
            self.payment_delay = Duration::from_millis(ms);
        }
        if let Some(rate) = update.payment_success_rate {
            self.payment_success_rate = rate;
        }
        if let Some(ms) = update.email_delay_ms {
            self.email_delay = Duration::from_millis(ms);
        }
        if let Some(outage) = update.email_outage {
            self.email_outage = outage;
        }
        if let Some(hang) = update.email_hang {
            self.email_hang = hang;
        }
        if let Some(rate) = update.payment_flap_rate {
            self.payment_flap_rate = rate;
        }
        if let Some(capacity) = update.payment_capacity {
            // Out of u32's range is out of range: the problems say so.
            self.payment_capacity = u32::try_from(capacity).unwrap_or(u32::MAX);
        }
        self
    }
}

impl Default for FaultSettings {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The fault settings as the admin API shows them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FaultsView {
    /// Simulated payment gateway latency.
    #[schema(example = 1000)]
    pub payment_delay_ms: u64,
    /// Probability that a payment is approved, 0 to 1.
    #[schema(example = 0.95)]
    pub payment_success_rate: f64,
    /// Simulated SMTP server latency before the confirmation is sent.
    #[schema(example = 2000)]
    pub email_delay_ms: u64,
    /// While true, every confirmation e-mail fails (in the blocking checkout, its order
    /// with it).
    pub email_outage: bool,
    /// While true, the mail server accepts every connection and never answers: each
    /// e-mail waits until the client gives up (`SMTP_TIMEOUT_MS`, 10 s by default, or
    /// the mail server's resilience timeout).
    pub email_hang: bool,
    /// Share of payment gateway calls that fail (the gateway flaps), 0 to 1: what
    /// retries rescue.
    #[schema(example = 0.0)]
    pub payment_flap_rate: f64,
    /// Calls per second the gateway serves at its delay; beyond, it slows down and
    /// turns calls away in proportion (overloaded: what retries make worse). 0 is
    /// unlimited.
    #[schema(example = 0)]
    pub payment_capacity: u32,
}

/// A change to some of the settings; absent fields keep their value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultsUpdate {
    #[schema(maximum = 60000)]
    #[serde(default, deserialize_with = "optional_whole")]
    pub payment_delay_ms: Option<u64>,
    #[schema(minimum = 0, maximum = 1)]
    pub payment_success_rate: Option<f64>,
    #[schema(maximum = 60000)]
    #[serde(default, deserialize_with = "optional_whole")]
    pub email_delay_ms: Option<u64>,
    pub email_outage: Option<bool>,
    pub email_hang: Option<bool>,
    #[schema(minimum = 0, maximum = 1)]
    pub payment_flap_rate: Option<f64>,
    /// 0 is unlimited.
    #[schema(maximum = 10000)]
    #[serde(default, deserialize_with = "optional_whole")]
    pub payment_capacity: Option<u64>,
}

impl From<FaultSettings> for FaultsUpdate {
    /// An update that sets every field to these settings (`faults reset`).
    fn from(s: FaultSettings) -> Self {
        let view = FaultsView::from(s);
        Self {
            payment_delay_ms: Some(view.payment_delay_ms),
            payment_success_rate: Some(view.payment_success_rate),
            email_delay_ms: Some(view.email_delay_ms),
            email_outage: Some(view.email_outage),
            email_hang: Some(view.email_hang),
            payment_flap_rate: Some(view.payment_flap_rate),
            payment_capacity: Some(u64::from(view.payment_capacity)),
        }
    }
}

impl From<FaultSettings> for FaultsView {
    fn from(s: FaultSettings) -> Self {
        Self {
            payment_delay_ms: u64::try_from(s.payment_delay.as_millis()).unwrap_or(u64::MAX),
            payment_success_rate: s.payment_success_rate,
            email_delay_ms: u64::try_from(s.email_delay.as_millis()).unwrap_or(u64::MAX),
            email_outage: s.email_outage,
            email_hang: s.email_hang,
            payment_flap_rate: s.payment_flap_rate,
            payment_capacity: s.payment_capacity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_updates_keep_the_other_fields() {
        let after = FaultSettings::DEFAULT.with(&FaultsUpdate {
            payment_success_rate: Some(0.5),
            ..Default::default()
        });
        assert_eq!(after.payment_success_rate, 0.5);
        assert_eq!(after.email_delay, Duration::from_millis(2000));
        assert!(after.problems().is_empty());
    }

    #[test]
    fn an_overloaded_gateway_slows_down_and_turns_calls_away_in_proportion() {
        let unlimited = FaultSettings::DEFAULT;
        assert_eq!(unlimited.gateway_load(500), (1.0, 0.0));
        // Ten calls a second at 400 ms: four in flight at full speed.
        let four = FaultSettings {
            payment_capacity: 10,
            payment_delay: Duration::from_millis(400),
            ..FaultSettings::DEFAULT
        };
        assert_eq!(four.gateway_load(4), (1.0, 0.0));
        assert_eq!(four.gateway_load(8), (2.0, 0.5));
        assert_eq!(four.gateway_load(16), (4.0, 0.75));
    }

    #[test]
    fn every_value_out_of_range_is_named() {
        let problems = FaultSettings::DEFAULT
            .with(&FaultsUpdate {
                payment_success_rate: Some(1.5),
                email_delay_ms: Some(3_600_000),
                email_outage: Some(true),
                payment_flap_rate: Some(-0.1),
                payment_capacity: Some(u64::from(u32::MAX) + 1),
                ..Default::default()
            })
            .problems();
        let fields: Vec<&str> = problems.iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "payment_success_rate",
                "payment_flap_rate",
                "payment_capacity",
                "email_delay_ms"
            ]
        );
    }
}
