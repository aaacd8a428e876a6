//! The real binary, started as a process of its own: the only way to observe its global
//! telemetry (tracing subscriber, metrics recorder) in isolation from other tests, and
//! to send it signals or kill it. Also the command-line tools.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::{
    ADMIN_EMAIL, ADMIN_PASSWORD, SmtpCapture, TestApp, TestDatabase, eventually, server_url,
    test_environment,
};
use crate::otlp::OtlpReceiver;

/// The binary's process, for tests that start the real executable.
pub struct Process {
    child: std::process::Child,
    output: Arc<Mutex<Vec<String>>>,
    /// What it was started with, to start it again.
    environment: Vec<(String, String)>,
}

/// The real binary, started as a separate process: the only way to observe its global
/// telemetry (tracing subscriber, metrics recorder) in isolation from other tests.
/// Its log output is JSON, collected line by line.
pub async fn spawn_process(overrides: &[(&str, &str)]) -> TestApp {
    spawn_process_on(&server_url(), overrides).await
}

/// [`spawn_process`] against another Postgres server.
pub async fn spawn_process_on(server: &str, overrides: &[(&str, &str)]) -> TestApp {
    let database = TestDatabase::create_on(server).await;
    let smtp = SmtpCapture::start().await;
    let mut environment = test_environment(&database.url, smtp.port);
    environment.push(("LOG_FORMAT".into(), "json".into()));
    for (key, value) in overrides {
        environment.retain(|(k, _)| k != key);
        environment.push((key.to_string(), value.to_string()));
    }
    let (process, address) = start_binary(environment).await;
    TestApp::new(address, Arc::new(database), Arc::new(smtp), Some(process)).await
}

/// `count` processes of the real binary started at the same instant on one database
/// that does not exist yet, as replicas behind a load balancer would be. Each has a pool
/// of 5 connections, so that two such tests fit in Postgres' default 100.
pub async fn spawn_replicas(count: usize, overrides: &[(&str, &str)]) -> Vec<TestApp> {
    spawn_replicas_on(&server_url(), count, overrides).await
}

/// [`spawn_replicas`] against another Postgres server (one of the test's own).
pub async fn spawn_replicas_on(
    server: &str,
    count: usize,
    overrides: &[(&str, &str)],
) -> Vec<TestApp> {
    let database = Arc::new(TestDatabase::not_yet_created_on(server));
    let smtp = Arc::new(SmtpCapture::start().await);
    let mut environment = test_environment(&database.url, smtp.port);
    environment.retain(|(k, _)| k != "DB_MAX_CONNECTIONS");
    environment.push(("DB_MAX_CONNECTIONS".into(), "5".into()));
    environment.push(("LOG_FORMAT".into(), "json".into()));
    for (key, value) in overrides {
        environment.retain(|(k, _)| k != key);
        environment.push((key.to_string(), value.to_string()));
    }
    let started =
        futures::future::join_all((0..count).map(|_| start_binary(environment.clone()))).await;
    let mut replicas = Vec::new();
    for (process, address) in started {
        replicas.push(TestApp::new(address, database.clone(), smtp.clone(), Some(process)).await);
    }
    replicas
}

/// Starts `ecommerce-monolith serve` with exactly `environment`; returns the process and
/// the address it listens on.
async fn start_binary(environment: Vec<(String, String)>) -> (Process, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ecommerce-monolith"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(environment.clone())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the binary");

    let output = Arc::new(Mutex::new(Vec::new()));
    let (address_tx, address_rx) = std::sync::mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let output = output.clone();
        let address_tx = address_tx.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(entry) = serde_json::from_str::<Value>(&line)
                    && entry["fields"]["message"] == "listening"
                    && let Some(address) = entry["fields"]["address"].as_str()
                {
                    let _ = address_tx.send(address.to_string());
                }
                output.lock().expect("output lock").push(line);
            }
        });
    }
    let address =
        tokio::task::spawn_blocking(move || address_rx.recv_timeout(Duration::from_secs(60)))
            .await
            .expect("join");
    let Ok(address) = address else {
        let _ = child.kill();
        panic!(
            "the app did not start:\n{}",
            output.lock().expect("output lock").join("\n")
        );
    };
    let process = Process {
        child,
        output,
        environment,
    };
    (process, format!("http://{address}"))
}

