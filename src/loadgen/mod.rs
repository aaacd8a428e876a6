//! `ecommerce-monolith loadgen`: simulated shoppers, each in its own task, with a live
//! progress bar and a latency/outcome report at the end (or on Ctrl-C).

pub mod report;
mod shopper;

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use tokio::sync::watch;

use self::report::{Recorder, Report};
use self::shopper::Shop;
use crate::client::ApiClient;
use crate::startup::shutdown_signal;

/// What the shoppers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Browse, look at products, fill a cart, then check out or abandon it.
    Browse,
    /// Only add to cart and check out, in a loop; each shopper buys its own product
    /// (the best-stocked ones), so shoppers never wait on each other's row locks.
    Checkout,
    /// Every shopper fills a cart with its own product, then all check out at the same
    /// moment, once; the run ends when the last checkout answers.
    Burst,
}

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
    /// How long to run, e.g. `30s`, `5m`, `1h`.
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
    /// Also write the report as JSON to this file (`-` for standard output).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn ratio(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("must be between 0 and 1, got {value}"))
    }
}

pub async fn run(args: LoadgenArgs) -> anyhow::Result<Report> {
    let client = ApiClient::new(&args.base_url, Duration::from_secs(120))?;
    let recorder = Arc::new(Recorder::new());
    let catalog = load_catalog(&client, &recorder).await?;
    let users = usize::from(args.users);
    let shop = Arc::new(Shop {
        client,
        recorder: recorder.clone(),
        hot_product: catalog.scarcest,
        product_ids: catalog.by_stock_descending,
        scenario: args.scenario,
        all_ready: tokio::sync::Barrier::new(users),
        run_id: format!("{:08x}", rand::random::<u32>()),
        checkout_ratio: args.checkout_ratio,
        hot_product_share: args.hot_product_share,
        think_time: args.think_time,
    });

    let (stop, stopped) = watch::channel(false);
    let started = Instant::now();
    let mut shoppers: Vec<_> = (0..users)
        .map(|number| tokio::spawn(shopper::run(shop.clone(), number, stopped.clone())))
        .collect();
    let progress = progress_bar(args.duration);
    let ticker = tokio::spawn(update_progress(progress.clone(), recorder.clone(), started));

    let finished = async {
        match args.scenario {
            // A burst ends when every shopper has checked out once.
            Scenario::Burst => {
                for shopper in &mut shoppers {
                    let _ = shopper.await;
                }
            }
            Scenario::Browse | Scenario::Checkout => tokio::time::sleep(args.duration).await,
        }
    };
    let interrupted = tokio::select! {
        () = finished => false,
        () = shutdown_signal() => true,
    };
    let _ = stop.send(true);
    if interrupted {
        // Ctrl-C means now: requests under way are dropped (and not counted).
        shoppers.iter().for_each(tokio::task::JoinHandle::abort);
    }
    for shopper in shoppers {
        // A burst's shoppers were awaited already; awaiting a finished task again is
        // not possible, so only the unfinished ones are awaited here.
        if !shopper.is_finished() {
            let _ = shopper.await;
        }
    }
    ticker.abort();
    progress.finish_and_clear();

    let report = recorder.report(&args.base_url, users, started.elapsed(), interrupted);
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(report.render().as_bytes());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        if path.as_os_str() == "-" {
            let _ = writeln!(stdout, "{json}");
        } else {
            std::fs::write(path, json)
                .with_context(|| format!("writing the JSON report to {}", path.display()))?;
        }
    }
    let _ = stdout.flush();
    Ok(report)
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
        recorder.record("catalog", Some(page.status), started.elapsed());
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
            "requests {}  errors {}  checkouts {}",
            recorder.requests(),
            recorder.errors(),
            recorder.checkouts()
        ));
    }
}
