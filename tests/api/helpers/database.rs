//! A database of its own for every test, created on the Postgres server that
//! `DATABASE_URL` names and dropped afterwards.

use sqlx::{Connection, PgConnection};

/// The Postgres server the tests use, without a database name.
pub fn server_url() -> String {
    let url = std::env::var("DATABASE_URL")
        // The compose stack's Postgres wants this password; a trust-auth one ignores it.
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_string());
    match url.rsplit_once('/') {
        Some((server, _database)) if server.contains("://") && !server.ends_with('/') => {
            server.to_string()
        }
        _ => url,
    }
}

/// A database that exists for one test.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    server: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        Self::create_on(&server_url()).await
    }

    /// The name of a database that does not exist yet on `server`: the app creates it. Dropped
    /// afterwards like the others.
    pub fn not_yet_created_on(server: &str) -> Self {
        let server = server.to_string();
        let name = format!("emtest_{}", uuid::Uuid::new_v4().simple());
        Self {
            url: format!("{server}/{name}"),
            name,
            server,
        }
    }

    /// A database on another server (a Postgres of the test's own, say).
    pub async fn create_on(server: &str) -> Self {
        let name = format!("emtest_{}", uuid::Uuid::new_v4().simple());
        let server = server.to_string();
        let mut admin = PgConnection::connect(&format!("{server}/postgres"))
            .await
            .expect("cannot connect to Postgres: is it running, is DATABASE_URL right?");
        sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut admin)
            .await
            .expect("create test database");
        Self {
            url: format!("{server}/{name}"),
            name,
            server,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let server = self.server.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&format!("{server}/postgres")).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
                    )))
                    .execute(&mut admin)
                    .await;
                }
            });
        })
        .join();
    }
}
