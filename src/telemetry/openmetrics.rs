//! The classic Prometheus text that metrics-exporter-prometheus renders, rewritten as
//! OpenMetrics, so that one body can carry both it and the exemplar histograms.
//!
//! Prometheus rejects a whole OpenMetrics scrape over one blank line or a missing
//! `# EOF`, so the differences are few but fatal:
//! - the classic text separates families with blank lines: dropped;
//! - a counter's family is named without `_total` (its samples keep it);
//! - `"` in a HELP text must be escaped.
//!
//! Sample lines are the same in both formats and pass through untouched.

use std::collections::HashSet;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a scraper's `Accept` header asks for OpenMetrics (Prometheus does, first).
pub fn is_accepted(accept: &str) -> bool {
    accept.split(',').any(|choice| {
        let mut parts = choice.split(';').map(str::trim);
        parts.next() == Some("application/openmetrics-text")
            && !parts.any(|parameter| matches!(parameter, "q=0" | "q=0.0" | "q=0.00" | "q=0.000"))
    })
}

/// Appends the families of `classic` to `out` as OpenMetrics, without `# EOF`.
pub fn append_converted(classic: &str, out: &mut String) {
    let counters: HashSet<&str> = classic
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let family = |name: &'_ str| -> String {
        match name.strip_suffix("_total") {
            Some(stem) if counters.contains(name) => stem.to_owned(),
            _ => name.to_owned(),
        }
    };
    for line in classic.lines().filter(|line| !line.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str(&format!(
                "# HELP {} {}\n",
                family(name),
                escape_quotes(help)
            ));
        } else if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" counter"))
        {
            // A counter without `_total` cannot be an OpenMetrics counter; `unknown`
            // keeps its samples as they are.
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "unknown"
            };
            out.push_str(&format!("# TYPE {} {kind}\n", family(name)));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
}

/// Escapes `"` that is not escaped yet (the classic text escapes only `\` and newline).
fn escape_quotes(help: &str) -> String {
    let mut escaped = String::with_capacity(help.len());
    let mut backslash = false;
    for c in help.chars() {
        if c == '"' && !backslash {
            escaped.push('\\');
        }
        backslash = c == '\\' && !backslash;
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLASSIC: &str = "# HELP checkouts_total Checkouts by \"mode\".\n\
        # TYPE checkouts_total counter\n\
        checkouts_total{mode=\"async\",outcome=\"success\"} 3\n\
        \n\
        # TYPE plain counter\n\
        plain 1\n\
        \n\
        # HELP pool Connections in use.\n\
        # TYPE pool gauge\n\
        pool 2\n\
        \n";

    #[test]
    fn families_are_renamed_blank_lines_dropped_samples_kept() {
        let mut out = String::new();
        append_converted(CLASSIC, &mut out);
        assert_eq!(
            out,
            "# HELP checkouts Checkouts by \\\"mode\\\".\n\
             # TYPE checkouts counter\n\
             checkouts_total{mode=\"async\",outcome=\"success\"} 3\n\
             # TYPE plain unknown\n\
             plain 1\n\
             # HELP pool Connections in use.\n\
             # TYPE pool gauge\n\
             pool 2\n"
        );
    }

    #[test]
    fn quotes_already_escaped_stay_escaped_once() {
        assert_eq!(escape_quotes(r#"a "b" \"c\" d\\"#), r#"a \"b\" \"c\" d\\"#);
    }

    #[test]
    fn prometheus_asks_for_openmetrics() {
        // Prometheus 2.42's Accept header, and 3.x's.
        assert!(is_accepted(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(is_accepted(
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
        ));
        assert!(!is_accepted("*/*"));
        assert!(!is_accepted("text/plain"));
        assert!(!is_accepted("application/openmetrics-text;q=0, text/plain"));
    }
}
