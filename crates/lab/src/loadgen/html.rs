//! The load generator's report as one self-contained HTML page: no script, no network,
//! no CDN — the charts are inline SVG drawn by `plotters`. With `--compare` the two runs
//! stand side by side, the blocking checkout on the left, the asynchronous on the right.

use std::fmt::Write as _;

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use strum::VariantArray;

use super::report::{Latency, Operation, Report};
use ecommerce_monolith::domain::{CheckoutMode, CheckoutOutcome};

/// Charts as wide as the page (scaled down by the browser on a narrow one), with the
/// legend in a column of its own on the right, where it covers no line.
const WIDTH: u32 = 1200;
const HEIGHT: u32 = 320;
const LEGEND_WIDTH: u32 = 230;

/// The page for one run, or for the runs of `--compare`: the SLO verdicts first, then
/// what each run did, then every chart as wide as the page, the runs' one above the
/// other's so that the eye compares them down the page.
pub fn render(reports: &[Report]) -> String {
    let mut page = String::new();
    let title = match reports {
        [only] => format!("Load test of {}", only.base_url),
        _ => "Blocking vs asynchronous checkout: the same load, side by side".to_string(),
    };
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\n\
         <style>body{{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:1300px;padding:0 1rem;color:#222}}\
         table{{border-collapse:collapse;margin:.5rem 0 1.5rem;width:100%}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}}\
         th:first-child,td:first-child{{text-align:left}}th{{background:#f4f4f4}}figure{{margin:0 0 1.2rem}}\
         figcaption{{font-weight:600;margin-bottom:.3rem}}svg{{width:100%;height:auto;display:block}}\
         .held{{color:#1a7f37;font-weight:600}}.broken{{color:#cf222e;font-weight:600}}\
         .note{{color:#555;font-size:.9rem}}h2{{margin-top:2rem;border-bottom:1px solid #ddd}}</style></head><body>\n<h1>{title}</h1>\n",
        title = escape(&title),
    );
    page.push_str(&slo_table(reports));
    if reports.len() > 1 {
        page.push_str(&comparison_table(reports));
    }
    for report in reports {
        page.push_str(&run_summary(report));
    }
    for (name, caption, draw) in CHARTS {
        let _ = writeln!(
            page,
            "<section data-chart-group=\"{name}\"><h2>{}</h2>",
            escape(caption)
        );
        for report in reports {
            let body = draw(report).unwrap_or_else(|error| {
                format!("<p class=\"note\">(no chart: {})</p>", escape(&error))
            });
            let _ = writeln!(
                page,
                "<figure data-chart=\"{name}\"><figcaption>{}</figcaption>\n{body}</figure>",
                escape(&run_name(report))
            );
        }
        page.push_str("</section>\n");
    }
    page.push_str("</body></html>\n");
    page
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn run_name(report: &Report) -> String {
    match report.mode {
        Some(mode) => format!("{} checkout", mode.as_str()),
        None => "this run".to_string(),
    }
}

/// The verdicts first, as k6 prints its thresholds: per SLO and run, the good events,
/// the error ratio, held or broken, and the share of a 30-day budget the run burned.
fn slo_table(reports: &[Report]) -> String {
    let mut table = String::from(
        "<table data-table=\"slos\"><tr><th>SLO (30-day objective)</th><th>objective</th>",
    );
    for report in reports {
        let _ = write!(table, "<th>{}</th>", escape(&run_name(report)));
    }
    table.push_str("</tr>\n");
    let Some(first) = reports.first() else {
        return String::new();
    };
    for (index, verdict) in first.slos.iter().enumerate() {
        let _ = write!(
            table,
            "<tr data-slo=\"{}\"><td>{}<br><span class=\"note\">{}</span></td><td>{} %</td>",
            escape(verdict.slo),
            escape(verdict.slo),
            escape(verdict.describe),
            verdict.objective * 100.0,
        );
        for report in reports {
            let Some(v) = report.slos.get(index) else {
                table.push_str("<td>–</td>");
                continue;
            };
            let (class, word) = if v.held {
                ("held", "held")
            } else {
                ("broken", "broken")
            };
            let _ = write!(
                table,
                "<td data-verdict=\"{class}\"><span class=\"{class}\">{word}</span> \
                 {} of {} good, error ratio {:.4}<br><span class=\"note\">burned {}</span></td>",
                v.good,
                v.total,
                v.error_ratio,
                escape(&v.budget_burned_text()),
            );
        }
        table.push_str("</tr>\n");
    }
    table.push_str("</table>\n");
    table
}

/// The lesson in one table: what the customer waits for, and when the work is done.
fn comparison_table(reports: &[Report]) -> String {
    let mut table = String::from(
        "<table data-table=\"comparison\"><tr><th>checkout</th><th>requests</th>\
         <th>server errors</th><th>checkouts confirmed</th><th>response p50 / p99 (ms)</th>\
         <th>confirmed after p50 / p99 (ms)</th></tr>\n",
    );
    for report in reports {
        let response = report
            .mode
            .and_then(|m| report.checkout_response_ms.get(&m));
        let confirmed = report
            .mode
            .and_then(|m| report.time_to_confirmed_ms.get(&m));
        let mode = report.mode.map_or("?", CheckoutMode::as_str);
        let pair = |l: Option<&Latency>| {
            l.map_or("–".to_string(), |l| {
                format!("{:.1} / {:.1}", l.p50, l.p99)
            })
        };
        let _ = writeln!(
            table,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(mode),
            report.requests,
            report.server_errors,
            report
                .checkouts
                .get(CheckoutOutcome::Success.as_str())
                .copied()
                .unwrap_or(0),
            pair(response),
            pair(confirmed),
        );
    }
    table.push_str("</table>\n");
    table
}

fn run_summary(report: &Report) -> String {
    format!(
        "<p data-run=\"{}\"><strong>{}</strong>: {} users for {:.1} s, {} requests, \
         <strong>{} server errors ({:.2} %)</strong>; business outcomes (the shop saying no, \
         not errors): {}; client mistakes: {}.</p>\n",
        escape(report.mode.map_or("run", CheckoutMode::as_str)),
        escape(&run_name(report)),
        report.users,
        report.duration_seconds,
        report.requests,
        report.server_errors,
        report.error_rate * 100.0,
        escape(
            &report
                .business_outcomes
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        report.client_mistakes,
    )
}

/// How one chart of a run is drawn.
type DrawChart = fn(&Report) -> Chart;

/// Every chart of a run: its name (for `data-chart`), its caption, how it is drawn.
const CHARTS: [(&str, &str, DrawChart); 5] = [
    (
        "latency-over-time",
        "Latency over time: p95 per operation",
        latency_over_time,
    ),
    (
        "latency-distribution",
        "Latency distribution per operation",
        latency_distribution,
    ),
    (
        "outcomes-over-time",
        "Answers per second: fine, business outcomes, client mistakes, server errors",
        outcomes_over_time,
    ),
    (
        "checkouts-per-second",
        "Checkouts per second by outcome",
        checkouts_per_second,
    ),
    (
        "response-vs-confirmed",
        "What the customer waits for vs when the order is confirmed",
        response_vs_confirmed,
    ),
];

type Chart = Result<String, String>;

/// Draws one chart into an SVG string.
fn svg(
    draw: impl FnOnce(DrawingArea<SVGBackend, plotters::coord::Shift>) -> Result<(), String>,
) -> Chart {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw(root.clone())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Ten colours that stay apart on white (the "Tableau 10" set).
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn color(index: usize) -> RGBColor {
    COLORS[index % COLORS.len()]
}

/// The colour of a series: an operation or a checkout outcome keeps its colour in every
/// chart and every run (there are ten of each, as there are colours); other series go
/// by their position.
fn color_of(name: &str, position: usize) -> RGBColor {
    let operation = Operation::VARIANTS.iter().position(|o| o.as_str() == name);
    let outcome = CheckoutOutcome::VARIANTS
        .iter()
        .position(|o| o.as_str() == name);
    color(operation.or(outcome).unwrap_or(position))
}

/// A line chart of named series of (x, y) points, x from `x_from`; y on a log scale if
/// asked (milliseconds span three orders of magnitude here).
fn lines(
    series: Vec<(String, Vec<(f64, f64)>)>,
    x_from: f64,
    x_label: &str,
    y_label: &str,
    log_y: bool,
) -> Chart {
    lines_over_bands(series, &[], x_from, x_label, y_label, log_y)
}

/// A stretch of a time axis with a name: a lab experiment's phase, shaded under the
/// lines of a chart.
#[derive(Debug, Clone)]
pub struct Band {
    pub name: String,
    /// Seconds since the start of the axis.
    pub from: f64,
    pub to: f64,
}

/// [`lines`], with `bands` shaded under them and named at the top.
fn lines_over_bands(
    series: Vec<(String, Vec<(f64, f64)>)>,
    bands: &[Band],
    x_from: f64,
    x_label: &str,
    y_label: &str,
    log_y: bool,
) -> Chart {
    let points: Vec<&(f64, f64)> = series
        .iter()
        .flat_map(|(_, p)| p.iter())
        .filter(|(x, _)| !x.is_nan())
        .collect();
    if points.is_empty() {
        return Err("no data".to_string());
    }
    let x_min = x_from;
    let x_max = points
        .iter()
        .map(|p| p.0)
        .chain(bands.iter().map(|b| b.to))
        .fold(0.0, f64::max)
        .max(1.0);
    let y_max = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.2;
    let names: Vec<String> = series.iter().map(|(name, _)| name.clone()).collect();
    svg(|root| {
        let (plot, legend) = root.split_horizontally(WIDTH - LEGEND_WIDTH);
        draw_legend(&legend, &names)?;
        let mut builder = ChartBuilder::on(&plot);
        builder
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55);
        if log_y {
            // Nothing at or below zero on a log scale.
            let series = series
                .into_iter()
                .map(|(name, data)| {
                    (
                        name,
                        data.into_iter().map(|(x, y)| (x, y.max(0.1))).collect(),
                    )
                })
                .collect();
            let mut chart = builder
                .build_cartesian_2d(x_min..x_max, (0.1f64..y_max).log_scale())
                .map_err(|e| e.to_string())?;
            draw_bands(&mut chart, bands, (0.1, y_max))?;
            draw_lines(&mut chart, series, x_label, y_label)
        } else {
            let mut chart = builder
                .build_cartesian_2d(x_min..x_max, 0f64..y_max)
                .map_err(|e| e.to_string())?;
            draw_bands(&mut chart, bands, (0.0, y_max))?;
            draw_lines(&mut chart, series, x_label, y_label)
        }
    })
}

/// The legend in its own column: a coloured stroke and the name per series, in the
/// order (and colours) the lines were drawn.
fn draw_legend(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    names: &[String],
) -> Result<(), String> {
    for (index, name) in names.iter().enumerate() {
        let y = 20 + 22 * i32::try_from(index).unwrap_or(i32::MAX / 32);
        area.draw(&PathElement::new(
            vec![(10, y), (34, y)],
            color_of(name, index).stroke_width(3),
        ))
        .map_err(|e| e.to_string())?;
        area.draw(&Text::new(
            name.clone(),
            (42, y - 8),
            ("sans-serif", 15).into_font(),
        ))
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The bands, in two alternating greys, each named at its top left — every other name a
/// line lower, so that the names of narrow neighbours do not run into each other.
fn draw_bands<'a, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    bands: &[Band],
    (y_low, y_high): (f64, f64),
) -> Result<(), String>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    const SHADES: [RGBColor; 2] = [RGBColor(236, 240, 247), RGBColor(247, 241, 230)];
    chart
        .draw_series(bands.iter().enumerate().map(|(index, band)| {
            Rectangle::new(
                [(band.from, y_low), (band.to, y_high)],
                SHADES[index % SHADES.len()].filled(),
            )
        }))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(bands.iter().enumerate().map(|(index, band)| {
            let line = 15 * (index % 2) as i32;
            EmptyElement::at((band.from, y_high))
                + Text::new(
                    band.name.clone(),
                    (2, 2 + line),
                    ("sans-serif", 13).into_font().color(&RGBColor(80, 80, 80)),
                )
        }))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The mesh and one line per series, on either y scale.
fn draw_lines<'a, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    series: Vec<(String, Vec<(f64, f64)>)>,
    x_label: &str,
    y_label: &str,
) -> Result<(), String>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|e| e.to_string())?;
    for (index, (name, data)) in series.into_iter().enumerate() {
        // A point with no x (NaN) breaks the line: the lab's phases are drawn apart.
        for segment in data.split(|(x, _)| x.is_nan()) {
            chart
                .draw_series(LineSeries::new(
                    segment.iter().copied(),
                    color_of(&name, index).stroke_width(2),
                ))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn latency_over_time(report: &Report) -> Chart {
    let operations: Vec<&String> = report
        .operations
        .keys()
        .filter(|op| *op != Operation::Catalog.as_str())
        .collect();
    let series = operations
        .into_iter()
        .map(|op| {
            let points = report
                .timeline
                .iter()
                .filter_map(|point| point.latency_ms.get(op).map(|l| (point.t_seconds, l.p95)))
                .collect();
            (op.clone(), points)
        })
        .collect();
    lines(
        series,
        0.0,
        "seconds since the start",
        "p95 latency, ms (log)",
        true,
    )
}

fn latency_distribution(report: &Report) -> Chart {
    let series = report
        .operations
        .iter()
        .map(|(op, stats)| (op.clone(), stats.distribution_ms.clone()))
        .collect();
    lines(series, 0.0, "percentile", "latency, ms (log)", true)
}

fn outcomes_over_time(report: &Report) -> Chart {
    let window = report
        .timeline
        .get(1)
        .map_or(1.0, |second| second.t_seconds * 2.0 / 3.0)
        .max(1e-3);
    let per_second = |pick: fn(&super::report::ClassCounts) -> u64| -> Vec<(f64, f64)> {
        report
            .timeline
            .iter()
            .map(|p| (p.t_seconds, pick(&p.classes) as f64 / window))
            .collect()
    };
    lines(
        vec![
            ("fine".to_string(), per_second(|c| c.fine)),
            ("business outcomes".to_string(), per_second(|c| c.business)),
            (
                "client mistakes".to_string(),
                per_second(|c| c.client_mistakes),
            ),
            ("server errors".to_string(), per_second(|c| c.server_errors)),
        ],
        0.0,
        "seconds since the start",
        "answers per second",
        false,
    )
}

fn checkouts_per_second(report: &Report) -> Chart {
    let outcomes: std::collections::BTreeSet<&String> = report
        .timeline
        .iter()
        .flat_map(|p| p.checkouts_per_second.keys())
        .collect();
    let series = outcomes
        .into_iter()
        .map(|outcome| {
            let points = report
                .timeline
                .iter()
                .map(|p| {
                    (
                        p.t_seconds,
                        p.checkouts_per_second.get(outcome).copied().unwrap_or(0.0),
                    )
                })
                .collect();
            (outcome.clone(), points)
        })
        .collect();
    lines(
        series,
        0.0,
        "seconds since the start",
        "checkouts per second",
        false,
    )
}

/// p50, p95 and p99 of the checkout's answer and of the order's confirmation, per mode.
fn response_vs_confirmed(report: &Report) -> Chart {
    let percentiles = |l: &Latency| vec![(50.0, l.p50), (95.0, l.p95), (99.0, l.p99)];
    let mut series = Vec::new();
    for (mode, latency) in &report.checkout_response_ms {
        series.push((format!("{}: response", mode.as_str()), percentiles(latency)));
    }
    for (mode, latency) in &report.time_to_confirmed_ms {
        series.push((
            format!("{}: confirmed", mode.as_str()),
            percentiles(latency),
        ));
    }
    lines(series, 45.0, "percentile", "ms (log)", true)
}

/// The lab's charts: the load generator's timelines of consecutive phases (each report
/// starting at its offset, in seconds) on one time axis, the phases shaded under them.
/// Each chart comes with its caption.
pub fn timeline_charts(reports: &[(f64, &Report)], bands: &[Band]) -> Vec<(String, String)> {
    type Series = std::collections::BTreeMap<String, Vec<(f64, f64)>>;
    let (mut latency, mut answers, mut checkouts) = (Series::new(), Series::new(), Series::new());
    for (offset, report) in reports {
        // Each phase's lines stand apart from the phase before's.
        for series in [&mut latency, &mut answers, &mut checkouts] {
            for points in series.values_mut() {
                points.push((f64::NAN, f64::NAN));
            }
        }
        let window = report
            .timeline
            .get(1)
            .map_or(1.0, |second| second.t_seconds * 2.0 / 3.0)
            .max(1e-3);
        for point in &report.timeline {
            let t = offset + point.t_seconds;
            for (operation, stats) in &point.latency_ms {
                if operation != Operation::Catalog.as_str() {
                    latency
                        .entry(operation.clone())
                        .or_default()
                        .push((t, stats.p95));
                }
            }
            let classes = [
                ("fine", point.classes.fine),
                ("business outcomes", point.classes.business),
                ("client mistakes", point.classes.client_mistakes),
                ("server errors", point.classes.server_errors),
            ];
            for (class, count) in classes {
                answers
                    .entry(class.to_string())
                    .or_default()
                    .push((t, count as f64 / window));
            }
            for (outcome, rate) in &point.checkouts_per_second {
                checkouts
                    .entry(outcome.clone())
                    .or_default()
                    .push((t, *rate));
            }
        }
    }
    [
        (
            "Latency over time: p95 per operation",
            latency,
            "p95 latency, ms (log)",
            true,
        ),
        (
            "Answers per second: fine, business outcomes, client mistakes, server errors",
            answers,
            "answers per second",
            false,
        ),
        (
            "Checkouts per second by outcome",
            checkouts,
            "checkouts per second",
            false,
        ),
    ]
    .into_iter()
    .map(|(caption, series, y_label, log_y)| {
        let series = series.into_iter().collect();
        let chart = lines_over_bands(
            series,
            bands,
            0.0,
            "seconds since the run began",
            y_label,
            log_y,
        )
        .unwrap_or_else(|error| format!("<p class=\"note\">(no chart: {})</p>", escape(&error)));
        (caption.to_string(), chart)
    })
    .collect()
}
