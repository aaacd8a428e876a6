//! The order confirmation, sent over real SMTP (MailHog in the stack) with lettre.
//!
//! The mail server is "slow" on purpose: the send waits the configured e-mail delay
//! first, inside the checkout's transaction — the anti-pattern this service exists to
//! show. A timeout bounds the SMTP conversation so a stuck server cannot hold the
//! transaction and its row locks forever.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rust_decimal::Decimal;
use tracing::Instrument;

use super::faults::Faults;
use crate::config::SmtpSettings;

#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("the mail server is unavailable (injected outage)")]
    InjectedOutage,
    #[error("the mail server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("SMTP error: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("cannot build the message: {0}")]
    Message(String),
}

/// What the confirmation says.
pub struct Confirmation<'a> {
    pub to: &'a str,
    pub name: &'a str,
    pub order_id: i64,
    pub lines: Vec<ConfirmationLine>,
    pub total: Decimal,
}

pub struct ConfirmationLine {
    pub product_name: String,
    pub quantity: i32,
    pub unit_price: Decimal,
}

#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    host: String,
    port: u16,
    timeout: Duration,
    faults: Faults,
}

impl Mailer {
    pub fn new(settings: &SmtpSettings, faults: Faults) -> anyhow::Result<Self> {
        let from = settings
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("MAIL_FROM: {e}"))?;
        // Plain SMTP, as MailHog/Mailpit speak it; a production relay would use
        // `AsyncSmtpTransport::relay` with TLS and credentials.
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            .port(settings.port)
            .timeout(Some(settings.timeout))
            .pool_config(PoolConfig::new().max_size(10))
            .build();
        Ok(Self {
            transport,
            from,
            host: settings.host.clone(),
            port: settings.port,
            timeout: settings.timeout,
            faults,
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
        async {
            let settings = self.faults.current();
            // The slow mail server of the lesson.
            tokio::time::sleep(settings.email_delay).await;
            if settings.email_outage {
                return Err(EmailError::InjectedOutage);
            }
            let message = self.compose(confirmation)?;
            match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
                Ok(sent) => sent.map(|_| ()).map_err(EmailError::from),
                Err(_) => Err(EmailError::Timeout(self.timeout)),
            }
        }
        .instrument(span)
        .await
    }

    fn compose(&self, c: &Confirmation<'_>) -> Result<Message, EmailError> {
        let to = Mailbox::new(
            Some(c.name.to_string()),
            c.to.parse()
                .map_err(|e| EmailError::Message(format!("recipient: {e}")))?,
        );
        let mut body = format!(
            "Hello {},\n\nthank you for your order #{}. We have received your payment.\n\n",
            c.name, c.order_id
        );
        for line in &c.lines {
            body.push_str(&format!(
                "  {} x {} at {:.2} = {:.2}\n",
                line.quantity,
                line.product_name,
                line.unit_price,
                line.unit_price * Decimal::from(line.quantity)
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
