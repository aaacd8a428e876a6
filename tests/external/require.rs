//! The tools these tests drive, and what a machine without them does: a developer's
//! `cargo test` skips the test with a note saying what to install; CI (`CI=true`)
//! fails it, so that a green CI run has proven everything.

use std::io::Write as _;

/// Debian's package with `prometheus` and `promtool`.
pub const PROMETHEUS_PACKAGE: &str = "apt-get install prometheus";

/// Whether `tool` can be started here. When it cannot, the test should return early:
/// this prints why, or panics when `CI` is set.
pub fn tool_available(tool: &str, install: &str) -> bool {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !found {
        missing(&format!("`{tool}` is not installed"), install);
    }
    found
}

/// The one way a test skips for want of something on the machine: it says so (to
/// install it: `install`), or, with `CI` set, fails — so that a green CI run has proven
/// everything. The test returns early after calling this.
pub fn missing(what: &str, install: &str) {
    let message = format!("{what} (to install it: {install})");
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    assert!(!in_ci, "{message}; with CI set, every tool is required");
    // Written to the real stderr: the test harness captures `eprintln!` of tests
    // that pass, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "skipped: {message}");
}
