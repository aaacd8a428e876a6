//! Database statements (and long waits for a pooled connection) as OpenTelemetry
//! client spans of our own (`super::own_spans`) — not as `tracing` spans, which would
//! cost a registry slot and a trip through every layer for each statement.
//!
//! `db::Statement` starts a [`StatementSpan`] when its caller is traced and ends it when
//! the statement is done: a child of the `tracing` span that ran it (or, outside any,
//! of the request's server span), so the waits inside a checkout step (a row lock, say)
//! show up in Jaeger as the statement that waited. `Database::acquire` reports a
//! notable wait for a connection the same way, as a `db.pool.acquire` span.

use std::time::SystemTime;

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceContextExt};
use opentelemetry::{Context, KeyValue};

use super::finished_span::{FinishedSpan, FixedAttributes, SpanName};
use super::own_spans;

/// The span a statement's span is a child of: the current `tracing` span's, or outside
/// any (a statement run straight in a handler) the request's server span, which the
/// request middleware makes the current OpenTelemetry context (see `telemetry::http`).
/// None when nothing is traced: statements outside any request (migrations, the
/// probe), or trace export off.
fn parent_span() -> Option<SpanContext> {
    if !own_spans::enabled() {
        return None;
    }
    // Asked of the dispatcher in force, which is cheaper than going through
    // `tracing::Span::current()` (no handle to clone and drop).
    let parent = tracing::dispatcher::get_default(|dispatch| {
        dispatch
            .current_span()
            .id()
            .map(|span| tracing_opentelemetry::get_otel_context(span, dispatch))
    });
    let parent = match parent {
        Some(in_span) => in_span?.span().span_context().clone(),
        None => Context::map_current(|cx| cx.span().span_context().clone()),
    };
    parent.is_valid().then_some(parent)
}

/// What a statement's span says about the statement itself, worked out once from its
/// text: the span's name after the operation and the main table (`SELECT inventory`,
/// the OpenTelemetry database convention), and the attributes every run repeats.
pub struct StatementSpanInfo {
    operation: String,
    table: Option<String>,
    attributes: FixedAttributes,
}

impl StatementSpanInfo {
    pub fn of(text: &'static str) -> Self {
        let StatementSummary { operation, table } = StatementSummary::of(text);
        let mut attributes = vec![
            KeyValue::new("db.system.name", "postgresql"),
            KeyValue::new("db.operation.name", operation.clone()),
        ];
        if let Some(table) = &table {
            attributes.push(KeyValue::new("db.collection.name", table.clone()));
        }
        attributes.push(KeyValue::new("db.query.text", text));
        Self {
            operation,
            table,
            attributes: FixedAttributes::new(attributes),
        }
    }

    fn name(&self) -> SpanName<'_> {
        SpanName(&self.operation, self.table.as_deref())
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
    context: SpanContext,
    parent_span_id: SpanId,
    start: SystemTime,
    outcome: Option<StatementOutcome>,
}

impl StatementSpan {
    /// A span for the statement `info` describes, begun now — if the caller is traced.
    /// (`info` is asked only then: it is worked out on a statement's first traced run.)
    pub fn start(info: impl FnOnce() -> &'static StatementSpanInfo) -> Option<Self> {
        let parent = parent_span()?;
        let context = own_spans::child_of(&parent)?;
        Some(Self {
            info: info(),
            context,
            parent_span_id: parent.span_id(),
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
        let failed = match &outcome {
            StatementOutcome::Failed(error_type) => Some(error_type.as_str()),
            _ => None,
        };
        let span = FinishedSpan {
            context: &self.context,
            parent_span_id: self.parent_span_id,
            parent_is_remote: false,
            kind: SpanKind::Client,
            name: info.name(),
            start: self.start,
            end: SystemTime::now(),
            error: failed,
            event: None,
        };
        own_spans::finish(&span, |attributes| {
            attributes.fixed(&info.attributes);
            match &outcome {
                StatementOutcome::Returned(rows) => {
                    attributes.int("db.response.returned_rows", *rows as i64);
                }
                StatementOutcome::Affected(rows) => {
                    attributes.int("db.response.affected_rows", *rows as i64);
                }
                StatementOutcome::Failed(error_type) => {
                    attributes.text("error.type", error_type);
                    if error_type.len() == 5 {
                        attributes.text("db.response.status_code", error_type);
                    }
                }
            }
        });
    }
}

/// A wait for a pooled connection from `start` until now, as a `db.pool.acquire` span.
pub fn record_pool_wait(start: SystemTime) {
    let Some(parent) = parent_span() else {
        return;
    };
    let Some(context) = own_spans::child_of(&parent) else {
        return;
    };
    let span = FinishedSpan {
        context: &context,
        parent_span_id: parent.span_id(),
        parent_is_remote: false,
        kind: SpanKind::Internal,
        name: SpanName("db.pool.acquire", None),
        start,
        end: SystemTime::now(),
        error: None,
        event: None,
    };
    own_spans::finish(&span, |attributes| {
        attributes.text("db.system.name", "postgresql");
    });
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
}

#[cfg(test)]
mod tests {
    use super::StatementSpanInfo;

    #[test]
    fn names_follow_operation_and_table() {
        let name = |sql: &'static str| StatementSpanInfo::of(sql).name().to_text();
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
