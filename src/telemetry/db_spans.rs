//! Database statements (and long waits for a pooled connection) as OpenTelemetry spans.
//!
//! sqlx logs every statement it runs as a `sqlx::query` event, after the fact, with
//! the SQL text (placeholders such as `$1`, never the bound values) and the elapsed
//! time. This layer turns each such event into a client span under the span that ran
//! the statement (or, outside any `tracing` span, the request's server span),
//! back-dated to when the statement started — so no query in the code base has to be
//! wrapped by hand, and the waits inside a checkout step (a row lock, say) show up in
//! Jaeger as the statement that waited. `Database::acquire` reports a
//! notable wait for a connection the same way, as a `db.pool.acquire` span.

use std::any::TypeId;
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt, Tracer as _};
use opentelemetry_sdk::trace::SdkTracer;
use rustc_hash::FxHashMap;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Where sqlx logs its statements.
pub const SQLX_TARGET: &str = "sqlx::query";
/// Where `Database::acquire` reports a long wait for a pooled connection.
pub const POOL_WAIT_TARGET: &str = "ecommerce_monolith::db::pool_wait";

/// The OpenTelemetry layer `spans`, with the statements' events turned into spans
/// beside it. One layer rather than two, so one per-layer filter: each filter is
/// consulted on every span entry and exit, and a request enters its span several times
/// (sqlx re-enters the current span at every poll of a query).
pub struct WithStatementSpans<L> {
    spans: L,
    tracer: SdkTracer,
}

impl<S, L> Layer<S> for WithStatementSpans<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        self.spans.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.spans.on_layer(subscriber);
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        self.spans.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, span: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        self.spans.on_record(span, values, ctx);
    }

    fn on_follows_from(&self, span: &Id, follows: &Id, ctx: Context<'_, S>) {
        self.spans.on_follows_from(span, follows, ctx);
    }

    /// Statements become spans; every other event goes to `spans` (as a span event).
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let target = event.metadata().target();
        if target == SQLX_TARGET || target == POOL_WAIT_TARGET {
            self.statement_span(target, event, &ctx);
        } else {
            self.spans.on_event(event, ctx);
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        self.spans.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        self.spans.on_exit(id, ctx);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        self.spans.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &Id, new: &Id, ctx: Context<'_, S>) {
        self.spans.on_id_change(old, new, ctx);
    }

    /// `tracing-opentelemetry` finds its layer (and a span's context) by downcasting.
    unsafe fn downcast_raw(&self, id: TypeId) -> Option<*const ()> {
        if id == TypeId::of::<Self>() {
            Some(self as *const Self as *const ())
        } else {
            // SAFETY: forwarded unchanged to the wrapped layer, which answers for itself.
            unsafe { self.spans.downcast_raw(id) }
        }
    }
}

impl<L> WithStatementSpans<L> {
    pub fn new(spans: L, tracer: SdkTracer) -> Self {
        Self { spans, tracer }
    }

    fn statement_span<S>(&self, target: &str, event: &Event<'_>, ctx: &Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let parent_cx = match ctx.event_span(event) {
            Some(parent) => match super::logs::otel_context_of(&parent.id()) {
                Some(parent_cx) => parent_cx,
                None => return,
            },
            // Outside any `tracing` span: under the request's server span, which the
            // request middleware makes the current OpenTelemetry context (see
            // `telemetry::http`). Statements outside any request (migrations at
            // start-up) have neither, and are not traced.
            None => opentelemetry::Context::current(),
        };
        if !parent_cx.span().span_context().is_valid() {
            return;
        }

        let mut fields = StatementFields::default();
        event.record(&mut fields);
        let end = SystemTime::now();
        let start = end
            .checked_sub(Duration::from_secs_f64(fields.elapsed_secs.max(0.0)))
            .unwrap_or(end);
        let (name, kind, attributes) = if target == POOL_WAIT_TARGET {
            let attributes = vec![KeyValue::new("db.system.name", "postgresql")];
            (
                "db.pool.acquire".to_string(),
                SpanKind::Internal,
                attributes,
            )
        } else {
            statement_span(fields)
        };
        let mut span = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent_cx);
        span.end_with_timestamp(end);
    }
}

/// Name, kind and attributes of a statement's span, per the database conventions.
fn statement_span(fields: StatementFields) -> (String, SpanKind, Vec<KeyValue>) {
    let statement = fields
        .statement
        .unwrap_or_else(|| KnownStatement::of(fields.summary.trim()));
    let mut attributes = vec![
        KeyValue::new("db.system.name", "postgresql"),
        KeyValue::new("db.operation.name", statement.operation.clone()),
        KeyValue::new("db.response.returned_rows", fields.rows_returned as i64),
        KeyValue::new("db.response.affected_rows", fields.rows_affected as i64),
        KeyValue::new("db.query.text", statement.text.clone()),
    ];
    if let Some(table) = &statement.table {
        attributes.push(KeyValue::new("db.collection.name", table.clone()));
    }
    (statement.span_name.clone(), SpanKind::Client, attributes)
}

/// A statement's text and what its span is named after, worked out once per distinct
/// statement: the application runs a few dozen statements over and over, and copying
/// and parsing their text for every span showed up in the benchmark's profile.
struct KnownStatement {
    text: Arc<str>,
    operation: Arc<str>,
    table: Option<Arc<str>>,
    span_name: String,
}

/// Beyond this many distinct statements (a bug, or ad-hoc SQL), nothing more is kept.
const MAX_KNOWN_STATEMENTS: usize = 512;

/// Keyed by the statement's text with a fast non-cryptographic hash: the keys are the
/// application's own SQL, and SipHash over ~150 bytes per statement showed in the profile.
static KNOWN_STATEMENTS: LazyLock<RwLock<FxHashMap<Box<str>, Arc<KnownStatement>>>> =
    LazyLock::new(RwLock::default);

impl KnownStatement {
    fn of(text: &str) -> Arc<KnownStatement> {
        let known = KNOWN_STATEMENTS.read().unwrap_or_else(|p| p.into_inner());
        if let Some(statement) = known.get(text) {
            return statement.clone();
        }
        drop(known);
        let summary = StatementSummary::of(text);
        let statement = Arc::new(KnownStatement {
            text: text.into(),
            span_name: summary.span_name(),
            operation: summary.operation.into(),
            table: summary.table.map(Into::into),
        });
        let mut known = KNOWN_STATEMENTS.write().unwrap_or_else(|p| p.into_inner());
        if known.len() < MAX_KNOWN_STATEMENTS {
            known.insert(text.into(), statement.clone());
        }
        statement
    }
}

/// What a `sqlx::query` event says. The full text (sqlx's `db.statement`, empty when
/// the summary is the whole statement) is looked up among the known statements as it
/// is visited, never copied.
#[derive(Default)]
struct StatementFields {
    summary: String,
    statement: Option<Arc<KnownStatement>>,
    elapsed_secs: f64,
    rows_returned: u64,
    rows_affected: u64,
}

impl Visit for StatementFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_string(),
            "db.statement" if !value.trim().is_empty() => {
                self.statement = Some(KnownStatement::of(value.trim()));
            }
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
            "db.statement" if self.statement.is_none() => {
                let text = format!("{value:?}");
                if !text.trim().is_empty() {
                    self.statement = Some(KnownStatement::of(text.trim()));
                }
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
