//! When this process last saw a connection to Postgres lost — a statement cut off, a
//! backend terminated, the reachability probe unanswered — so that the pools test
//! every connection that sat idle through it before handing it out (see
//! `tested_before_use` in the parent module). One record for the whole process: a loss
//! seen through one pool makes the others test what they held too, which costs a round
//! trip per such connection and nothing else.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Microseconds from `EPOCH` to the last loss, plus one; 0 while none was seen.
static LAST_LOSS: AtomicU64 = AtomicU64::new(0);

/// Records a loss now.
pub(crate) fn lost() {
    let since_epoch = u64::try_from(EPOCH.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
    LAST_LOSS.store(since_epoch + 1, Ordering::Relaxed);
}

/// Records a loss if `error` says the connection is gone: an I/O or TLS failure, a
/// protocol error, or Postgres's own word for it (SQLSTATE class 08, connection
/// exception; 57P, a backend terminated or a server shutting down).
pub(crate) fn note(error: &sqlx::Error) {
    if says_lost(error) {
        lost();
    }
}

fn says_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

/// Whether a connection idle for `idle_for` was already idle when the last loss was
/// seen: it may be one of those cut.
pub(crate) fn idle_through_a_loss(idle_for: Duration) -> bool {
    match LAST_LOSS.load(Ordering::Relaxed) {
        0 => false,
        stamp => {
            EPOCH
                .elapsed()
                .saturating_sub(Duration::from_micros(stamp - 1))
                <= idle_for
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_idle_since_before_a_loss_is_suspect_and_one_taken_since_is_not() {
        lost();
        assert!(idle_through_a_loss(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!idle_through_a_loss(Duration::from_millis(5)));
    }

    #[test]
    fn only_errors_that_mean_the_connection_is_gone_count() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(says_lost(&sqlx::Error::Io(reset)));
        assert!(says_lost(&sqlx::Error::Protocol("unexpected EOF".into())));
        assert!(!says_lost(&sqlx::Error::RowNotFound));
        assert!(!says_lost(&sqlx::Error::PoolTimedOut));
    }
}
