//! A minimal but real SMTP server: the app's mailer talks to it over TCP, and the test
//! reads what it was sent.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A captured e-mail: the SMTP envelope and the raw message.
#[derive(Debug, Clone)]
pub struct CapturedMail {
    pub recipients: Vec<String>,
    pub data: String,
}

impl CapturedMail {
    /// The message's `Message-ID` header (empty if it has none).
    pub fn message_id(&self) -> String {
        self.header("Message-ID").unwrap_or_default()
    }

    /// The value of a header of the message (the first, unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.data
            .lines()
            .take_while(|line| !line.is_empty())
            .find(|line| line.to_ascii_lowercase().starts_with(&prefix))
            .map(|line| line[prefix.len()..].trim().to_string())
    }
}

/// A minimal but real SMTP server on a free port, recording every message it accepts.
pub struct SmtpCapture {
    pub port: u16,
    messages: Arc<Mutex<Vec<CapturedMail>>>,
    /// How long it takes to acknowledge a message it has received (a slow server).
    acknowledge_after_ms: Arc<AtomicU64>,
    /// Sent to make every open connection hang up, as a server's idle timeout does:
    /// whether to say `421` first.
    hang_up: watch::Sender<HangUp>,
    open_connections: Arc<AtomicUsize>,
    accepted_connections: Arc<AtomicUsize>,
}

/// How the server ends its connections when told to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangUp {
    /// Not yet told to.
    No,
    /// `421` first, as a server whose idle timeout ran out.
    With421,
    /// A bare close (FIN), as a server that stops.
    Silently,
}

impl SmtpCapture {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind smtp");
        let port = listener.local_addr().expect("smtp addr").port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let acknowledge_after_ms = Arc::new(AtomicU64::new(0));
        let (hang_up, _) = watch::channel(HangUp::No);
        let open_connections = Arc::new(AtomicUsize::new(0));
        let accepted_connections = Arc::new(AtomicUsize::new(0));
        let (sink, delay) = (messages.clone(), acknowledge_after_ms.clone());
        let (hang_ups, open) = (hang_up.clone(), open_connections.clone());
        let accepted = accepted_connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // Subscribed before it counts as open: a hang-up sent from now on reaches it.
                let hang_up = hang_ups.subscribe();
                open.fetch_add(1, Ordering::SeqCst);
                accepted.fetch_add(1, Ordering::SeqCst);
                let (sink, delay, open) = (sink.clone(), delay.clone(), open.clone());
                tokio::spawn(async move {
                    serve_smtp(stream, sink, delay, hang_up).await;
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            port,
            messages,
            acknowledge_after_ms,
            hang_up,
            open_connections,
            accepted_connections,
        }
    }

    /// How many connections the server has accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.accepted_connections.load(Ordering::SeqCst)
    }

    /// Every open connection is closed, `how` the server says, as an idle timeout
    /// would close one waiting for its next command; returns once all of them are. For
    /// a test with no e-mail under way: one in the middle of a message is ended too.
    pub async fn hang_up_connections(&self, how: HangUp) {
        self.hang_up.send_replace(how);
        for _ in 0..500 {
            if self.open_connections.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the SMTP server's connections did not close");
    }

    pub fn messages(&self) -> Vec<CapturedMail> {
        self.messages.lock().expect("smtp lock").clone()
    }

    /// From now on, a message is kept at once but acknowledged (`250`) only after
    /// `delay`: the sender has sent it and does not know yet.
    pub fn acknowledge_after(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.acknowledge_after_ms.store(millis, Ordering::Relaxed);
    }
}

async fn serve_smtp(
    stream: tokio::net::TcpStream,
    sink: Arc<Mutex<Vec<CapturedMail>>>,
    acknowledge_after_ms: Arc<AtomicU64>,
    mut hang_up: watch::Receiver<HangUp>,
) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut recipients = Vec::new();
    let _ = write.write_all(b"220 smtp.test ESMTP ready\r\n").await;
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line,
            _ = hang_up.changed() => {
                if *hang_up.borrow() == HangUp::With421 {
                    let _ = write.write_all(b"421 smtp.test closing idle connection\r\n").await;
                }
                return;
            }
        };
        let Ok(Some(line)) = line else { return };
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250 smtp.test\r\n",
            "MAIL" => {
                recipients.clear();
                b"250 OK\r\n"
            }
            "RCPT" => {
                recipients.push(
                    line[line.find(':').map_or(0, |i| i + 1)..]
                        .trim()
                        .to_string(),
                );
                b"250 OK\r\n"
            }
            "DATA" => {
                let _ = write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await;
                let mut data = String::new();
                while let Ok(Some(body_line)) = lines.next_line().await {
                    if body_line == "." {
                        break;
                    }
                    data.push_str(&body_line);
                    data.push('\n');
                }
                sink.lock().expect("smtp lock").push(CapturedMail {
                    recipients: std::mem::take(&mut recipients),
                    data,
                });
                let delay = acknowledge_after_ms.load(Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                b"250 OK queued\r\n"
            }
            "RSET" | "NOOP" => b"250 OK\r\n",
            "QUIT" => {
                let _ = write.write_all(b"221 bye\r\n").await;
                return;
            }
            _ => b"502 command not implemented\r\n",
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}
