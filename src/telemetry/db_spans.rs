//! Database statements (and long waits for a pooled connection) as OpenTelemetry
//! client spans, made straight through the tracer — not as `tracing` spans, which would
//! cost a registry slot and a trip through every layer for each statement.
//!
//! `db::Statement` starts a [`StatementSpan`] when its caller is traced and ends it when
//! the statement is done: a child of the `tracing` span that ran it (or, outside any,
//! of the request's server span), so the waits inside a checkout step (a row lock, say)
//! show up in Jaeger as the statement that waited. `Database::acquire` reports a
//! notable wait for a connection the same way, as a `db.pool.acquire` span.

use std::sync::OnceLock;
use std::time::SystemTime;

use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;

/// The tracer of statement spans; set when trace export is on.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Statement spans are made from now on. Only the first installation counts, like the
/// subscriber's (tests install more).
pub(super) fn use_tracer(tracer: SdkTracer) {
    let _ = TRACER.set(tracer);
}

/// The context a statement's span is a child of: the current `tracing` span's, or
/// outside any (a statement run straight in a handler) the request's server span, which
/// the request middleware makes the current OpenTelemetry context (see
/// `telemetry::http`). None when nothing is traced: statements outside any request
/// (migrations, the probe), or trace export off.
fn parent_context() -> Option<(&'static SdkTracer, Context)> {
    let tracer = TRACER.get()?;
    // Asked of the dispatcher in force, which is cheaper than going through
    // `tracing::Span::current()` (no handle to clone and drop).
    let parent = tracing::dispatcher::get_default(|dispatch| {
        dispatch
            .current_span()
            .id()
            .map(|span| tracing_opentelemetry::get_otel_context(span, dispatch))
    });
    let parent = match parent {
        Some(in_span) => in_span?,
        None => Context::current(),
    };
    parent
        .span()
        .span_context()
        .is_valid()
        .then_some((tracer, parent))
}

/// What a statement's span says about the statement itself, worked out once from its
/// text: the span's name after the operation and the main table (`SELECT inventory`,
/// the OpenTelemetry database convention).
pub struct StatementSpanInfo {
    text: &'static str,
    name: String,
    operation: String,
    table: Option<String>,
}

impl StatementSpanInfo {
    pub fn of(text: &'static str) -> Self {
        let summary = StatementSummary::of(text);
        Self {
            text,
            name: summary.span_name(),
            operation: summary.operation,
            table: summary.table,
        }
    }
}

/// How a statement ended, for its span.
pub enum StatementOutcome {
    /// It returned this many rows.
    Returned(u64),
    /// It changed this many rows (or it was `BEGIN`, `COMMIT`…: none).
    Affected(u64),
    /// It failed; the SQLSTATE, or what kind of failure it was.
    Failed(String),
}

/// A statement under way, traced. Ended by [`StatementSpan::end`]; dropped before
/// that (its caller gave up waiting), it ends as `cancelled`.
pub struct StatementSpan {
    info: &'static StatementSpanInfo,
    tracer: &'static SdkTracer,
    parent: Context,
    start: SystemTime,
    outcome: Option<StatementOutcome>,
}

impl StatementSpan {
    /// A span for the statement `info` describes, begun now — if the caller is traced.
    /// (`info` is asked only then: it is worked out on a statement's first traced run.)
    pub fn start(info: impl FnOnce() -> &'static StatementSpanInfo) -> Option<Self> {
        let (tracer, parent) = parent_context()?;
        Some(Self {
            info: info(),
            tracer,
            parent,
            start: SystemTime::now(),
            outcome: None,
        })
    }

    pub fn end(mut self, outcome: StatementOutcome) {
        self.outcome = Some(outcome);
    }
}

