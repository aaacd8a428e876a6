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
//! lettre#1159, not yet released). Idle connections are kept for the next message.
//! Before reuse one is looked at, not asked: a non-blocking peek at its socket shows
//! whether the server has closed it (or said something unasked, like a `421` before
//! closing), as an HTTP client's pool checks its idle connections. A NOOP, as lettre's
//! own pool sends, would cost one of the conversation's five round trips per e-mail.

use std::future::Future;
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
use crate::domain::{Customer, Dependency, LineItem};
use crate::live_settings::LiveSettings;
use crate::resilience::{Refusal, Rungs};
use crate::telemetry::metrics::EMAIL_SEND_DURATION;

#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("the mail server is unavailable (injected outage)")]
    InjectedOutage,
    #[error("the mail server did not answer within {0:?}")]
    Timeout(Duration),
    /// A rung answered for the mail server: its timeout gave the call up, or its
    /// circuit breaker is open.
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("cannot connect to the mail server: {0}")]
    Connect(#[from] std::io::Error),
    #[error("SMTP error: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("cannot build the message: {0}")]
    Message(String),
    /// Whether the e-mail was still wanted could not be found out (the database away).
    #[error("cannot tell whether the e-mail is still wanted: {0}")]
    Check(String),
}

/// What the confirmation says.
pub struct Confirmation<'a> {
    pub to: &'a Customer,
    pub order_id: i64,
    pub items: Vec<LineItem>,
    pub total: Decimal,
}

/// What the notice of a cancelled order says.
pub struct Cancellation<'a> {
    pub to: &'a Customer,
    pub order_id: i64,
    pub total: Decimal,
    /// The amount given back and the gateway's transaction, if the order was paid.
    pub refund: Option<(Decimal, &'a str)>,
}

/// The e-mails the shop sends about an order.
pub enum Email<'a> {
    Confirmation(Confirmation<'a>),
    Cancellation(Cancellation<'a>),
}

impl Email<'_> {
    fn order_id(&self) -> i64 {
        match self {
            Self::Confirmation(c) => c.order_id,
            Self::Cancellation(c) => c.order_id,
        }
    }

    /// What the message is about, in its `Message-ID`.
    fn topic(&self) -> &'static str {
        match self {
            Self::Confirmation(_) => "confirmation",
            Self::Cancellation(_) => "cancellation",
        }
    }
}

/// Idle SMTP connections kept for reuse; beyond this many, a finished one is closed.
const MAX_IDLE_CONNECTIONS: usize = 64;

/// An SMTP connection, with a second handle on its socket to look at it while it is idle.
struct SmtpConnection {
    smtp: AsyncSmtpConnection,
    /// The same socket as `smtp`'s stream (a duplicate descriptor, non-blocking like
    /// tokio's): both are dropped together, so the socket closes when the connection does.
    socket: std::net::TcpStream,
}

