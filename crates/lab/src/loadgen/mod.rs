//! `ecommerce-monolith loadgen`: simulated shoppers, each in its own task, with a live
//! progress bar and a report at the end (or on Ctrl-C): a table, and on request JSON
//! (`--json`) and a self-contained HTML page with charts (`--html`). `--compare` runs
//! the same scenario in the blocking and the asynchronous checkout, one after the
//! other, and puts them side by side.

pub mod html;
mod operation;
pub mod report;
mod shopper;
pub mod slo;

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde_json::json;
use strum::VariantArray;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::task::TaskTracker;

use self::report::{Operation, Recorder, Report, RunInfo};
pub use self::shopper::Scenario;
use self::shopper::{Arrivals, Shop};
use crate::client::ApiClient;
use ecommerce_monolith::domain::CheckoutMode;
use ecommerce_monolith::shutdown::shutdown_signal;

#[derive(Debug, clap::Args)]
pub struct LoadgenArgs {
    /// What the shoppers do.
    #[arg(long, value_enum, default_value_t = Scenario::Browse)]
    pub scenario: Scenario,
    /// The service to load.
    #[arg(long, env = "BASE_URL", default_value = "http://localhost:8000")]
    pub base_url: String,
    /// Simultaneous shoppers, each in its own task.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=5000))]
    pub users: u16,
    /// How long to run, e.g. `30s`, `5m`, `1h` (with `--compare`: each of the two runs),
    /// from when the last shopper has signed up.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Share of visits that end in a checkout (the rest abandon the cart), 0 to 1.
    #[arg(long, default_value_t = 0.5, value_parser = ratio)]
    pub checkout_ratio: f64,
    /// Share of products put in carts that are the scarcest product (row-lock
    /// contention), 0 to 1.
    #[arg(long, default_value_t = 0.2, value_parser = ratio)]
    pub hot_product_share: f64,
    /// Mean pause between a shopper's actions, e.g. `500ms`; `0s` for none.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub think_time: Duration,
    /// Put stock back this often (products below 20 units get 100 more, through the
    /// admin API), so a long run measures the service, not an empty shop; `0s` for
    /// never. Needs the admin account.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub restock_every: Duration,
    /// Offer checkouts at this rate per second (the checkout scenario only), whatever
    /// the service answers: arrivals are handed to free shoppers, so the service's
    /// slowness does not slow the arrivals (an open model, as real customers are).
    /// `--users` must be enough to carry the rate; they sign up first, and the rate is
    /// offered for `--duration` from when the last one has. 0: each shopper goes at its
    /// own pace.
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    pub rate: f64,
    /// Do not follow accepted orders until they settle: for offered loads where the
    /// polls would be load of their own; the service's metrics then tell when orders
    /// are confirmed.
    #[arg(long)]
    pub no_follow: bool,
    /// Run the scenario twice, in the blocking then the asynchronous checkout (switched
    /// through the admin API and restored afterwards), and report them side by side.
    #[arg(long)]
    pub compare: bool,
    /// The admin account, for restocking and `--compare`.
    #[arg(long, env = "ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Also write the report as JSON to this file (`-` for standard output).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write the report as one self-contained HTML page with charts.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// The impatient scenario: how long a shopper waits for a checkout's answer before
    /// it gives up and sends the checkout again.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub patience: Duration,
    /// The impatient scenario: whether a retry carries the first attempt's
    /// `Idempotency-Key` (the same purchase) or none (a purchase anew, as far as the
    /// service can tell).
    #[arg(long)]
    pub idempotency_key: bool,
    /// No progress bar (the lab draws its own).
    #[arg(skip)]
    pub quiet: bool,
    /// Ends the run early when it turns true, like Ctrl-C (the lab's interruption: a
    /// phase's load may still be signing up when the signal comes).
    #[arg(skip)]
    pub interrupt: Option<watch::Receiver<bool>>,
    /// Told once every shopper has signed up, when the run's `--duration` starts (the
    /// lab starts watching a phase then, so the sign-ups' password hashes are not in it).
    #[arg(skip)]
    pub signed_up: Option<Arc<Notify>>,
}

impl LoadgenArgs {
    /// A run of `scenario` by `users` shoppers for `duration`, without a progress bar,
    /// the other knobs at their defaults: what the lab builds each phase's load from.
    pub fn quiet(base_url: &str, scenario: Scenario, users: u16, duration: Duration) -> Self {
        Self {
            scenario,
            base_url: base_url.to_string(),
            users: users.max(1),
            duration,
            checkout_ratio: 0.5,
            hot_product_share: 0.2,
            think_time: Duration::from_millis(500),
            restock_every: Duration::ZERO,
            rate: 0.0,
            no_follow: true,
            compare: false,
            admin_email: None,
            admin_password: None,
            json: None,
            html: None,
            patience: Duration::from_secs(1),
            idempotency_key: false,
            quiet: true,
            interrupt: None,
            signed_up: None,
        }
    }
}

