//! The experiment `lab run` plays now, as it announces each phase: what the charts show
//! (`lab_phase{experiment, phase}`) and what the storefront's banner says.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::text::{LabName, LabTitle};

/// A phase is at least a millisecond long (the schema's `minimum`).
const SHORTEST_PHASE: Duration = Duration::from_millis(1);
/// The longest phase an announcement may claim: a day.
const LONGEST_PHASE: Duration = Duration::from_secs(86_400);
/// An announcement outlives its phase by this much, then it is over even if nobody said
/// so: a runner killed mid-phase stops showing on the charts and in the shop.
pub const PHASE_GRACE: Duration = Duration::from_secs(30);

/// A phase, as the runner announces it at its start.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabAnnouncement {
    /// The experiment's name (`lab list`), e.g. `pool-exhaustion`.
    #[schema(value_type = String, example = "pool-exhaustion")]
    pub experiment: LabName,
    #[schema(value_type = String, example = "Pool exhaustion starves the catalog")]
    pub title: LabTitle,
    /// The phase beginning now; `steady (before)` and `steady (after)` for the steady
    /// state.
    #[schema(value_type = String, example = "storm")]
    pub phase: LabName,
    /// Its place in the run, from 0, of `phases`.
    pub position: u16,
    #[schema(minimum = 1)]
    pub phases: u16,
    /// How long the phase lasts, in seconds.
    #[schema(minimum = 0.001, maximum = 86400)]
    pub seconds: f64,
}

/// The phase in progress, with the time it began and ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LabPhase {
    pub experiment: String,
    pub title: String,
    pub phase: String,
    pub position: u16,
    pub phases: u16,
    pub started_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

impl LabAnnouncement {
    /// The phase it announces, begun `now`; the field and the reason where it cannot be.
    pub fn begun(self, now: DateTime<Utc>) -> Result<LabPhase, (&'static str, String)> {
        if self.phases == 0 || self.position >= self.phases {
            return Err((
                "position",
                format!(
                    "must be below phases ({}), got {}",
                    self.phases, self.position
                ),
            ));
        }
        let length = Duration::try_from_secs_f64(self.seconds)
            .ok()
            .filter(|length| *length >= SHORTEST_PHASE && *length <= LONGEST_PHASE)
            .ok_or((
                "seconds",
                format!(
                    "must be at least 0.001 and at most {}, got {}",
                    LONGEST_PHASE.as_secs(),
                    self.seconds
                ),
            ))?;
        let ends_at = chrono::Duration::from_std(length)
            .ok()
            .and_then(|length| now.checked_add_signed(length))
            .ok_or(("seconds", "ends after the calendar does".to_string()))?;
        Ok(LabPhase {
            experiment: self.experiment.into(),
            title: self.title.into(),
            phase: self.phase.into(),
            position: self.position,
            phases: self.phases,
            started_at: now,
            ends_at,
        })
    }
}

impl LabPhase {
    /// Whether the phase still runs at `now`, its grace included.
    pub fn runs_at(&self, now: DateTime<Utc>) -> bool {
        chrono::Duration::from_std(PHASE_GRACE)
            .ok()
            .and_then(|grace| self.ends_at.checked_add_signed(grace))
            .is_some_and(|over| now < over)
    }

    /// Whole seconds left at `now` (0 once the phase's time is up).
    pub fn seconds_left(&self, now: DateTime<Utc>) -> u64 {
        u64::try_from((self.ends_at - now).num_seconds()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announcement(position: u16, phases: u16, seconds: f64) -> LabAnnouncement {
        LabAnnouncement {
            experiment: LabName::parse("pool-exhaustion").unwrap(),
            title: LabTitle::parse("Pool exhaustion").unwrap(),
            phase: LabName::parse("storm").unwrap(),
            position,
            phases,
            seconds,
        }
    }

    #[test]
    fn a_phase_ends_after_its_seconds_and_runs_through_its_grace() {
        let now = Utc::now();
        let phase = announcement(1, 3, 80.0).begun(now).unwrap();
        assert_eq!(phase.seconds_left(now), 80);
        assert!(phase.runs_at(now + chrono::Duration::seconds(100)));
        assert!(!phase.runs_at(now + chrono::Duration::seconds(111)));
        assert_eq!(phase.seconds_left(now + chrono::Duration::seconds(100)), 0);
    }

    #[test]
    fn the_shortest_phase_is_a_millisecond() {
        let now = Utc::now();
        let phase = announcement(0, 1, 0.001).begun(now).unwrap();
        assert_eq!(
            phase.ends_at - phase.started_at,
            chrono::Duration::milliseconds(1)
        );
    }

    #[test]
    fn an_impossible_announcement_names_its_field() {
        let now = Utc::now();
        for (position, phases, seconds, field) in [
            (3, 3, 10.0, "position"),
            (0, 0, 10.0, "position"),
            (0, 3, 0.0, "seconds"),
            (0, 3, 5e-324, "seconds"),
            (0, 3, -1.0, "seconds"),
            (0, 3, f64::NAN, "seconds"),
            (0, 3, 86_401.0, "seconds"),
        ] {
            let error = announcement(position, phases, seconds)
                .begun(now)
                .unwrap_err();
            assert_eq!(error.0, field, "{position}/{phases} {seconds} s");
        }
    }
}
