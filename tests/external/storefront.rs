//! The storefront at `/`, proven in a real browser: Debian's Chromium, driven over
//! WebDriver (chromedriver) from here. A customer signs in with one click, fills a cart,
//! and checks out — blocking (the timer ticks; the waterfall of the steps comes from the
//! response's `Server-Timing`) and asynchronous (the order number at once, its status
//! followed without a reload). The trace starts in the browser: its span is the parent
//! of the server's, at a real OTLP receiver. Refusals show the problem's title, product
//! names stay text, and the console stays clean. A screenshot of each state is kept in
//! the target directory (`storefront/`), and each state is judged by axe-core: no
//! accessibility violation of impact serious or critical.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_EMAIL, ADMIN_PASSWORD, CHECKOUT_STEPS, TestApp, closed_port, eventually, expect_json,
    traced_app,
};
use crate::otlp::OtlpReceiver;
use crate::require::{missing, tool_available};

const WAIT: Duration = Duration::from_secs(20);

/// Chromium under chromedriver, both killed when dropped.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
    _profile: TempProfile,
    shots: PathBuf,
}

struct TempProfile(PathBuf);

impl Drop for TempProfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The browser's console, through chromedriver's log endpoint (not in the W3C protocol).
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(r#"{"type":"browser"}"#.to_string()),
        )
    }
}

impl Browser {
    async fn start(name: &str) -> Self {
        let port = closed_port().await;
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver (Debian package chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        eventually(WAIT, "chromedriver answering", || async {
            let status = reqwest::get(format!("{url}/status")).await.ok()?;
            status.status().is_success().then_some(())
        })
        .await;
        let profile =
            TempProfile(std::env::temp_dir().join(format!("chromium-{}", uuid::Uuid::new_v4())));
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.0.display()),
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        // Two TLS backends are in the dependency graph; rustls must be told which (the
        // session is plain HTTP to 127.0.0.1 anyway).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = ClientBuilder::rustls()
            .expect("a TLS config")
            .capabilities(capabilities.as_object().cloned().unwrap_or_default())
            .connect(&url)
            .await
            .expect("a WebDriver session");
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("storefront");
        std::fs::create_dir_all(&shots).expect("screenshot folder");
        let _ = name;
        Browser {
            client,
            _driver: driver,
            _profile: profile,
            shots,
        }
    }

    fn by_testid(id: &str) -> String {
        format!("[data-testid=\"{id}\"]")
    }

    async fn click(&self, testid: &str) {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(&Self::by_testid(testid)))
            .await
            .unwrap_or_else(|e| panic!("{testid}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {testid}: {e}"));
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Waits until `script` returns something truthy other than `false`; returns it.
    async fn until(&self, what: &str, script: &str) -> Value {
        eventually(WAIT, what, || async {
            let value = self.client.execute(script, Vec::new()).await.ok()?;
            let truthy = !matches!(value, Value::Null | Value::Bool(false))
                && value != json!("")
                && value != json!(0);
            truthy.then_some(value)
        })
        .await
    }

    /// A browser on the shop at `address`, once the page has settled.
    async fn open(name: &str, address: &str) -> Self {
        let browser = Self::start(name).await;
        browser.client.goto(address).await.expect("open the shop");
        browser.idle().await;
        browser
    }

    /// Waits until no request or user action of the page is under way.
    async fn idle(&self) {
        self.until(
            "the page idle",
            "return document.body.dataset.busy === 'false';",
        )
        .await;
    }

    /// Waits until the element is scrolled into view (its top on the screen).
    async fn in_view(&self, testid: &str) {
        let script = format!(
            "const e = document.querySelector('{}');
             if (!e) return false;
             const top = e.getBoundingClientRect().top;
             return top >= -1 && top < innerHeight / 2;",
            Self::by_testid(testid)
        );
        self.until(&format!("{testid} in view"), &script).await;
    }

