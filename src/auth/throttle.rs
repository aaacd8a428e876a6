//! Brute-force protection for the login: attempts are rate-limited per account *from
//! each client address*, and per address, each with its own budget, by `governor`'s
//! keyed GCRA limiters. An address guessing one account's password is slowed down;
//! the account's owner, from an address that has not been failing, is not — so nobody
//! can lock a stranger out (OWASP ASVS 2.2.1: throttling without a lockout that is a
//! denial of service). One noisy address does not slow the others either.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::LoginThrottleSettings;

pub struct LoginThrottle {
    per_account_and_address: Option<DefaultKeyedRateLimiter<(String, IpAddr)>>,
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
}

impl LoginThrottle {
    pub fn new(settings: LoginThrottleSettings) -> Self {
        Self {
            per_account_and_address: settings.per_account_and_address.map(per_minute),
            per_address: settings.per_address.map(per_minute),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one login attempt for `account` (the e-mail as typed, lower-cased) from
    /// `address`; `Err` says how long to wait when either budget is spent.
    pub fn attempt(&self, account: &str, address: IpAddr) -> Result<(), Duration> {
        let now = self.clock.now();
        if let Some(limiter) = &self.per_address {
            limiter
                .check_key(&address)
                .map_err(|not_until| not_until.wait_time_from(now))?;
        }
        if let Some(limiter) = &self.per_account_and_address {
            limiter
                .check_key(&(account.trim().to_lowercase(), address))
                .map_err(|not_until| not_until.wait_time_from(now))?;
        }
        Ok(())
    }

    /// Forgets keys whose budget is whole again, so the maps do not grow forever.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.per_account_and_address {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.per_address {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// A budget of `attempts` at once, given back one by one over a minute.
fn per_minute<K: std::hash::Hash + Eq + Clone>(attempts: NonZeroU32) -> DefaultKeyedRateLimiter<K> {
    RateLimiter::keyed(Quota::per_minute(attempts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(per_account_and_address: u32, per_address: u32) -> LoginThrottle {
        LoginThrottle::new(LoginThrottleSettings {
            per_account_and_address: NonZeroU32::new(per_account_and_address),
            per_address: NonZeroU32::new(per_address),
        })
    }

    #[test]
    fn an_account_runs_out_without_touching_another() {
        let throttle = throttle(3, 0);
        let here = IpAddr::from([127, 0, 0, 1]);
        for _ in 0..3 {
            assert!(throttle.attempt("victim@example.com", here).is_ok());
        }
        let wait = throttle.attempt("Victim@Example.com ", here).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(20));
        assert!(throttle.attempt("someone-else@example.com", here).is_ok());
    }

    #[test]
    fn a_stranger_cannot_lock_the_owner_out() {
        let throttle = throttle(3, 100);
        let attacker = IpAddr::from([203, 0, 113, 7]);
        for _ in 0..30 {
            let _ = throttle.attempt("victim@example.com", attacker);
        }
        assert!(throttle.attempt("victim@example.com", attacker).is_err());
        let owner = IpAddr::from([198, 51, 100, 1]);
        assert!(throttle.attempt("victim@example.com", owner).is_ok());
    }

    #[test]
    fn an_address_runs_out_without_touching_another() {
        let throttle = throttle(0, 2);
        let noisy = IpAddr::from([10, 0, 0, 1]);
        assert!(throttle.attempt("a@example.com", noisy).is_ok());
        assert!(throttle.attempt("b@example.com", noisy).is_ok());
        assert!(throttle.attempt("c@example.com", noisy).is_err());
        assert!(
            throttle
                .attempt("c@example.com", IpAddr::from([10, 0, 0, 2]))
                .is_ok()
        );
    }
}
