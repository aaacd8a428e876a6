//! The service's `/metrics` (Prometheus text), read at a phase's start, during it and at
//! its end, and what a hypothesis asks of a metric over the phase: a histogram's
//! quantile of the observations made in it, a counter's rate or increase, a gauge's
//! highest or last value. The same arithmetic as PromQL's `histogram_quantile`,
//! `increase` and `rate`, on two scrapes instead of a time series database.

use std::collections::BTreeMap;

use super::experiment::Stat;

/// One scrape: every sample, by series name, with its labels.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    samples: Vec<Sample>,
}

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Scrape {
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(parse_line)
            .collect();
        Self { samples }
    }

    /// The sum of the values of the series named `name` that carry `labels`.
    fn sum(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        also: Option<(&str, &str)>,
    ) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name && matches(s, labels))
            .filter(|s| also.is_none_or(|(k, v)| s.labels.get(k).is_some_and(|x| x == v)))
            .map(|s| s.value)
            .sum()
    }

    /// The sum of every series named `name`; `None` when there is none.
    pub fn total(&self, name: &str) -> Option<f64> {
        self.has(name)
            .then(|| self.sum(name, &BTreeMap::new(), None))
    }

    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }

    /// The histogram's cumulative buckets (`le` → count) of the matching series, summed.
    fn buckets(&self, name: &str, labels: &BTreeMap<String, String>) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for sample in self
            .samples
            .iter()
            .filter(|s| s.name == bucket && matches(s, labels))
        {
            let Some(le) = sample.labels.get("le").and_then(|le| parse_le(le)) else {
                continue;
            };
            let entry = by_le.entry(le.to_bits()).or_insert((le, 0.0));
            entry.1 += sample.value;
        }
        let mut buckets: Vec<(f64, f64)> = by_le.into_values().collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }
}

fn matches(sample: &Sample, labels: &BTreeMap<String, String>) -> bool {
    labels
        .iter()
        .all(|(key, value)| sample.labels.get(key).is_some_and(|v| v == value))
}

fn parse_le(le: &str) -> Option<f64> {
    match le {
        "+Inf" => Some(f64::INFINITY),
        other => other.parse().ok(),
    }
}

/// `name{a="b",c="d"} 1.5` (a timestamp after the value, and an exemplar, ignored).
fn parse_line(line: &str) -> Option<Sample> {
    let line = line.split(" # ").next()?;
    let (series, rest) = match line.find('{') {
        Some(_) => {
            let close = line.rfind('}')?;
            (&line[..close + 1], &line[close + 1..])
        }
        None => line.split_once(' ')?,
    };
    let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, labels)) => (name, parse_labels(labels.trim_end_matches('}'))),
        None => (series, BTreeMap::new()),
    };
    Some(Sample {
        name: name.trim().to_string(),
        labels,
        value,
    })
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(match escaped {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                other => value.push(other),
            }
        }
        labels.insert(key.trim().trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    labels
}

