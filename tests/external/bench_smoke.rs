//! The benchmark harness still works: a tiny run of `bench/run.py` against the debug
//! binary. The figures of a smoke run mean nothing; the table must be complete.

use crate::helpers::server_url;
use crate::require::tool_available;

#[tokio::test(flavor = "multi_thread")]
async fn the_benchmark_script_runs_end_to_end() {
    let tools = [
        ("python3", "apt-get install python3"),
        ("wrk", "apt-get install wrk"),
        ("pgbench", "apt-get install postgresql-client"),
    ];
    if !tools
        .iter()
        .all(|(tool, install)| tool_available(tool, install))
    {
        return;
    }
    let output = tokio::process::Command::new("python3")
        .arg("bench/run.py")
        .arg("--smoke")
        .args(["--binary", env!("CARGO_BIN_EXE_ecommerce-monolith")])
        .args(["--server", &server_url()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .await
        .expect("python3 must be installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench/run.py --smoke failed:\n{stdout}\n{stderr}"
    );
    for measure in [
        "1 GET /api/products/{id} @32",
        "1 GET /api/products (20) @32",
        "2 telemetry on/off",
        "3 checkouts/s, delays 0",
        "4 checkout overhead p50/p99",
        "5 10 at once, pool 2",
        "5 catalog p99, pool 2",
        "6 peak RSS of the app, checkouts",
        "6 peak RSS of the app, password hashing",
        "6   during offered load, async: shoppers sign up",
        "7 async response p50/p99",
        "7 10 at once async, pool 2",
        "7 catalog p99 async, pool 2",
        "8 async: the knee",
        "8 blocking: the knee",
    ] {
        assert!(
            stdout.contains(measure),
            "{measure:?} missing from:\n{stdout}"
        );
    }
    // Every checkout of the bursts and of the throughput run must have succeeded, even
    // in a smoke run: read from each row's own figure, not from its target column.
    for measure in [
        "3 checkouts/s, delays 0",
        "5 10 at once, pool 2",
        "5 10 at once, pool 15",
        "7 10 at once async, pool 2",
    ] {
        let errors = errors_in_figure(&stdout, measure);
        assert_eq!(errors, Some(0), "{measure:?}:\n{stdout}");
    }
}

/// The "N errors" of a row's figure — the table's second column (columns are
/// separated by two spaces or more) — e.g. `1.72 s, 0 errors` or `51/s (0 errors)`.
fn errors_in_figure(table: &str, measure: &str) -> Option<u32> {
    let row = table.lines().find(|line| line.starts_with(measure))?;
    let figure = row
        .split("  ")
        .map(str::trim)
        .filter(|column| !column.is_empty())
        .nth(1)?;
    let before = figure.split(" error").next()?;
    let count = before.rsplit([' ', '(']).next()?;
    count.parse().ok()
}

#[test]
fn a_rows_errors_are_read_from_its_figure_not_its_target() {
    let table = "5 10 at once, pool 2    1.72 s, 3 errors    expected 1.5 s    1.15   \
                 1.0 ±25 %, 0 errors    ok\n\
                 3 checkouts/s, delays 0    51/s (0 errors)    pgbench 662 tps    0.08\n";
    assert_eq!(errors_in_figure(table, "5 10 at once, pool 2"), Some(3));
    assert_eq!(errors_in_figure(table, "3 checkouts/s, delays 0"), Some(0));
    assert_eq!(errors_in_figure(table, "7 10 at once async"), None);
}
