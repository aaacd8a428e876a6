//! The `ecommerce-lab` binary as a user meets it: its commands, and a clear error (exit
//! code 1, no panic) when the service it is pointed at is not there. The commands at
//! work against a running service are tested with the service (`tests/api/tools.rs`,
//! `tests/external/`), through the server's front door.

use std::process::Command;

fn lab(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ecommerce-lab"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OTEL_SDK_DISABLED", "true")
        .output()
        .expect("run ecommerce-lab")
}

#[test]
fn the_help_lists_every_command() {
    let output = lab(&["--help"]);
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["loadgen", "faults", "mode", "outbox"] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
}

#[test]
fn a_service_that_is_not_there_is_a_clear_error() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let output = lab(&[
        "faults",
        "show",
        "--base-url",
        &format!("http://127.0.0.1:{port}"),
        "--admin-email",
        "admin@example.com",
        "--admin-password",
        "a password",
    ]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
