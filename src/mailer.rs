//! The mail server's client: the order confirmation, sent over real SMTP (MailHog in
//! the stack) with lettre.
//!
//! The mail server is "slow" on purpose: the send waits the configured e-mail delay
//! first, inside the checkout's transaction — the anti-pattern this service exists to
//! show. A timeout bounds the SMTP conversation so a stuck server cannot hold the
//! transaction and its row locks forever.
//!
//! Connections are opened here, with `TCP_NODELAY`: lettre 0.11 leaves Nagle's
//! algorithm on, and its last write of a message (`.`) then waits for the server's
//! delayed ACK — 40 ms per e-mail, found by the benchmark (fixed upstream in
//! lettre#1159, not yet released). Idle connections are kept for the next message,
//! checked with a NOOP before reuse, as lettre's own pool would.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::Message;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use metrics::histogram;
use rust_decimal::Decimal;
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::config::SmtpSettings;
use crate::domain::{Customer, LineItem};
use crate::live_settings::LiveSettings;
use crate::telemetry::metrics::EMAIL_SEND_DURATION;

#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("the mail server is unavailable (injected outage)")]
    InjectedOutage,
    #[error("the mail server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect to the mail server: {0}")]
    Connect(#[from] std::io::Error),
    #[error("SMTP error: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("cannot build the message: {0}")]
    Message(String),
}

/// What the confirmation says.
pub struct Confirmation<'a> {
    pub to: &'a Customer,
    pub order_id: i64,
    pub items: Vec<LineItem>,
    pub total: Decimal,
}

/// Idle SMTP connections kept for reuse; beyond this many, a finished one is closed.
const MAX_IDLE_CONNECTIONS: usize = 64;

#[derive(Clone)]
pub struct Mailer {
    hello: ClientId,
    idle: Arc<Mutex<Vec<AsyncSmtpConnection>>>,
    from: Mailbox,
    host: String,
    port: u16,
    timeout: Duration,
    live: LiveSettings,
}

impl Mailer {
    pub fn new(settings: &SmtpSettings, live: LiveSettings) -> anyhow::Result<Self> {
        let from = settings
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("MAIL_FROM: {e}"))?;
        Ok(Self {
            hello: ClientId::default(),
            idle: Arc::default(),
            from,
            host: settings.host.clone(),
            port: settings.port,
            timeout: settings.timeout,
            live,
        })
    }

    pub async fn send_confirmation(
        &self,
        confirmation: &Confirmation<'_>,
    ) -> Result<(), EmailError> {
        let span = tracing::info_span!(
            "smtp.send",
            otel.kind = "client",
            server.address = %self.host,
            server.port = self.port,
            messaging.message.id = confirmation.order_id,
        );
        let started = Instant::now();
        let result = async {
            let settings = self.live.faults();
            // The slow mail server of the lesson.
            tokio::time::sleep(settings.email_delay).await;
            if settings.email_outage {
                return Err(EmailError::InjectedOutage);
            }
            let message = self.compose(confirmation)?;
            tokio::time::timeout(self.timeout, self.deliver(&message))
                .await
                .map_err(|_| EmailError::Timeout(self.timeout))?
        }
        .instrument(span)
        .await;
        let outcome = if result.is_ok() { "sent" } else { "failed" };
        histogram!(EMAIL_SEND_DURATION, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// MAIL, RCPT, DATA on an idle connection that still answers, or on a new one.
    async fn deliver(&self, message: &Message) -> Result<(), EmailError> {
        let mut connection = match self.take_idle() {
            Some(mut idle) => {
                if idle.test_connected().await {
                    idle
                } else {
                    self.connect().await?
                }
            }
            None => self.connect().await?,
        };
        connection
            .send(message.envelope(), &message.formatted())
            .await?;
        self.keep_idle(connection).await;
        Ok(())
    }

    /// Plain SMTP, as MailHog and Mailpit speak it; a production relay would add
    /// STARTTLS and AUTH.
    async fn connect(&self) -> Result<AsyncSmtpConnection, EmailError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port)).await?;
        stream.set_nodelay(true)?;
        Ok(AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello).await?)
    }

    fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    async fn keep_idle(&self, connection: AsyncSmtpConnection) {
        let mut surplus = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE_CONNECTIONS {
                idle.push(connection);
                return;
            }
            connection
        };
        let _ = surplus.quit().await;
    }

    fn compose(&self, c: &Confirmation<'_>) -> Result<Message, EmailError> {
        let to = Mailbox::new(
            Some(c.to.name.clone()),
            c.to.email
                .parse()
                .map_err(|e| EmailError::Message(format!("recipient: {e}")))?,
        );
        let mut body = format!(
            "Hello {},\n\nthank you for your order #{}. We have received your payment.\n\n",
            c.to.name, c.order_id
        );
        for item in &c.items {
            body.push_str(&format!(
                "  {} x {} at {:.2} = {:.2}\n",
                item.quantity, item.product_name, item.unit_price, item.subtotal
            ));
        }
        body.push_str(&format!(
            "\nTotal: {:.2}\n\nOrder id: {}\n",
            c.total, c.order_id
        ));
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(format!("Order #{} confirmed", c.order_id))
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| EmailError::Message(e.to_string()))
    }
}