    /// Keeps a picture of the state the page is in, and has axe-core judge it.
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        println!("screenshot: {}", path.display());
        self.accessible(name).await;
    }

    /// axe-core on the page as it is now: no violation of impact serious or critical.
    async fn accessible(&self, state: &str) {
        let Some(axe) = axe_core() else { return };
        self.client
            .execute(axe, Vec::new())
            .await
            .expect("axe-core loads into the page");
        let found = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { resultTypes: ['violations'] })
                   .then(r => done(r.violations
                     .filter(v => v.impact === 'serious' || v.impact === 'critical')
                     .map(v => `${v.impact} ${v.id}: ${v.help} (${v.nodes.length}x, e.g. ${v.nodes[0].target.join(' ')})`)))
                   .catch(e => done([`axe-core failed: ${e}`]));",
                Vec::new(),
            )
            .await
            .expect("axe-core runs");
        assert_eq!(found, json!([]), "accessibility of {state}");
    }

    /// The console messages of level WARNING or SEVERE since the last call.
    async fn console_problems(&self) -> Vec<String> {
        let log = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .expect("browser log");
        log.as_array()
            .into_iter()
            .flatten()
            .filter(|entry| matches!(entry["level"].as_str(), Some("WARNING" | "SEVERE")))
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// axe-core's script (`AXE_CORE_JS`, or where `.ci/run` installs it), read once; `None`
/// (said, or failed under CI) when it is not there.
fn axe_core() -> Option<&'static str> {
    static SOURCE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    SOURCE
        .get_or_init(|| {
            let path = std::env::var("AXE_CORE_JS").unwrap_or_else(|_| {
                let home = std::env::var("HOME").unwrap_or_default();
                format!("{home}/.cache/ecommerce-monolith/npm/node_modules/axe-core/axe.min.js")
            });
            let source = std::fs::read_to_string(&path).ok();
            if source.is_none() {
                missing(
                    &format!("axe-core is not at {path}"),
                    "npm install --prefix ~/.cache/ecommerce-monolith/npm axe-core@4",
                );
            }
            source
        })
        .as_deref()
}

fn browser_available() -> bool {
    tool_available("chromium", "apt-get install chromium")
        && tool_available("chromedriver", "apt-get install chromium-driver")
}

/// The admin, through the API: the lab's switches.
async fn admin_put(app: &TestApp, path: &str, body: Value) {
    let admin = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    expect_json(app.put(path, Some(&admin), &body).await, StatusCode::OK).await;
}

/// The ids of the cards' products as the page shows them, with the stock they show.
async fn products_on_the_page(browser: &Browser) -> Vec<(i64, i64)> {
    let cards = browser
        .eval(
            "return [...document.querySelectorAll('[data-testid=product-card]')]
               .map(c => [Number(c.dataset.productId), Number(c.dataset.stock)]);",
        )
        .await;
    serde_json::from_value(cards).expect("cards")
}

async fn add_to_cart(browser: &Browser, product: i64) {
    let button = format!(
        "[data-testid=product-card][data-product-id=\"{product}\"] [data-testid=add-to-cart]"
    );
    browser
        .client
        .find(Locator::Css(&button))
        .await
        .expect("the product's button")
        .click()
        .await
        .expect("click");
    browser.idle().await;
}

