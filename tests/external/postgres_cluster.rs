//! A Postgres server of the test's own — `initdb` into a temporary directory, its own
//! port — so that a test can stop and start it without touching the shared server that
//! every other test uses.

use std::path::PathBuf;
use std::process::Command;

use crate::helpers::closed_port;

pub struct PostgresCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// More `-c name=value` server settings, kept across restarts.
    settings: Vec<String>,
}

/// Where Debian keeps the server's programs (`initdb`, `pg_ctl`), if they are here.
pub fn server_programs() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop()
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

impl PostgresCluster {
    /// A fresh, running cluster; Postgres refuses to run as root, so as root its
    /// programs run as the `postgres` user.
    pub async fn start_new(bin: PathBuf) -> Self {
        Self::start_new_with(bin, &[]).await
    }

    /// A fresh, running cluster with more server settings (`name=value`).
    pub async fn start_new_with(bin: PathBuf, settings: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("emtest-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("cluster directory");
        let cluster = Self {
            bin,
            dir,
            port: closed_port().await,
            settings: settings.iter().map(|s| format!(" -c {s}")).collect(),
        };
        if running_as_root() {
            cluster.run(
                "chown",
                &["-R", "postgres:postgres", &cluster.dir_str()],
                false,
            );
        }
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"],
            true,
        );
        cluster.start();
        cluster
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    pub fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50{}",
            self.port,
            self.dir_str(),
            self.settings.concat()
        );
        let log = self.dir.join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
            true,
        );
    }

    /// A fast shutdown: sessions are terminated, as when a database server goes down.
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data_dir(), "-m", "fast", "-w", "stop"],
            true,
        );
    }

    fn data_dir(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn dir_str(&self) -> String {
        self.dir.display().to_string()
    }

    /// `name` from the server's programs (or `chown`), as `postgres` when asked and root.
    fn command(&self, name: &str, as_postgres: bool) -> Command {
        let program = if name == "chown" {
            PathBuf::from(name)
        } else {
            self.bin.join(name)
        };
        if as_postgres && running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn run(&self, name: &str, args: &[&str], as_postgres: bool) {
        let output = self
            .command(name, as_postgres)
            .args(args)
            .output()
            .expect("run a Postgres program");
        assert!(
            output.status.success(),
            "{name} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl", true)
            .args(["-D", &self.data_dir(), "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