fn ratio(text: &str) -> Result<f64, String> {
    number_within(text, 0.0, 1.0, "")
}

fn rate(text: &str) -> Result<f64, String> {
    number_within(text, 0.0, 10_000.0, " per second")
}

/// A number from `low` to `high` (inclusive); `unit` follows the bounds in the error.
fn number_within(text: &str, low: f64, high: f64, unit: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (low..=high).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "must be between {low} and {high}{unit}, got {value}"
        ))
    }
}

/// How long the run waits, after its end, for accepted orders to be settled.
const SETTLE_AT_MOST: Duration = Duration::from_secs(65);

/// Runs the load (once, or twice with `--compare`), prints the report and writes the
/// files asked for; returns the reports.
pub async fn run(args: LoadgenArgs) -> anyhow::Result<Vec<Report>> {
    let client = ApiClient::new(&args.base_url, Duration::from_secs(120))?;
    let admin = admin_token(&client, &args).await?;
    let reports = if args.compare {
        let admin = admin.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "--compare switches the checkout mode: it needs the admin account \
                 (--admin-email/--admin-password or ADMIN_EMAIL/ADMIN_PASSWORD)"
            )
        })?;
        compare(&client, admin, &args).await?
    } else {
        vec![run_once(&client, admin.as_deref(), &args, None).await?]
    };

    let mut stdout = std::io::stdout();
    for report in &reports {
        let _ = stdout.write_all(report.render().as_bytes());
    }
    if reports.len() > 1 {
        let _ = stdout.write_all(report::render_slo_comparison(&reports).as_bytes());
    }
    if let Some(path) = &args.json {
        let json = if let [only] = reports.as_slice() {
            serde_json::to_string_pretty(only)?
        } else {
            serde_json::to_string_pretty(&json!({"runs": reports}))?
        };
        if path.as_os_str() == "-" {
            let _ = writeln!(stdout, "{json}");
        } else {
            std::fs::write(path, json)
                .with_context(|| format!("writing the JSON report to {}", path.display()))?;
        }
    }
    if let Some(path) = &args.html {
        std::fs::write(path, html::render(&reports))
            .with_context(|| format!("writing the HTML report to {}", path.display()))?;
    }
    let _ = stdout.flush();
    Ok(reports)
}

/// One run of the load, its report returned and nothing printed: the lab's phases.
pub async fn measure(args: &LoadgenArgs) -> anyhow::Result<Report> {
    let client = ApiClient::new(&args.base_url, Duration::from_secs(120))?;
    let admin = admin_token(&client, args).await?;
    run_once(&client, admin.as_deref(), args, None).await
}

/// Puts stock back once, as `--restock-every` does; returns how many products.
pub async fn restock_now(client: &ApiClient, admin: &str) -> usize {
    let recorder = Recorder::new(Duration::from_secs(1));
    restock_pass(client, admin, &recorder).await
}

/// The same scenario in each checkout mode, the service's mode restored afterwards.
async fn compare(
    client: &ApiClient,
    admin: &str,
    args: &LoadgenArgs,
) -> anyhow::Result<Vec<Report>> {
    let before = mode(client, admin, None).await?;
    let mut reports = Vec::new();
    for &wanted in CheckoutMode::VARIANTS {
        mode(client, admin, Some(wanted)).await?;
        let report = run_once(client, Some(admin), args, Some(wanted)).await;
        match report {
            Ok(report) => {
                let interrupted = report.interrupted;
                reports.push(report);
                if interrupted {
                    break;
                }
            }
            Err(error) => {
                mode(client, admin, Some(before)).await?;
                return Err(error);
            }
        }
    }
    mode(client, admin, Some(before)).await?;
    Ok(reports)
}

/// The checkout mode in force (and sets `wanted` first, if given).
async fn mode(
    client: &ApiClient,
    admin: &str,
    wanted: Option<CheckoutMode>,
) -> anyhow::Result<CheckoutMode> {
    let answer = match wanted {
        None => {
            client
                .send(Method::GET, "/api/admin/checkout-mode", Some(admin), None)
                .await?
        }
        Some(mode) => {
            let body = json!({"mode": mode});
            client
                .send(
                    Method::PUT,
                    "/api/admin/checkout-mode",
                    Some(admin),
                    Some(&body),
                )
                .await?
        }
    };
    anyhow::ensure!(
        answer.status == StatusCode::OK,
        "switching the checkout mode: {}",
        answer.status
    );
    serde_json::from_value(answer.body["mode"].clone())
        .map_err(|_| anyhow::anyhow!("the service did not say its checkout mode"))
}

