//! The service's own statements, each traced as a client span named after it
//! (`SELECT inventory`), made here from the statement's text as the code holds it.
//!
//! Every statement is a `static` [`Statement`] made by [`statement!`] where it is used:
//! its SQL is known at compile time, so a run copies no text and the span's name,
//! operation and table are worked out once, at its first run. (sqlx's own statement log,
//! which the spans were once made from, builds a summary and a copy of the SQL for every
//! run; it is off, and only its slow-statement warning stays on: see `db::connect_options`.)
//!
//! A statement is run like a sqlx query — `statement!("…").query_as().bind(id)
//! .fetch_one(conn)` — and its span says how long it took (a wait for a row lock
//! included), how many rows it returned or changed, and the SQLSTATE when it failed.

use std::future::Future;
use std::sync::OnceLock;

use sqlx::postgres::{PgArguments, PgQueryResult, PgRow};
use sqlx::query::{Query, QueryAs, QueryScalar};
use sqlx::{Encode, Executor, FromRow, Postgres, Transaction, Type};

use super::lost_connections;
use crate::telemetry::db_spans::{StatementOutcome, StatementSpan, StatementSpanInfo};

/// A statement of the service's own: its SQL, and its span's name once worked out.
/// Made by [`statement!`].
pub struct Statement {
    sql: &'static str,
    span_info: OnceLock<StatementSpanInfo>,
}

/// The `&'static` [`Statement`] of this SQL (a literal or a `concat!` of them).
macro_rules! statement {
    ($sql:expr $(,)?) => {{
        static STATEMENT: $crate::db::statement::Statement =
            $crate::db::statement::Statement::new($sql);
        &STATEMENT
    }};
}
pub(crate) use statement;

impl Statement {
    pub const fn new(sql: &'static str) -> Self {
        Self {
            sql,
            span_info: OnceLock::new(),
        }
    }

    /// A query whose result is how many rows it changed.
    pub fn query<'q>(&'static self) -> Traced<Query<'q, Postgres, PgArguments>> {
        Traced {
            statement: self,
            query: sqlx::query(self.sql),
        }
    }

    /// A query whose rows are read as `O`s.
    pub fn query_as<'q, O>(&'static self) -> Traced<QueryAs<'q, Postgres, O, PgArguments>>
    where
        O: for<'r> FromRow<'r, PgRow>,
    {
        Traced {
            statement: self,
            query: sqlx::query_as(self.sql),
        }
    }

    /// A query whose rows are one column each, read as `O`s.
    pub fn query_scalar<'q, O>(&'static self) -> Traced<QueryScalar<'q, Postgres, O, PgArguments>>
    where
        (O,): for<'r> FromRow<'r, PgRow>,
    {
        Traced {
            statement: self,
            query: sqlx::query_scalar(self.sql),
        }
    }

    /// Runs `run` (this statement's execution), as a span when the caller is traced.
    async fn traced<T>(
        &'static self,
        run: impl Future<Output = sqlx::Result<T>>,
        outcome: impl FnOnce(&T) -> StatementOutcome,
    ) -> sqlx::Result<T> {
        let Some(span) = StatementSpan::start(|| self.span_info()) else {
            return run.await.inspect_err(lost_connections::note);
        };
        let result = run.await.inspect_err(lost_connections::note);
        span.end(match &result {
            Ok(value) => outcome(value),
            // `fetch_one` found no row: the statement itself succeeded.
            Err(sqlx::Error::RowNotFound) => StatementOutcome::Returned(0),
            Err(error) => StatementOutcome::Failed(error_type(error)),
        });
        result
    }

    fn span_info(&'static self) -> &'static StatementSpanInfo {
        self.span_info
            .get_or_init(|| StatementSpanInfo::of(self.sql))
    }
}

/// What a failed statement's span says went wrong: the SQLSTATE when Postgres answered
/// (`23505`, `40P01`, `57014`…), otherwise what kind of failure it was. Never the
/// message, which may quote values.
fn error_type(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .map_or_else(|| "database".to_string(), |code| code.into_owned()),
        sqlx::Error::Io(_) => "io".to_string(),
        sqlx::Error::PoolTimedOut => "pool_timed_out".to_string(),
        sqlx::Error::PoolClosed => "pool_closed".to_string(),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => "decode".to_string(),
        _ => "other".to_string(),
    }
}

