//! Database statements as OpenTelemetry client spans.
//!
//! sqlx logs every statement it runs as a `sqlx::query` event, after the fact, with
//! the SQL text (placeholders such as `$1`, never the bound values) and the elapsed
//! time. This layer turns each such event into a span under the span that ran the
//! statement, back-dated to when the statement started — so no query in the code
//! base has to be wrapped by hand, and the waits inside a checkout step (a row lock,
//! say) show up in Jaeger as the statement that waited.

use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt, Tracer as _};
use opentelemetry_sdk::trace::SdkTracer;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Where sqlx logs its statements.
pub const SQLX_TARGET: &str = "sqlx::query";

pub struct DbStatementSpans {
    tracer: SdkTracer,
}

impl DbStatementSpans {
    pub fn new(tracer: SdkTracer) -> Self {
        Self { tracer }
    }
}

impl<S> Layer<S> for DbStatementSpans
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != SQLX_TARGET {
            return;
        }
        // Statements outside any span (migrations at start-up) are not traced.
        let Some(parent) = ctx.event_span(event) else {
            return;
        };
        let Some(parent_cx) = super::logs::otel_context_of(&parent.id()) else {
            return;
        };
        if !parent_cx.span().span_context().is_valid() {
            return;
        }

        let mut fields = StatementFields::default();
        event.record(&mut fields);
        let statement = if fields.statement.trim().is_empty() {
            fields.summary.trim().to_string()
        } else {
            fields.statement.trim().to_string()
        };
        let end = SystemTime::now();
        let start = end
            .checked_sub(Duration::from_secs_f64(fields.elapsed_secs.max(0.0)))
            .unwrap_or(end);
        let summary = StatementSummary::of(&statement);

        let mut attributes = vec![
            KeyValue::new("db.system.name", "postgresql"),
            KeyValue::new("db.operation.name", summary.operation.clone()),
            KeyValue::new("db.response.returned_rows", fields.rows_returned as i64),
            KeyValue::new("db.response.affected_rows", fields.rows_affected as i64),
        ];
        if let Some(table) = &summary.table {
            attributes.push(KeyValue::new("db.collection.name", table.clone()));
        }
        attributes.push(KeyValue::new("db.query.text", statement));

        let mut span = self
            .tracer
            .span_builder(summary.span_name())
            .with_kind(SpanKind::Client)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent_cx);
        span.end_with_timestamp(end);
    }
}

#[derive(Default)]
struct StatementFields {
    summary: String,
    statement: String,
    elapsed_secs: f64,
    rows_returned: u64,
    rows_affected: u64,
}

impl Visit for StatementFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_string(),
            "db.statement" => self.statement = value.to_string(),
            _ => {}
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed_secs = value;
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "rows_returned" => self.rows_returned = value,
            "rows_affected" => self.rows_affected = value,
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `summary` and `db.statement` may arrive as display/debug values.
        match field.name() {
            "summary" if self.summary.is_empty() => self.summary = format!("{value:?}"),
            "db.statement" if self.statement.is_empty() => {
                self.statement = format!("{value:?}");
            }
            _ => {}
        }
    }
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