/// An admin token, if the account is configured; `None` (with a note) otherwise.
async fn admin_token(client: &ApiClient, args: &LoadgenArgs) -> anyhow::Result<Option<String>> {
    match (&args.admin_email, &args.admin_password) {
        (Some(email), Some(password)) => Ok(Some(client.login(email, password).await?)),
        _ => {
            if !args.restock_every.is_zero() {
                eprintln!(
                    "note: no admin account (ADMIN_EMAIL/ADMIN_PASSWORD): stock is not put back \
                     during the run"
                );
            }
            Ok(None)
        }
    }
}

async fn run_once(
    client: &ApiClient,
    admin: Option<&str>,
    args: &LoadgenArgs,
    mode: Option<CheckoutMode>,
) -> anyhow::Result<Report> {
    // About a hundred slices for the charts over time.
    let window = (args.duration / 100).max(Duration::from_secs(1));
    let recorder = Arc::new(Recorder::new(window));
    let catalog = load_catalog(client, &recorder).await?;
    let users = usize::from(args.users);
    anyhow::ensure!(
        args.rate == 0.0 || args.scenario == Scenario::Checkout,
        "--rate offers checkouts: it goes with --scenario checkout"
    );
    let shop = Arc::new(Shop {
        client: client.clone(),
        recorder: recorder.clone(),
        hot_product: catalog.scarcest,
        product_ids: catalog.by_stock_descending,
        scenario: args.scenario,
        // Every shopper, and the run's clock.
        signed_up: tokio::sync::Barrier::new(users + 1),
        all_ready: tokio::sync::Barrier::new(users),
        run_id: format!("{:08x}", rand::random::<u32>()),
        checkout_ratio: args.checkout_ratio,
        hot_product_share: args.hot_product_share,
        think_time: args.think_time,
        following: TaskTracker::new(),
        arrivals: (args.rate > 0.0).then(|| Arrivals {
            permits: Semaphore::new(0),
        }),
        follow_orders: !args.no_follow,
        patience: args.patience,
        idempotency_key: args.idempotency_key,
    });

    let (stop, stopped) = watch::channel(false);
    let started = Instant::now();
    let mut shoppers: Vec<_> = (0..users)
        .map(|number| tokio::spawn(shopper::run(shop.clone(), number, stopped.clone())))
        .collect();
    let restocker = match (admin, args.restock_every.is_zero()) {
        (Some(token), false) => Some(tokio::spawn(restock(
            client.clone(),
            token.to_string(),
            recorder.clone(),
            args.restock_every,
        ))),
        _ => None,
    };
    let progress = if args.quiet {
        ProgressBar::hidden()
    } else {
        progress_bar(args.duration)
    };
    let ticker = tokio::spawn(update_progress(progress.clone(), recorder.clone(), started));

    let finished = async {
        shop.signed_up.wait().await;
        if let Some(signed_up) = &args.signed_up {
            signed_up.notify_one();
        }
        let signed_up_in = started.elapsed().as_secs_f64();
        match args.scenario {
            // A burst ends when every shopper has checked out once.
            Scenario::Burst => {
                for shopper in &mut shoppers {
                    let _ = shopper.await;
                }
            }
            Scenario::Browse | Scenario::Checkout | Scenario::Impatient => {
                let load = match &shop.arrivals {
                    Some(_) => format!("offering {} checkouts/s", args.rate),
                    None => "running".to_string(),
                };
                // A line the benchmark waits for: what follows is the load it measures.
                // (The lab, quiet, is told through `args.signed_up` instead.)
                if !args.quiet {
                    progress.suspend(|| {
                        eprintln!(
                            "{users} shoppers signed up in {signed_up_in:.1} s; {load} for {}",
                            humantime::format_duration(args.duration)
                        );
                    });
                }
                match &shop.arrivals {
                    Some(arrivals) => tokio::select! {
                        () = arrive(&arrivals.permits, args.rate) => {}
                        () = tokio::time::sleep(args.duration) => {}
                    },
                    None => tokio::time::sleep(args.duration).await,
                }
            }
        }
    };
    let interrupt = async {
        match args.interrupt.clone() {
            Some(mut interrupt) => {
                let _ = interrupt.wait_for(|interrupted| *interrupted).await;
            }
            None => std::future::pending().await,
        }
    };
    let interrupted = tokio::select! {
        () = finished => false,
        () = shutdown_signal() => true,
        () = interrupt => true,
    };
    let _ = stop.send(true);
    if interrupted {
        // Ctrl-C means now: requests under way are dropped (and not counted).
        shoppers.iter().for_each(tokio::task::JoinHandle::abort);
    }
    for shopper in shoppers {
        if !shopper.is_finished() {
            let _ = shopper.await;
        }
    }
    if let Some(restocker) = restocker {
        restocker.abort();
    }
    // Accepted orders are followed until they are settled, so that the report counts
    // every checkout's outcome as the service does.
    shop.following.close();
    if !interrupted {
        let _ = tokio::time::timeout(SETTLE_AT_MOST, shop.following.wait()).await;
    }
    ticker.abort();
    progress.finish_and_clear();

    let run = RunInfo {
        base_url: args.base_url.clone(),
        users,
        mode,
    };
    Ok(recorder.report(run, started.elapsed(), interrupted))
}