impl Drop for StatementSpan {
    fn drop(&mut self) {
        let outcome = self
            .outcome
            .take()
            .unwrap_or_else(|| StatementOutcome::Failed("cancelled".to_string()));
        let info = self.info;
        let mut attributes = Vec::with_capacity(7);
        attributes.push(KeyValue::new("db.system.name", "postgresql"));
        attributes.push(KeyValue::new("db.operation.name", info.operation.as_str()));
        if let Some(table) = &info.table {
            attributes.push(KeyValue::new("db.collection.name", table.as_str()));
        }
        attributes.push(KeyValue::new("db.query.text", info.text));
        let mut failed = None;
        match outcome {
            StatementOutcome::Returned(rows) => {
                attributes.push(KeyValue::new("db.response.returned_rows", rows as i64));
            }
            StatementOutcome::Affected(rows) => {
                attributes.push(KeyValue::new("db.response.affected_rows", rows as i64));
            }
            StatementOutcome::Failed(error_type) => {
                attributes.push(KeyValue::new("error.type", error_type.clone()));
                if error_type.len() == 5 {
                    attributes.push(KeyValue::new("db.response.status_code", error_type.clone()));
                }
                failed = Some(error_type);
            }
        }
        let mut span = self
            .tracer
            .span_builder(info.name.as_str())
            .with_kind(SpanKind::Client)
            .with_start_time(self.start)
            .with_attributes(attributes)
            .start_with_context(self.tracer, &self.parent);
        if let Some(error_type) = failed {
            span.set_status(Status::error(error_type));
        }
        span.end();
    }
}

/// A wait for a pooled connection from `start` until now, as a `db.pool.acquire` span.
pub fn record_pool_wait(start: SystemTime) {
    let Some((tracer, parent)) = parent_context() else {
        return;
    };
    let mut span = tracer
        .span_builder("db.pool.acquire")
        .with_kind(SpanKind::Internal)
        .with_start_time(start)
        .with_attributes([KeyValue::new("db.system.name", "postgresql")])
        .start_with_context(tracer, &parent);
    span.end();
}

/// Operation and main table of a statement, for a span name like `SELECT inventory`
/// (the OpenTelemetry database convention).
#[derive(Debug, PartialEq)]
struct StatementSummary {
    operation: String,
    table: Option<String>,
}

impl StatementSummary {
    fn of(statement: &str) -> Self {
        let words: Vec<&str> = statement.split_whitespace().collect();
        let operation = words
            .first()
            .map(|w| w.to_ascii_uppercase())
            .unwrap_or_default();
        let keyword = match operation.as_str() {
            "SELECT" | "DELETE" => "FROM",
            "INSERT" => "INTO",
            "UPDATE" => "UPDATE",
            _ => "",
        };
        let table = (!keyword.is_empty())
            .then(|| {
                words
                    .iter()
                    .position(|w| w.eq_ignore_ascii_case(keyword))
                    .and_then(|i| words.get(i + 1))
            })
            .flatten()
            .map(|t| {
                t.trim_matches(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
                    .to_string()
            })
            .filter(|t| !t.is_empty());
        Self { operation, table }
    }

    fn span_name(&self) -> String {
        match &self.table {
            Some(table) => format!("{} {table}", self.operation),
            None => self.operation.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StatementSummary;

    #[test]
    fn names_follow_operation_and_table() {
        let name = |sql: &str| StatementSummary::of(sql).span_name();
        assert_eq!(
            name(
                "SELECT product_id, quantity FROM inventory WHERE product_id = ANY($1) FOR UPDATE"
            ),
            "SELECT inventory"
        );
        assert_eq!(
            name("INSERT INTO orders (user_id) VALUES ($1)"),
            "INSERT orders"
        );
        assert_eq!(
            name("update inventory set quantity = 1"),
            "UPDATE inventory"
        );
        assert_eq!(
            name("DELETE FROM cart_items WHERE cart_id = $1"),
            "DELETE cart_items"
        );
        assert_eq!(name("COMMIT"), "COMMIT");
        assert_eq!(name("WITH x AS (SELECT 1) SELECT * FROM x"), "WITH");
    }
}