/// A query of a [`Statement`], run like sqlx's own (`bind`, then `execute` or a
/// `fetch_*`), each run a span.
#[must_use = "a query must be run to do anything"]
pub struct Traced<Q> {
    statement: &'static Statement,
    query: Q,
}

impl<'q> Traced<Query<'q, Postgres, PgArguments>> {
    pub fn bind<'t, T: Encode<'t, Postgres> + Type<Postgres>>(mut self, value: T) -> Self {
        self.query = self.query.bind(value);
        self
    }

    pub async fn execute<'c, E>(self, executor: E) -> sqlx::Result<PgQueryResult>
    where
        E: Executor<'c, Database = Postgres>,
    {
        let run = self.query.execute(executor);
        self.statement
            .traced(run, |done| StatementOutcome::Affected(done.rows_affected()))
            .await
    }
}

/// `bind` and the `fetch_*` methods of a query whose rows are read as `O`s: the same for
/// `QueryAs` and `QueryScalar`, whose own methods have the same names and signatures.
macro_rules! traced_fetches {
    () => {
        pub fn bind<T: 'q + Encode<'q, Postgres> + Type<Postgres>>(mut self, value: T) -> Self {
            self.query = self.query.bind(value);
            self
        }

        pub async fn fetch_one<'c, E>(self, executor: E) -> sqlx::Result<O>
        where
            E: Executor<'c, Database = Postgres>,
        {
            let run = self.query.fetch_one(executor);
            self.statement
                .traced(run, |_| StatementOutcome::Returned(1))
                .await
        }

        pub async fn fetch_optional<'c, E>(self, executor: E) -> sqlx::Result<Option<O>>
        where
            E: Executor<'c, Database = Postgres>,
        {
            let run = self.query.fetch_optional(executor);
            self.statement
                .traced(run, |row| StatementOutcome::Returned(row.is_some().into()))
                .await
        }

        pub async fn fetch_all<'c, E>(self, executor: E) -> sqlx::Result<Vec<O>>
        where
            E: Executor<'c, Database = Postgres>,
        {
            let run = self.query.fetch_all(executor);
            self.statement
                .traced(run, |rows| StatementOutcome::Returned(rows.len() as u64))
                .await
        }
    };
}

impl<'q, O> Traced<QueryAs<'q, Postgres, O, PgArguments>>
where
    O: Send + Unpin + for<'r> FromRow<'r, PgRow>,
{
    traced_fetches!();
}

impl<'q, O> Traced<QueryScalar<'q, Postgres, O, PgArguments>>
where
    O: Send + Unpin,
    (O,): for<'r> FromRow<'r, PgRow>,
{
    traced_fetches!();
}

/// Commits `tx`, as a `COMMIT` span (sqlx sends it itself, outside any [`Statement`]).
pub async fn commit(tx: Transaction<'static, Postgres>) -> sqlx::Result<()> {
    statement!("COMMIT")
        .traced(tx.commit(), |()| StatementOutcome::Affected(0))
        .await
}

/// Rolls `tx` back now, as a `ROLLBACK` span. (A transaction dropped without a commit is
/// rolled back too, untraced, when its connection is next used.)
pub async fn rollback(tx: Transaction<'static, Postgres>) -> sqlx::Result<()> {
    statement!("ROLLBACK")
        .traced(tx.rollback(), |()| StatementOutcome::Affected(0))
        .await
}

/// Begins a transaction on `connection`, as a `BEGIN` span.
pub(super) async fn begin(
    connection: sqlx::pool::PoolConnection<Postgres>,
) -> sqlx::Result<Transaction<'static, Postgres>> {
    statement!("BEGIN")
        .traced(Transaction::begin(connection, None), |_| {
            StatementOutcome::Affected(0)
        })
        .await
}
