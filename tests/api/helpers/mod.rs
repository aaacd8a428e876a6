//! The test harness: every test gets its own app on a free port, its own fresh
//! database on the real Postgres, and a real SMTP listener that captures the mail.
//!
//! - [`database`]: a fresh database per test (`DATABASE_URL` names the server);
//! - [`smtp`]: a real SMTP listener that keeps what it is sent;
//! - [`app`]: the app in this process (`spawn_app`), requests, and the shop's usual
//!   set-ups;
//! - [`process`]: the real binary as a process of its own (its own telemetry, signals,
//!   crashes), and the command-line tools;
//! - [`metrics`]: reading its `/metrics`;
//! - [`eventually`]: waiting for a condition instead of sleeping.

pub mod app;
pub mod database;
pub mod metrics;
pub mod process;
pub mod smtp;

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

pub use self::app::*;
pub use self::database::*;
pub use self::metrics::*;
pub use self::process::*;
pub use self::smtp::*;

pub const ADMIN_EMAIL: &str = "admin@shop.test";

/// The blocking checkout's eleven steps in the order the design lists them, then the
/// commit: what its spans, its histogram and its `Server-Timing` must name.
pub const CHECKOUT_STEPS: [&str; 12] = [
    "validate_cart",
    "check_inventory",
    "reserve_inventory",
    "create_order",
    "create_order_items",
    "process_payment",
    "record_payment",
    "reduce_inventory",
    "send_email",
    "create_notification",
    "clear_cart",
    "commit",
];
pub const ADMIN_PASSWORD: &str = "admin password for tests";
pub const JWT_SECRET: &str = "a-test-secret-that-is-long-enough-0123456789";
pub const PASSWORD: &str = "customer password";

/// One entry of a response's `Server-Timing` header (W3C Server Timing).
#[derive(Debug, Clone, PartialEq)]
pub struct TimedEntry {
    pub name: String,
    /// Milliseconds.
    pub duration: f64,
    pub description: Option<String>,
}

/// The `Server-Timing` entries of a response, in order: `name;dur=ms[;desc="…"]`,
/// separated by commas outside the quoted descriptions.
pub fn server_timing(response: &reqwest::Response) -> Vec<TimedEntry> {
    let header = response
        .headers()
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .expect("a Server-Timing header");
    let mut entries = Vec::new();
    let (mut current, mut quoted) = (String::new(), false);
    for c in header.chars().chain(std::iter::once(',')) {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                entries.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    entries
        .iter()
        .map(|entry| {
            // The description last, quoted: it may hold a `;` of its own.
            let (head, description) = match entry.trim().split_once(";desc=\"") {
                Some((head, text)) => (head, Some(text.trim_end_matches('"').to_string())),
                None => (entry.trim(), None),
            };
            let (name, duration) = head.split_once(";dur=").expect("name;dur=ms");
            let name = name.to_string();
            let duration = duration.parse().expect("milliseconds");
            TimedEntry {
                name,
                duration,
                description,
            }
        })
        .collect()
}

/// Asks `check` until it answers `Some` (returned) or `within` has passed (the test
/// fails, saying `what` did not happen). Asks often at first, then every 200 ms: most
/// conditions hold within milliseconds, and a slow one is not flooded with queries.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll_until(within, check).await {
        Some(value) => value,
        None => panic!("{what} did not happen within {within:?}"),
    }
}

/// [`eventually`] for a caller that explains a timeout itself: `None` when `within`
/// passed first.
pub async fn poll_until<T, F, Fut>(within: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if started.elapsed() >= within {
            return None;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// A port on which nothing listens (bound, then released).
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A port that accepts connections and never answers on them, like a hung server (a
/// collector, a mail server): the worst case for a client, which a closed port is not.
pub async fn black_hole() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    port
}