async fn see_the_cart_line(browser: &Browser) {
    browser
        .until(
            "the cart line",
            "return document.querySelectorAll('[data-testid=cart-line]').length;",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_feels_the_blocking_checkout_then_the_cure_and_the_trace_starts_at_the_click() {
    if !browser_available() {
        return;
    }
    let receiver = OtlpReceiver::start().await;
    let browser_traces = format!("{}/v1/traces", receiver.endpoint());
    let app = traced_app(
        &receiver,
        &[
            ("PAYMENT_DELAY_MS", "400"),
            ("EMAIL_DELAY_MS", "800"),
            ("STOREFRONT_OTLP_TRACES_URL", browser_traces.as_str()),
            ("OTEL_SERVICE_NAME", "ecommerce-monolith"),
        ],
    )
    .await;
    app.seed().await;
    let browser = Browser::open("checkout", &app.address).await;
    browser.screenshot("01-start").await;

    // One click: the demo customer.
    browser.click("demo-signin").await;
    let signed_in = browser
        .until(
            "signed in",
            "return document.querySelector('[data-testid=signed-in-as]').textContent;",
        )
        .await;
    assert!(
        signed_in.as_str().unwrap().contains("demo@example.com"),
        "{signed_in}"
    );
    browser.idle().await;
    browser.screenshot("02-signed-in").await;

    let (kettle, _) = products_on_the_page(&browser)
        .await
        .into_iter()
        .find(|(_, stock)| *stock > 10)
        .expect("a product in stock");
    add_to_cart(&browser, kettle).await;
    see_the_cart_line(&browser).await;
    browser.screenshot("03-in-cart").await;

    // Blocking: the timer ticks while the customer waits ~1.2 s.
    browser.click("checkout-button").await;
    let ticking = browser
        .until(
            "the timer past 0.3 s",
            "const t = document.querySelector('[data-testid=checkout-timer]');
             const waiting = document.querySelector('[data-testid=checkout-waiting]');
             const s = parseFloat(t.textContent);
             return !waiting.hidden && s >= 0.3 ? t.textContent : false;",
        )
        .await;
    // The checkout button is disabled while the customer waits: the focus is on the one
    // thing they can do, not lost to the page's body.
    assert_eq!(
        browser.eval("return document.activeElement.id;").await,
        json!("stop-waiting")
    );
    browser.screenshot("04-waiting").await;
    let confirmation = browser
        .until(
            "the confirmation",
            "const c = document.querySelector('[data-testid=order-confirmation]');
             return c && c.dataset.status === 'confirmed' ? c.dataset.orderId : false;",
        )
        .await;
    browser.idle().await;
    // Unlike the original's page, the answer comes into view by itself.
    browser.in_view("order-confirmation").await;
    browser.screenshot("05-confirmed").await;
    println!("the timer read {ticking} while the customer waited");
    let order_id: i64 = confirmation.as_str().unwrap().parse().expect("an order id");
    let number = browser
        .eval("return document.querySelector('[data-testid=order-number]').textContent;")
        .await;
    assert_eq!(number, json!(order_id.to_string()));
    let bars: Vec<(String, f64, bool)> = serde_json::from_value(
        browser
            .eval(
                "return [...document.querySelectorAll('[data-testid=waterfall-bar]')]
                   .map(b => [b.dataset.step, Number(b.dataset.ms), b.dataset.remote === 'true']);",
            )
            .await,
    )
    .expect("bars");
    let steps: Vec<&str> = bars.iter().map(|(step, ..)| step.as_str()).collect();
    assert_eq!(steps, CHECKOUT_STEPS, "every step and the commit, in order");
    let mut by_length = bars.clone();
    by_length.sort_by(|a, b| b.1.total_cmp(&a.1));
    let longest: Vec<&str> = by_length[..2].iter().map(|(s, ..)| s.as_str()).collect();
    assert_eq!(longest, ["send_email", "process_payment"], "{bars:?}");
    assert!(
        by_length[..2].iter().all(|(_, _, remote)| *remote),
        "marked as remote calls"
    );
    let trace_id = browser
        .eval("return document.querySelector('[data-testid=order-confirmation] [data-testid=trace-id]').textContent;")
        .await
        .as_str()
        .expect("the trace id")
        .to_string();
    assert_eq!(trace_id.len(), 32, "{trace_id}");
    // No Jaeger or Grafana answers here: the page offers no link to them.
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('[data-testid=trace-link], [data-testid=grafana-link], li:not([hidden]) > #jaeger-about').length;")
            .await,
        json!(0)
    );

    // The trace began in the browser: the server's span is the child of the page's.
    let spans = receiver
        .wait_for_trace(&trace_id, "POST /api/orders/checkout")
        .await;
    let server = spans
        .iter()
        .find(|s| s.name == "POST /api/orders/checkout")
        .expect("the server span");
    let parent = eventually(WAIT, "the browser's span of the checkout call", || {
        let found = receiver
            .spans()
            .into_iter()
            .find(|s| s.span_id == server.parent_span_id && s.trace_id == trace_id);
        std::future::ready(found)
    })
    .await;
    assert_eq!(
        parent.resource.get("service.name").map(String::as_str),
        Some("storefront")
    );
    assert_eq!(
        server.resource.get("service.name").map(String::as_str),
        Some("ecommerce-monolith")
    );

    // The cure: the same click, asynchronous. The order number comes before the
    // payment (1.5 s) could have been made; the status follows without a reload.
    admin_put(&app, "/api/admin/checkout-mode", json!({"mode": "async"})).await;
    admin_put(&app, "/api/admin/faults", json!({"payment_delay_ms": 1500})).await;
    browser
        .eval("window.stillTheSamePage = true; return true;")
        .await;
    add_to_cart(&browser, kettle).await;
    see_the_cart_line(&browser).await;
    let clicked = Instant::now();
    browser.click("checkout-button").await;
    let accepted = browser
        .until(
            "the accepted order",
            "const c = document.querySelector('[data-testid=order-confirmation]');
             return c && c.dataset.orderId !== '' && c.dataset.status === 'pending'
               ? c.dataset.orderId : false;",
        )
        .await;
    let accepted_after = clicked.elapsed();
    browser.in_view("order-confirmation").await;
    browser.screenshot("06-async-accepted").await;
    assert_ne!(accepted, confirmation, "a new order");
    assert!(
        accepted_after < Duration::from_millis(1500),
        "the order number before the payment could be made: {accepted_after:?}"
    );
    browser
        .until(
            "the async order confirmed",
            "const c = document.querySelector('[data-testid=order-confirmation]');
             return c.dataset.status === 'confirmed'
               && document.querySelector('[data-testid=time-to-confirmed]').textContent;",
        )
        .await;
    assert_eq!(
        browser
            .eval("return window.stillTheSamePage === true;")
            .await,
        json!(true),
        "no reload"
    );
    browser.idle().await;
    browser.in_view("order-confirmation").await;
    browser.screenshot("07-async-confirmed").await;

    // The work after the answer, followed to the e-mail, on the blocking wait's axis:
    // the answer first, then the payment (1.5 s) and the e-mail after it — both marked
    // "after your answer" — and the last blocking checkout as the reference row.
    let lane = browser
        .until(
            "the order's timeline to its e-mail",
            "const t = document.querySelector('[data-testid=timeline][data-settled=true]');
             if (!t) return false;
             const row = (id) => [...t.querySelectorAll(`[data-testid=${id}]`)]
               .map(r => [r.querySelector('.wf-step').textContent, Number(r.dataset.ms),
                          r.classList.contains('after')]);
             return [row('timeline-reference'), row('timeline-answer'), row('timeline-event')];",
        )
        .await;
    type Lane = Vec<(String, f64, bool)>;
    let (reference, answer, events): (Lane, Lane, Lane) =
        serde_json::from_value(lane).expect("the lane");
    assert_eq!(
        reference.len(),
        1,
        "the last blocking checkout: {reference:?}"
    );
    let answered = answer.first().map(|a| a.1).expect("the answer's row");
    let at = |name: &str| events.iter().find(|e| e.0 == name).cloned();
    let charged = at("charged").expect("charged");
    let sent = at("email sent").expect("email sent");
    assert!(
        charged.1 >= 1500.0 && charged.2,
        "{charged:?} after {answered} ms"
    );
    assert!(sent.1 > charged.1 && sent.2, "{sent:?}");
    assert!(answered < charged.1, "the answer before the payment");
    browser
        .eval("document.querySelector('[data-testid=timeline]').scrollIntoView({ block: 'center' }); return true;")
        .await;
    browser.screenshot("07b-async-timeline").await;
    let modes = browser
        .eval(
            "return [...document.querySelectorAll('[data-testid=history-row]')]
               .map(r => r.dataset.mode);",
        )
        .await;
    assert_eq!(
        modes,
        json!(["async", "blocking"]),
        "both checkouts, newest first"
    );
    browser
        .client
        .execute(
            "document.getElementById('history').scrollIntoView(); return true;",
            vec![],
        )
        .await
        .expect("scroll");
    browser.screenshot("08-history").await;

    let problems = browser.console_problems().await;
    assert!(problems.is_empty(), "the console: {problems:#?}");
    let _ = browser.client.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_show_their_problem_and_product_names_stay_text() {
    if !browser_available() {
        return;
    }
    let receiver = OtlpReceiver::start().await;
    let app = traced_app(&receiver, &[]).await;
    app.seed().await;
    let admin = app.admin_token().await;
    let hostile = "<img src=x onerror=alert(1)>";
    let last_one = app.create_product(&admin, hostile, "9.99", 1).await;

    let browser = Browser::open("refusals", &app.address).await;
    browser.click("demo-signin").await;
    browser.idle().await;
    let search = browser
        .client
        .find(Locator::Css("[data-testid=search]"))
        .await
        .expect("search");
    search.send_keys("onerror").await.expect("type");
    browser
        .until(
            "only the hostile product",
            "const cards = document.querySelectorAll('[data-testid=product-card]');
             return document.body.dataset.busy === 'false' && cards.length === 1;",
        )
        .await;

    // Text, not markup: the name reads as typed, and no image was made of it.
    let name = browser
        .eval("return document.querySelector('[data-testid=product-name]').textContent;")
        .await;
    assert_eq!(name, json!(hostile));
    let images = browser
        .eval("return document.querySelectorAll('[data-testid=product-card] img').length;")
        .await;
    assert_eq!(images, json!(0));
    assert!(
        browser.client.get_alert_text().await.is_err(),
        "no script ran: no alert"
    );

    // The last one, twice: the second add is refused, and the page says why.
    add_to_cart(&browser, last_one).await;
    add_to_cart(&browser, last_one).await;
    // In the customer's words, with the products short of stock; the server's own
    // title and detail under Technical detail.
    let shown = browser
        .until(
            "the problem shown",
            "const p = document.querySelector('[data-testid=problem]');
             return p && [p.querySelector('[data-testid=problem-headline]').textContent,
                          p.querySelector('[data-testid=problem-lines]').textContent,
                          p.querySelector('[data-testid=problem-technical] [data-testid=problem-title]').textContent,
                          p.querySelector('[data-testid=problem-technical] [data-testid=problem-detail]').textContent];",
        )
        .await;
    assert_eq!(shown[0], json!("Not enough in stock"), "{shown}");
    assert!(
        shown[1]
            .as_str()
            .is_some_and(|lines| lines.contains("1 available")),
        "{shown}"
    );
    assert_eq!(shown[2], json!("Insufficient Stock"), "{shown}");
    assert!(
        shown[3].as_str().is_some_and(|detail| !detail.is_empty()),
        "{shown}"
    );
    browser.screenshot("09-refused").await;

    // Only the browser's own line about the refused request (409), nothing of the page.
    let problems: Vec<String> = browser
        .console_problems()
        .await
        .into_iter()
        .filter(|message| !message.contains("the server responded with a status of 409"))
        .collect();
    assert!(problems.is_empty(), "the console: {problems:#?}");
    let _ = browser.client.close().await;
}

/// The ladder of cures in the customer's answer: a payment retried is each attempt
/// drawn inside `process_payment` and told in words; with the mail server down and its
/// fallback on, the order is confirmed and the answer says the e-mail is queued.
#[tokio::test(flavor = "multi_thread")]
async fn the_answer_shows_each_attempt_of_a_retried_payment_and_a_queued_email() {
    if !browser_available() {
        return;
    }
    let receiver = OtlpReceiver::start().await;
    let app = traced_app(
        &receiver,
        &[("PAYMENT_DELAY_MS", "200"), ("EMAIL_DELAY_MS", "200")],
    )
    .await;
    app.seed().await;
    admin_put(&app, "/api/admin/faults", json!({"payment_flap_rate": 1.0})).await;
    admin_put(
        &app,
        "/api/admin/resilience",
        json!({"payment": {"retries": 2, "retry_backoff_ms": 100}}),
    )
    .await;

    let browser = Browser::open("ladder", &app.address).await;
    browser.click("demo-signin").await;
    browser.idle().await;
    let (product, _) = products_on_the_page(&browser)
        .await
        .into_iter()
        .find(|(_, stock)| *stock > 10)
        .expect("a product in stock");
    add_to_cart(&browser, product).await;
    see_the_cart_line(&browser).await;

    // The gateway fails every call: three attempts, each drawn, the last after the
    // longest backoff, and the answer says what happened.
    browser.click("checkout-button").await;
    let rungs = browser
        .until(
            "the attempts in the waterfall",
            "const r = [...document.querySelectorAll('[data-testid=waterfall-rung]')];
             return r.length >= 3 && r.map(b => [b.dataset.step, Number(b.dataset.ms)]);",
        )
        .await;
    let rungs: Vec<(String, f64)> = serde_json::from_value(rungs).expect("rungs");
    assert_eq!(rungs.len(), 3, "{rungs:?}");
    assert!(
        rungs
            .iter()
            .all(|(step, ms)| step == "payment_gateway.attempt" && *ms >= 150.0),
        "{rungs:?}"
    );
    let note = browser
        .eval("return document.querySelector('[data-testid=rungs-note]').textContent;")
        .await;
    assert!(
        note.as_str().is_some_and(|n| n.contains("3 attempts")),
        "{note}"
    );
    browser
        .eval("document.getElementById('checkout-result').scrollIntoView(); return true;")
        .await;
    let words = browser
        .eval(
            "const p = document.querySelector('#checkout-problem [data-testid=problem]');
             return [p.querySelector('[data-testid=problem-headline]').textContent,
                     p.querySelector('[data-testid=problem-technical] [data-testid=problem-title]').textContent];",
        )
        .await;
    assert_eq!(
        words,
        json!([
            "The shop could not finish your checkout just now",
            "Service Unavailable"
        ])
    );
    browser.screenshot("12-retried-attempts").await;

    // The gateway is back, the mail server down, no fallback: the customer is told, in
    // their words and with the currency, that the money was taken and no order made.
    admin_put(
        &app,
        "/api/admin/faults",
        json!({"payment_flap_rate": 0.0, "email_outage": true}),
    )
    .await;
    admin_put(
        &app,
        "/api/admin/resilience",
        json!({"payment": {"retries": 0}}),
    )
    .await;
    browser.click("checkout-button").await;
    let told = browser
        .until(
            "the mail outage told to the customer",
            "const p = document.querySelector('#checkout-problem [data-testid=problem][data-type$=email-failed]');
             return p && [p.querySelector('[data-testid=problem-headline]').textContent,
                          p.querySelector('[data-testid=problem-money]').textContent];",
        )
        .await;
    let told: (String, String) = serde_json::from_value(told).expect("words");
    assert_eq!(told.0, "Your order could not be completed");
    assert!(
        told.1.starts_with("Your payment of $") && told.1.contains("was taken"),
        "{told:?}"
    );
    browser
        .eval("document.getElementById('checkout-problem').scrollIntoView({ block: 'center' }); return true;")
        .await;
    browser.screenshot("12b-mail-outage-told").await;

    // Its fallback on: confirmed, and the e-mail queued.
    admin_put(
        &app,
        "/api/admin/resilience",
        json!({"email": {"fallback": true}}),
    )
    .await;
    browser.click("checkout-button").await;
    browser
        .until(
            "the confirmation",
            "const c = document.querySelector('[data-testid=order-confirmation]');
             return c && c.dataset.status === 'confirmed';",
        )
        .await;
    browser.idle().await;
    let note = browser
        .eval("return document.querySelector('[data-testid=order-confirmation] [data-testid=rungs-note]').textContent;")
        .await;
    assert!(
        note.as_str()
            .is_some_and(|n| n.contains("e-mail is queued")),
        "{note}"
    );
    let queued = browser
        .eval("return [...document.querySelectorAll('[data-testid=waterfall-rung]')].map(b => b.dataset.step);")
        .await;
    assert_eq!(queued, json!(["mail_server.fallback"]));
    browser.in_view("order-confirmation").await;
    browser.screenshot("13-email-queued").await;

    // The header's mode chip opens the Lab: the customer reads what the shop runs with,
    // and whom to ask to change it; the controls are not theirs.
    browser.click("mode-chip").await;
    browser.in_view("lab-panel").await;
    let access = browser
        .until(
            "the settings in force, read-only",
            "const f = document.querySelector('[data-testid=resilience-form]');
             const a = document.querySelector('[data-testid=lab-access]').textContent;
             return f.elements['email.fallback'].checked && a.length > 0
               && [a, [...f.elements].every(e => e.disabled),
                   document.querySelector('[data-testid=mode-async]').disabled];",
        )
        .await;
    let access: (String, bool, bool) = serde_json::from_value(access).expect("access");
    assert!(
        access.0.starts_with("Read-only") && access.0.contains(ADMIN_EMAIL),
        "{access:?}"
    );
    assert!(
        access.1 && access.2,
        "the controls are disabled: {access:?}"
    );
    browser.screenshot("14-lab-read-only").await;

    // Asynchronous, and the card declined: a failure in the answer, and the items back
    // in the cart to try again.
    admin_put(&app, "/api/admin/checkout-mode", json!({"mode": "async"})).await;
    admin_put(
        &app,
        "/api/admin/faults",
        json!({"email_outage": false, "payment_success_rate": 0.0}),
    )
    .await;
    add_to_cart(&browser, product).await;
    see_the_cart_line(&browser).await;
    browser.click("checkout-button").await;
    browser
        .until(
            "the declined order, failed, its items back in the cart",
            "const c = document.querySelector('[data-testid=order-confirmation]');
             return c && c.dataset.status === 'payment_failed' && c.classList.contains('failed')
               && document.querySelectorAll('[data-testid=cart-line]').length > 0;",
        )
        .await;
    browser.in_view("order-confirmation").await;
    browser.screenshot("15-async-declined-cart-kept").await;
    // My orders says so too, not only by its status chip.
    let row = browser
        .until(
            "the declined order failed in My orders",
            "const r = document.querySelector('[data-testid=order-row][data-status=payment_failed]');
             return r && r.classList.contains('failed')
               && r.querySelector('[data-testid=order-failure]').textContent;",
        )
        .await;
    assert!(
        row.as_str()
            .is_some_and(|text| text.contains("nothing was charged")),
        "{row}"
    );
    browser
        .eval("document.querySelector('[data-testid=order-row][data-status=payment_failed]').scrollIntoView({ block: 'center' }); return true;")
        .await;
    browser.screenshot("16-my-orders-failed").await;

    // Only the browser's own lines about the refused requests (503, 502), nothing of
    // the page.
    let problems: Vec<String> = browser
        .console_problems()
        .await
        .into_iter()
        .filter(|message| {
            !message.contains("the server responded with a status of 503")
                && !message.contains("the server responded with a status of 502")
        })
        .collect();
    assert!(problems.is_empty(), "the console: {problems:#?}");
    let _ = browser.client.close().await;
}

/// While `lab run` plays an experiment, every visitor sees a banner with its title, the
/// phase and the time left, counting down; the admin's Lab panel lists the shipped
/// experiments with their questions and commands, the running one marked. The banner
/// goes when the run ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_running_experiment_shows_its_banner_and_the_lab_lists_the_experiments() {
    if !browser_available() {
        return;
    }
    let receiver = OtlpReceiver::start().await;
    let app = traced_app(&receiver, &[]).await;
    app.seed().await;
    admin_put(
        &app,
        "/api/admin/lab",
        json!({
            "experiment": "pool-exhaustion",
            "title": "Pool exhaustion: more checkouts than connections",
            "phase": "storm",
            "position": 1,
            "phases": 3,
            "seconds": 180,
        }),
    )
    .await;

    let browser = Browser::open("lab-banner", &app.address).await;
    let banner = "const b = document.querySelector('[data-testid=lab-banner]');
                  return b && !b.hidden && b.textContent.replace(/\\s+/g, ' ').trim();";
    let text = browser.until("the experiment's banner", banner).await;
    let text = text.as_str().expect("text").to_string();
    assert!(
        text.starts_with("Experiment Pool exhaustion: more checkouts than connections — phase storm (2 of 3), 2:5")
            || text.starts_with("Experiment Pool exhaustion: more checkouts than connections — phase storm (2 of 3), 3:00"),
        "{text}"
    );
    assert!(text.ends_with(" left"), "{text}");
    browser.screenshot("10-lab-banner").await;
    // It counts down between the page's polls.
    let counted_down = format!(
        "const b = document.querySelector('[data-testid=lab-banner]');
         return b && !b.hidden && b.textContent.replace(/\\s+/g, ' ').trim() !== {};",
        json!(text)
    );
    browser
        .until("the time left counting down", &counted_down)
        .await;

    // The admin's Lab panel: every shipped experiment, the running one marked.
    browser
        .client
        .find(Locator::Id("signin-email"))
        .await
        .expect("e-mail field")
        .send_keys(ADMIN_EMAIL)
        .await
        .expect("type");
    browser
        .client
        .find(Locator::Id("signin-password"))
        .await
        .expect("password field")
        .send_keys(ADMIN_PASSWORD)
        .await
        .expect("type");
    browser
        .client
        .find(Locator::Css(
            "[data-testid=signin-form] button[type=submit]",
        ))
        .await
        .expect("sign-in button")
        .click()
        .await
        .expect("sign in");
    browser.idle().await;
    let listed = browser
        .until(
            "the experiments in the Lab panel",
            "const items = [...document.querySelectorAll('[data-testid=lab-experiments] li')];
             return !document.getElementById('lab').hidden && items.length >= 9
               && items.map(li => [li.dataset.name, li.classList.contains('running'),
                                   li.querySelector('code').textContent]);",
        )
        .await;
    let listed: Vec<(String, bool, String)> = serde_json::from_value(listed).expect("items");
    for (name, running, command) in &listed {
        assert_eq!(*running, name == "pool-exhaustion", "{name}");
        assert_eq!(command, &format!("ecommerce-monolith lab run {name}"));
    }
    browser
        .eval("document.querySelector('[data-testid=lab-experiments]').scrollIntoView(); return true;")
        .await;
    browser.screenshot("11-lab-experiments").await;
    // The rungs of the ladder, switched from the same panel: all off, as the shop starts.
    let rungs = browser
        .eval(
            "const f = document.querySelector('[data-testid=resilience-form]');
             f.scrollIntoView();
             return [f.elements['payment.retries'].value, f.elements['email.fallback'].checked,
                     document.getElementById('resilience-status').textContent];",
        )
        .await;
    assert_eq!(
        rungs,
        json!([
            "0",
            false,
            "Every rung is off: the blocking checkout as designed."
        ])
    );
    browser.screenshot("11-lab-rungs").await;

    // The run ends: the banner goes.
    let admin = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let ended = app.delete("/api/admin/lab", Some(&admin)).await;
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    browser
        .until(
            "the banner gone",
            "return document.querySelector('[data-testid=lab-banner]').hidden;",
        )
        .await;
    let problems = browser.console_problems().await;
    assert!(problems.is_empty(), "the console: {problems:#?}");
    let _ = browser.client.close().await;
}