impl SmtpConnection {
    /// Whether the server has left the connection open and silent since its last answer:
    /// a peek that would block. End of stream means it closed the connection; bytes mean
    /// it spoke unasked (a `421` as it shuts down); either way the connection is done.
    /// (A `421` that came in one read with the last answer sits in lettre's buffer,
    /// where no peek sees it: the next MAIL then fails, as after any unseen close.)
    fn still_open(&self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.socket.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

#[derive(Clone)]
pub struct Mailer {
    hello: ClientId,
    idle: Arc<Mutex<Vec<SmtpConnection>>>,
    from: Mailbox,
    host: String,
    port: u16,
    timeout: Duration,
    live: LiveSettings,
    /// The mail server's timeout and breaker.
    rungs: Arc<Rungs>,
}

impl EmailError {
    /// Whether the mail server failed (what opens its breaker), rather than our message
    /// or our database.
    fn is_the_servers(&self) -> bool {
        matches!(
            self,
            Self::InjectedOutage | Self::Timeout(_) | Self::Connect(_) | Self::Smtp(_)
        )
    }
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
            rungs: Arc::new(Rungs::new(Dependency::MailServer)),
        })
    }

    /// Asked by the blocking checkout before it charges: refused at once while the mail
    /// server's breaker is open (or its probes are all out), rather than take money for
    /// an order the e-mail would then lose; half-open, the checkout keeps a probe's place.
    /// With the fallback on there is nothing to refuse: a refused e-mail is queued.
    pub fn reserve(&self) -> Result<(), EmailError> {
        let policy = self.live.resilience().email;
        if policy.fallback {
            return Ok(());
        }
        Ok(self.rungs.reserve(policy)?)
    }

    /// Whether a confirmation the mail server failed is to be queued (the fallback).
    pub fn falls_back(&self) -> bool {
        self.live.resilience().email.fallback
    }

    /// Sends `email` through the (slow) mail server.
    pub async fn send(&self, email: &Email<'_>) -> Result<(), EmailError> {
        self.send_if(email, async { Ok(true) }).await.map(|_| ())
    }

    /// Sends `email` unless `still_wanted`, asked once the slow server is ready to take
    /// the message, says no: an e-mail that became wrong while the server kept us
    /// waiting (its order was cancelled meanwhile) is not sent. Returns whether it was.
    pub async fn send_if(
        &self,
        email: &Email<'_>,
        still_wanted: impl Future<Output = Result<bool, EmailError>>,
    ) -> Result<bool, EmailError> {
        let span = tracing::info_span!(
            "smtp.send",
            otel.kind = "client",
            server.address = %self.host,
            server.port = self.port,
            messaging.message.id = %self.message_id(email),
            order.id = email.order_id(),
            email.sent = tracing::field::Empty,
            resilience.timed_out = tracing::field::Empty,
            resilience.breaker = tracing::field::Empty,
            resilience.attempts = tracing::field::Empty,
            resilience.retry_budget = tracing::field::Empty,
        );
        let started = Instant::now();
        let policy = self.live.resilience().email;
        // Asked once, by the first attempt that gets that far; a retry after it failed
        // to deliver does not ask again.
        let still_wanted = Mutex::new(Some(Box::pin(still_wanted)));
        let conversation = || async {
            let settings = self.live.faults();
            if settings.email_hang {
                // Accepted, never answered: only the client's own bound ends the wait.
                tokio::time::sleep(self.timeout).await;
                return Err(EmailError::Timeout(self.timeout));
            }
            // The slow mail server of the lesson.
            tokio::time::sleep(settings.email_delay).await;
            if settings.email_outage {
                return Err(EmailError::InjectedOutage);
            }
            let check = still_wanted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(check) = check
                && !check.await?
            {
                tracing::Span::current().record("email.sent", false);
                return Ok(false);
            }
            let message = self.compose(email)?;
            tokio::time::timeout(self.timeout, self.deliver(&message))
                .await
                .map_err(|_| EmailError::Timeout(self.timeout))??;
            tracing::Span::current().record("email.sent", true);
            Ok(true)
        };
        let result = async {
            let failed = |answer: &Result<bool, EmailError>| {
                answer.as_ref().is_err_and(EmailError::is_the_servers)
            };
            self.rungs
                .call(policy, failed, conversation)
                .await
                .unwrap_or_else(|refusal| Err(refusal.into()))
        }
        .instrument(span)
        .await;
        let outcome = match result {
            Ok(true) => "sent",
            Ok(false) => "not_wanted",
            Err(_) => "failed",
        };
        histogram!(EMAIL_SEND_DURATION, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// MAIL, RCPT, DATA on an idle connection the server has not closed, or on a new one.
    async fn deliver(&self, message: &Message) -> Result<(), EmailError> {
        let mut connection = match self.take_open_idle() {
            Some(idle) => idle,
            None => self.connect().await?,
        };
        connection
            .smtp
            .send(message.envelope(), &message.formatted())
            .await?;
        self.keep_idle(connection);
        Ok(())
    }

    /// Plain SMTP, as MailHog and Mailpit speak it; a production relay would add
    /// STARTTLS and AUTH.
    async fn connect(&self) -> Result<SmtpConnection, EmailError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port)).await?;
        stream.set_nodelay(true)?;
        // A second handle on the same socket, kept to look at it while it is idle
        // (lettre's connection owns the stream and offers no look of its own).
        let stream = stream.into_std()?;
        let socket = stream.try_clone()?;
        let stream = TcpStream::from_std(stream)?;
        let smtp =
            AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello).await?;
        Ok(SmtpConnection { smtp, socket })
    }

    /// The most recently used idle connection the server has not closed; those it
    /// closed (its idle timeout, a restart) are dropped on the way.
    fn take_open_idle(&self) -> Option<SmtpConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(connection) = idle.pop() {
            if connection.still_open() {
                return Some(connection);
            }
        }
        None
    }

    fn keep_idle(&self, connection: SmtpConnection) {
        let mut surplus = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE_CONNECTIONS {
                idle.push(connection);
                return;
            }
            connection
        };
        // Said goodbye in the background: the e-mail is delivered, and a slow QUIT
        // inside the send's timeout would report it as failed.
        tokio::spawn(async move {
            let _ = surplus.smtp.quit().await;
        });
    }

    /// The same for every send of one e-mail, so that a copy a crash causes (a worker
    /// dying after the send, before it wrote it down) is recognisable as one by any mail
    /// client: `<order-42.confirmation@shop.example.com>`.
    fn message_id(&self, email: &Email<'_>) -> String {
        format!(
            "<order-{}.{}@{}>",
            email.order_id(),
            email.topic(),
            self.from.email.domain()
        )
    }

    fn compose(&self, email: &Email<'_>) -> Result<Message, EmailError> {
        let (customer, subject, body) = match email {
            Email::Confirmation(c) => (
                c.to,
                format!("Order #{} confirmed", c.order_id),
                confirmation_text(c),
            ),
            Email::Cancellation(c) => (
                c.to,
                format!("Order #{} cancelled", c.order_id),
                cancellation_text(c),
            ),
        };
        let to = Mailbox::new(
            Some(customer.name.clone()),
            customer
                .email
                .parse()
                .map_err(|e| EmailError::Message(format!("recipient: {e}")))?,
        );
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .message_id(Some(self.message_id(email)))
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| EmailError::Message(e.to_string()))
    }
}

fn confirmation_text(c: &Confirmation<'_>) -> String {
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
    body
}

fn cancellation_text(c: &Cancellation<'_>) -> String {
    let money = match c.refund {
        Some((amount, transaction)) => format!(
            "Your payment of {amount:.2} has been refunded.\n\
             Refund of transaction: {transaction}\n"
        ),
        None => "Nothing was charged for it.\n".to_string(),
    };
    format!(
        "Hello {},\n\nyour order #{} over {:.2} has been cancelled.\n{money}\nOrder id: {}\n",
        c.to.name, c.order_id, c.total, c.order_id
    )
}