/// Hands out `rate` arrivals per second, evenly spaced, until dropped; arrivals no
/// shopper is free to take wait (and are taken late), as customers queue at a busy shop.
async fn arrive(arrivals: &Semaphore, rate: f64) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        tick.tick().await;
        arrivals.add_permits(1);
    }
}

/// Every `every`, puts stock back on the products that are running out.
async fn restock(client: ApiClient, admin: String, recorder: Arc<Recorder>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        restock_pass(&client, &admin, &recorder).await;
    }
}

/// Puts stock back on the products that are running out; returns how many.
async fn restock_pass(client: &ApiClient, admin: &str, recorder: &Recorder) -> usize {
    const RUNNING_OUT: i64 = 20;
    const PUT_BACK: i64 = 100;
    let mut restocked = 0;
    {
        let mut offset = 0;
        loop {
            let started = Instant::now();
            let path = format!("/api/products?limit=100&offset={offset}");
            let page = client.send(Method::GET, &path, None, None).await;
            // A catalog read like any other (it counts in the catalog SLO, as it does
            // in Prometheus); the writes below are the restocking.
            recorder.record(
                Operation::Catalog,
                page.as_ref().ok().map(|p| p.status),
                started.elapsed(),
            );
            let Ok(page) = page else { break };
            let items = page.body["items"].as_array().cloned().unwrap_or_default();
            for item in &items {
                let (Some(id), Some(stock)) = (item["id"].as_i64(), item["stock"].as_i64()) else {
                    continue;
                };
                if stock < RUNNING_OUT {
                    let started = Instant::now();
                    let body = json!({"quantity": PUT_BACK});
                    let answer = client
                        .send(
                            Method::POST,
                            &format!("/api/products/{id}/restock"),
                            Some(admin),
                            Some(&body),
                        )
                        .await;
                    recorder.record(
                        Operation::Restock,
                        answer.ok().map(|a| a.status),
                        started.elapsed(),
                    );
                    restocked += 1;
                }
            }
            offset += 100;
            if items.len() < 100 {
                break;
            }
        }
    }
    restocked
}

/// The products on sale, as the shoppers need them.
struct Catalog {
    /// Best-stocked first: the checkout and burst scenarios give shopper i product i.
    by_stock_descending: Vec<i64>,
    /// The scarcest product still in stock: where buyers collide.
    scarcest: i64,
}

async fn load_catalog(client: &ApiClient, recorder: &Recorder) -> anyhow::Result<Catalog> {
    let mut products: Vec<(i64, i64)> = Vec::new();
    let mut offset = 0;
    loop {
        let started = Instant::now();
        let page = client
            .send(
                Method::GET,
                &format!("/api/products?limit=100&offset={offset}"),
                None,
                None,
            )
            .await
            .with_context(|| format!("cannot reach {}", client.base_url()))?;
        recorder.record(Operation::Catalog, Some(page.status), started.elapsed());
        if page.status != StatusCode::OK {
            anyhow::bail!("listing products failed with {}", page.status);
        }
        let items = page.body["items"].as_array().cloned().unwrap_or_default();
        products.extend(
            items.iter().filter_map(|item| {
                Some((item["id"].as_i64()?, item["stock"].as_i64().unwrap_or(0)))
            }),
        );
        offset += 100;
        if items.len() < 100 {
            break;
        }
    }
    let scarcest = products
        .iter()
        .filter(|(_, stock)| *stock > 0)
        .min_by_key(|(_, stock)| *stock)
        .or(products.first())
        .map(|(id, _)| *id)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the catalog at {} is empty: run `ecommerce-monolith seed` first",
                client.base_url()
            )
        })?;
    products.sort_by_key(|(id, stock)| (std::cmp::Reverse(*stock), *id));
    Ok(Catalog {
        by_stock_descending: products.into_iter().map(|(id, _)| id).collect(),
        scarcest,
    })
}

fn progress_bar(duration: Duration) -> ProgressBar {
    // Drawn on stderr, only when it is a terminal; the report goes to stdout.
    let bar = ProgressBar::new(duration.as_secs().max(1));
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

async fn update_progress(bar: ProgressBar, recorder: Arc<Recorder>, started: Instant) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        bar.set_position(started.elapsed().as_secs());
        bar.set_message(format!(
            "requests {}  server errors {}  checkouts {}",
            recorder.requests(),
            recorder.server_errors(),
            recorder.checkouts()
        ));
    }
}