/// What a metric did over a phase, from its scrapes in order (at least its first and
/// last); `None` when the service exports no such metric.
pub fn over(
    scrapes: &[Scrape],
    name: &str,
    labels: &BTreeMap<String, String>,
    stat: Stat,
    seconds: f64,
) -> Option<f64> {
    let (first, last) = (scrapes.first()?, scrapes.last()?);
    match stat {
        Stat::Quantile(q) => {
            if !last.has(&format!("{name}_bucket")) {
                return None;
            }
            let before = first.buckets(name, labels);
            let after = last.buckets(name, labels);
            let delta: Vec<(f64, f64)> = after
                .iter()
                .map(|(le, count)| {
                    let earlier = before
                        .iter()
                        .find(|(b, _)| b == le)
                        .map_or(0.0, |(_, c)| *c);
                    (*le, (count - earlier).max(0.0))
                })
                .collect();
            Some(quantile(q, &delta))
        }
        Stat::Rate | Stat::Increase => {
            // A counter without a sample has not counted anything yet: 0 (a name the
            // service does not export at all is caught by the tests of lab/).
            let series = if last.has(&format!("{name}_total")) {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            let increase =
                (last.sum(&series, labels, None) - first.sum(&series, labels, None)).max(0.0);
            Some(if stat == Stat::Rate {
                increase / seconds.max(1e-9)
            } else {
                increase
            })
        }
        Stat::Max => {
            if !last.has(name) {
                return None;
            }
            scrapes
                .iter()
                .map(|s| s.sum(name, labels, None))
                .fold(None, |max, v| Some(max.map_or(v, |m: f64| m.max(v))))
        }
        Stat::Last => last.has(name).then(|| last.sum(name, labels, None)),
    }
}

/// PromQL's `histogram_quantile`: linear within the bucket the rank falls in; the
/// highest finite bound when it falls in `+Inf`; 0 without observations.
fn quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return 0.0;
    };
    if total <= 0.0 {
        return 0.0;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return lower.0;
            }
            let (lower_le, lower_count) = lower;
            let within = count - lower_count;
            if within <= 0.0 {
                return le;
            }
            return lower_le + (le - lower_le) * (rank - lower_count) / within;
        }
        lower = (le, count);
    }
    lower.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const BEFORE: &str = "# TYPE lat histogram\n\
        lat_bucket{route=\"/a\",le=\"0.1\"} 10\n\
        lat_bucket{route=\"/a\",le=\"1\"} 10\n\
        lat_bucket{route=\"/a\",le=\"+Inf\"} 10\n\
        lat_bucket{route=\"/b\",le=\"0.1\"} 5\n\
        lat_bucket{route=\"/b\",le=\"1\"} 5\n\
        lat_bucket{route=\"/b\",le=\"+Inf\"} 5\n\
        checkouts_total{outcome=\"success\"} 3 # {trace_id=\"ab\"} 1.0\n\
        pool_in_use 2\n";
    const AFTER: &str = "lat_bucket{route=\"/a\",le=\"0.1\"} 10\n\
        lat_bucket{route=\"/a\",le=\"1\"} 110\n\
        lat_bucket{route=\"/a\",le=\"+Inf\"} 110\n\
        lat_bucket{route=\"/b\",le=\"0.1\"} 15\n\
        lat_bucket{route=\"/b\",le=\"1\"} 15\n\
        lat_bucket{route=\"/b\",le=\"+Inf\"} 15\n\
        checkouts_total{outcome=\"success\"} 23\n\
        pool_in_use 9\n";

    #[test]
    fn a_quantile_is_of_the_observations_made_between_the_scrapes() {
        let scrapes = [Scrape::parse(BEFORE), Scrape::parse(AFTER)];
        // /a: 100 new observations, all between 0.1 and 1: the median 0.55.
        let p50 = over(
            &scrapes,
            "lat",
            &labels(&[("route", "/a")]),
            Stat::Quantile(0.5),
            10.0,
        );
        assert!((p50.unwrap() - 0.55).abs() < 1e-9, "{p50:?}");
        // /b: 10 new, all under 0.1.
        let p99 = over(
            &scrapes,
            "lat",
            &labels(&[("route", "/b")]),
            Stat::Quantile(0.99),
            10.0,
        );
        assert!(p99.unwrap() <= 0.1, "{p99:?}");
        assert_eq!(
            over(
                &scrapes,
                "nothing",
                &BTreeMap::new(),
                Stat::Quantile(0.5),
                10.0
            ),
            None
        );
    }

    #[test]
    fn counters_rate_and_gauges_are_read_as_promql_would() {
        let scrapes = [Scrape::parse(BEFORE), Scrape::parse(AFTER)];
        let success = labels(&[("outcome", "success")]);
        assert_eq!(
            over(&scrapes, "checkouts", &success, Stat::Increase, 10.0),
            Some(20.0)
        );
        assert_eq!(
            over(&scrapes, "checkouts_total", &success, Stat::Rate, 10.0),
            Some(2.0)
        );
        assert_eq!(
            over(&scrapes, "pool_in_use", &BTreeMap::new(), Stat::Max, 10.0),
            Some(9.0)
        );
        assert_eq!(
            over(&scrapes, "pool_in_use", &BTreeMap::new(), Stat::Last, 10.0),
            Some(9.0)
        );
    }

    #[test]
    fn label_values_with_escapes_and_commas_are_read_whole() {
        let scrape = Scrape::parse("x{route=\"/a,b\",q=\"say \\\"hi\\\"\"} 4\n");
        assert_eq!(
            scrape.sum(
                "x",
                &labels(&[("route", "/a,b"), ("q", "say \"hi\"")]),
                None
            ),
            4.0
        );
    }
}