impl TestApp {
    /// SIGKILL — no shutdown, no flush, a worker dropped mid-job — then the same binary
    /// again on the same database and address.
    pub async fn kill_and_restart(&mut self) {
        self.kill();
        self.restart().await;
    }

    /// SIGKILL, and no restart: a replica gone for good.
    pub fn kill(&mut self) {
        let killed = self.process().child.kill();
        assert!(killed.is_ok(), "kill: {killed:?}");
        let _ = self.process().child.wait();
    }

    /// The same binary again on the same database, after it exited, and on the same
    /// address, as a restarted container would be: whoever calls or scrapes it (a
    /// Prometheus) finds it again.
    pub async fn restart(&mut self) {
        let mut environment = self.process().environment.clone();
        let address = self.address.trim_start_matches("http://").to_string();
        environment.retain(|(k, _)| k != "BIND_ADDR");
        environment.push(("BIND_ADDR".into(), address));
        let (process, address) = start_binary(environment).await;
        self.process = Some(process);
        self.address = address;
    }
}

impl TestApp {
    fn process(&mut self) -> &mut Process {
        self.process
            .as_mut()
            .expect("only for apps started with spawn_process")
    }

    /// Every line the process printed so far.
    pub fn output(&mut self) -> Vec<String> {
        self.process().output.lock().expect("output lock").clone()
    }

    /// Sends SIGTERM (what `docker stop` sends) and waits for the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        self.send_sigterm();
        let child = &mut self.process().child;
        eventually(Duration::from_secs(20), "the exit after SIGTERM", || {
            std::future::ready(child.try_wait().expect("wait"))
        })
        .await
    }

    /// Sends SIGTERM and returns at once: the test watches the shutdown.
    pub fn send_sigterm(&mut self) {
        self.signal("TERM");
    }

    /// SIGSTOP: the process stalls where it is (a long GC pause, a frozen VM), holding
    /// whatever it holds — its connections, its transactions' locks.
    pub fn stall(&mut self) {
        self.signal("STOP");
    }

    /// SIGCONT: a stalled process goes on as if nothing had happened.
    pub fn resume(&mut self) {
        self.signal("CONT");
    }

    fn signal(&mut self, name: &str) {
        let pid = self.process().child.id();
        let sent = std::process::Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -{name}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary as a command-line tool and returns its output; fails the test if it
/// cannot start.
pub async fn run_tool(args: &[&str], environment: &[(&str, &str)]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ecommerce-monolith"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OTEL_SDK_DISABLED", "true")
        .envs(environment.iter().copied())
        .output()
        .await
        .expect("run the binary")
}

impl TestApp {
    /// The demo catalog, created with `ecommerce-monolith seed` like a user would.
    pub async fn seed(&self) {
        let output = run_tool(&["seed"], &[("DATABASE_URL", &self.database_url)]).await;
        assert!(output.status.success(), "seed failed: {output:?}");
    }

    /// `ecommerce-monolith faults …` against this app, as the admin.
    pub async fn faults(&self, args: &[&str]) -> serde_json::Value {
        self.admin_tool("faults", args).await
    }

    /// `ecommerce-monolith <command> …` (`faults`, `mode`) against this app, as the admin.
    pub async fn admin_tool(&self, command: &str, args: &[&str]) -> serde_json::Value {
        let mut all = vec![command];
        all.extend_from_slice(args);
        let output = run_tool(
            &all,
            &[
                ("BASE_URL", &self.address),
                ("ADMIN_EMAIL", ADMIN_EMAIL),
                ("ADMIN_PASSWORD", ADMIN_PASSWORD),
            ],
        )
        .await;
        assert!(output.status.success(), "{command} failed: {output:?}");
        serde_json::from_slice(&output.stdout).expect("the tool prints JSON")
    }
}

/// The real binary exporting every span to `receiver` (batches every 100 ms), with
/// `overrides` on top.
pub async fn traced_app(receiver: &OtlpReceiver, overrides: &[(&str, &str)]) -> TestApp {
    let endpoint = receiver.endpoint();
    let mut environment = vec![
        ("OTEL_SDK_DISABLED", "false"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    environment.extend_from_slice(overrides);
    spawn_process(&environment).await
}
