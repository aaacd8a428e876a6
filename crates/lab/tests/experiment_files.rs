//! The experiment files, read by the real binary: every shipped one is valid and names
//! what the service exports; a wrong one is refused with exit code 2 and an error that
//! names the file, the line and what was expected.

use std::path::{Path, PathBuf};
use std::process::Output;

const LAB: &str = env!("CARGO_BIN_EXE_ecommerce-lab");

fn lab(args: &[&str]) -> Output {
    std::process::Command::new(LAB)
        .arg("lab")
        .args(args)
        .env("OTEL_SDK_DISABLED", "true")
        // A run that got past reading its file would need these; none of these does.
        .env_remove("ADMIN_EMAIL")
        .env_remove("ADMIN_PASSWORD")
        .output()
        .expect("the ecommerce-lab binary runs")
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A directory of this test's own, for files named `broken.toml`.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ecommerce-lab-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn shipped() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repository().join("lab"))
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".toml").map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

#[test]
fn lab_list_names_every_shipped_experiment_first_on_its_line() {
    let output = lab(&["list"]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let listed: Vec<&str> = stdout
        .lines()
        .map(|line| line.split('\t').next().unwrap())
        .collect();
    assert_eq!(listed, shipped(), "{stdout}");
    assert!(!stdout.contains("(invalid"), "{stdout}");
    assert!(
        listed.len() >= 9,
        "the tour's seven and two more: {listed:?}"
    );
}

#[test]
fn every_shipped_experiment_shows_its_question_timeline_and_hypotheses() {
    for name in shipped() {
        let output = lab(&["show", &name]);
        assert!(output.status.success(), "{name}: {output:?}");
        let shown = String::from_utf8(output.stdout).unwrap();
        for part in [
            "Question: ",
            "Predict, before it runs: ",
            "Timeline:",
            "Hypotheses:",
        ] {
            assert!(shown.contains(part), "{name} lacks {part:?}:\n{shown}");
        }
        assert!(
            shown.contains(&format!("lab run {name}")),
            "{name} says how to run it:\n{shown}"
        );
    }
}

/// A typo in a metric's name would make a hypothesis judge nothing (a counter never
/// seen counts as 0): every metric an experiment names is one the service defines.
#[test]
fn every_metric_an_experiment_names_is_one_the_service_exports() {
    let defined = std::fs::read_to_string(repository().join("src/telemetry/metrics.rs")).unwrap()
        + &std::fs::read_to_string(repository().join("src/telemetry/exemplars.rs")).unwrap();
    let mut named = 0;
    for name in shipped() {
        let text = std::fs::read_to_string(repository().join(format!("lab/{name}.toml"))).unwrap();
        let file: toml::Table = toml::from_str(&text).unwrap();
        let hypotheses = file["hypothesis"].as_array().unwrap().iter().chain(
            file["steady"]
                .get("check")
                .and_then(|c| c.as_array())
                .into_iter()
                .flatten(),
        );
        for hypothesis in hypotheses {
            let Some(metric) = hypothesis.get("metric").and_then(|m| m.as_str()) else {
                continue;
            };
            named += 1;
            // Histograms are defined without their `_seconds` unit in the exemplars' list;
            // a histogram's `_count` (how many a second) is the histogram's.
            let stem = metric.trim_end_matches("_total").trim_end_matches("_count");
            assert!(
                defined.contains(&format!("\"{metric}\""))
                    || defined.contains(&format!("\"{stem}\""))
                    || defined.contains(&format!("\"{}\"", metric.trim_end_matches("_seconds"))),
                "lab/{name}.toml names {metric}, which src/telemetry does not define"
            );
        }
    }
    assert!(named >= 10, "the experiments judge metrics: {named}");
}

/// Each broken file: the line the error must name, and what it must say was expected.
const BROKEN: &[(&str, &str, usize, &str)] = &[
    (
        "a field the schema does not have",
        "nmae = \"x\"\n",
        1,
        "unknown field `nmae`",
    ),
    (
        "a length of time nobody can read",
        "[steady]\nduration = \"soon\"\n",
        6,
        "expected a length of time such as \"30s\"",
    ),
    (
        "a stat that does not exist",
        "[[hypothesis]]\nname = \"h\"\nduring = \"storm\"\nmetric = \"checkouts_total\"\nstat = \"p42\"\nat_least = 1\n",
        18,
        "expected a stat, one of p50, p90, p95, p99, rate, increase, max, last; got \"p42\"",
    ),
    (
        "a hypothesis judged in a phase that does not exist",
        "[[hypothesis]]\nname = \"h\"\nduring = \"strom\"\nclient = \"checkouts\"\nat_least = 1\n",
        16,
        "expected during to be run, end or a phase (storm); got \"strom\"",
    ),
    (
        "a fault the service does not have",
        "[[phase]]\nname = \"later\"\nduration = \"10s\"\nsettings = { faults = { payment_delay = 10 } }\n",
        17,
        "expected a fault setting, one of payment_delay_ms, payment_success_rate, payment_flap_rate, payment_capacity, email_delay_ms, email_outage, email_hang; got \"payment_delay\"",
    ),
    (
        "a rung out of range",
        "[[phase]]\nname = \"later\"\nduration = \"10s\"\nsettings = { resilience = { email = { timeout_ms = 70000 } } }\n",
        17,
        "expected resilience.email.timeout_ms: from 0 to 60000 ms (0 turns it off), got 70000",
    ),
    (
        "a fallback for the gateway, which has none",
        "[[phase]]\nname = \"later\"\nduration = \"10s\"\nsettings = { resilience = { payment = { fallback = true } } }\n",
        17,
        "expected resilience.payment.fallback: the payment gateway has none",
    ),
    (
        "a rung the service does not have",
        "[[phase]]\nname = \"later\"\nduration = \"10s\"\nsettings = { resilience = { email = { bulkhead = 3 } } }\n",
        17,
        "unknown field `bulkhead`",
    ),
    (
        "a fault value out of range",
        "[[phase]]\nname = \"later\"\nduration = \"10s\"\nsettings = { faults = { payment_success_rate = 1.5 } }\n",
        17,
        "expected payment_success_rate to be a number from 0 to 1, got 1.5",
    ),
    (
        "a hypothesis that looks at two things",
        "[[hypothesis]]\nname = \"two\"\nclient = \"checkouts\"\nledger = \"balanced\"\nat_least = 1\n",
        15,
        "expected exactly one of metric, client, slo, alert, ledger, orders, stock in \"two\"",
    ),
    (
        "an SLO slo.yml does not define",
        "[[hypothesis]]\nname = \"h\"\nslo = \"checkout-speed\"\nverdict = \"held\"\n",
        16,
        "expected an SLO of slo.yml, one of checkout-responsiveness",
    ),
    (
        "a tolerance written in words",
        "[[hypothesis]]\nname = \"h\"\nclient = \"checkouts\"\nat_least = \"3 times steady\"\n",
        17,
        "expected a number, or \"<factor>x\" and steady, a phase's name, payment_delay, email_delay",
    ),
    (
        "a bound relative to a phase that does not exist",
        "[[hypothesis]]\nname = \"h\"\nclient = \"checkouts\"\nat_least = \"2x stromy\"\n",
        17,
        "expected \"<factor>x\" and steady, a phase (storm), payment_delay or email_delay; got \"stromy\"",
    ),
    (
        "a ratio above one",
        "[[phase]]\nname = \"later\"\nduration = \"10s\"\nload = { shoppers = 2, checkout_ratio = 1.5 }\n",
        17,
        "expected checkout_ratio between 0 and 1, got 1.5",
    ),
    (
        "a client figure the load generator does not measure",
        "[[hypothesis]]\nname = \"h\"\nclient = \"happiness\"\nat_least = 1\n",
        16,
        "expected a client figure, one of checkouts, purchases",
    ),
    (
        "a bound-less hypothesis",
        "[[hypothesis]]\nname = \"unbounded\"\nclient = \"checkouts\"\n",
        15,
        "expected at_least or at_most for the client figure of \"unbounded\"",
    ),
    (
        "a metric judged at the end by a quantile",
        "[[hypothesis]]\nname = \"h\"\nduring = \"end\"\nmetric = \"checkout_duration_seconds\"\nstat = \"p99\"\nat_most = 1\n",
        18,
        "expected stat = \"last\" for a metric judged at the end",
    ),
    ("not TOML at all", "[[hypothesis\n", 14, ""),
];

/// A valid experiment of twelve lines, to which each case adds its mistake.
const VALID: &str = "name = \"broken\"
title = \"A file to break\"
question = \"Is the error clear?\"
predict = \"It names the line.\"
[steady]
duration = \"10s\"
[[phase]]
name = \"storm\"
duration = \"10s\"
[[hypothesis]]
name = \"something happens\"
client = \"checkouts\"
at_least = 0
";

#[test]
fn a_valid_file_is_accepted() {
    let path = scratch("valid").join("broken.toml");
    std::fs::write(&path, VALID).unwrap();
    let output = lab(&["show", path.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn a_broken_file_is_refused_with_its_line_and_what_was_expected() {
    let dir = scratch("broken");
    for (case, mistake, line, expected) in BROKEN {
        // The mistake replaces what it redefines, else it is appended.
        let text = if mistake.starts_with("[steady]") {
            VALID.replace("[steady]\nduration = \"10s\"\n", mistake)
        } else if mistake.starts_with("nmae") {
            format!("{mistake}{VALID}")
        } else {
            format!("{VALID}{mistake}")
        };
        let path = dir.join("broken.toml");
        std::fs::write(&path, &text).unwrap();
        for command in ["show", "run"] {
            let output = lab(&[command, path.to_str().unwrap()]);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{case} ({command}): {stderr}"
            );
            let place = format!("{}:{line}: ", path.display());
            assert!(
                stderr.contains(&place) && stderr.contains(expected),
                "{case} ({command}): expected {place:?} and {expected:?} in:\n{stderr}\nthe file:\n{text}"
            );
        }
    }
}

#[test]
fn an_unknown_experiment_is_a_usage_error_that_points_at_lab_list() {
    let output = lab(&["run", "no-such-experiment"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("lab list"));
}
