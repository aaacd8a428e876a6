//! Reading variables while collecting every problem instead of stopping at the first.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Everything wrong with the environment, one line per variable.
#[derive(Debug)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for problem in &self.0 {
            writeln!(f, "  - {problem}")?;
        }
        write!(f, "(see .env.example for every variable and its default)")
    }
}

impl std::error::Error for ConfigError {}

/// Where settings are read from: the process environment, or a fixed list in tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Source for &[(&str, &str)] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_string())
    }
}

/// Reads variables and collects problems instead of stopping at the first one.
pub(super) struct Reader<'a> {
    source: &'a dyn Source,
    problems: Vec<String>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(source: &'a dyn Source) -> Self {
        Self {
            source,
            problems: Vec::new(),
        }
    }

    /// The raw value; an empty string counts as unset.
    pub(super) fn raw(&self, name: &str) -> Option<String> {
        self.source
            .get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    pub(super) fn string(&mut self, name: &str, default: &str) -> String {
        self.raw(name).unwrap_or_else(|| default.to_string())
    }

    pub(super) fn parse<T: FromStr>(&mut self, name: &str, default: T, expected: &str) -> T {
        match self.raw(name) {
            None => default,
            Some(raw) => raw.parse().unwrap_or_else(|_| {
                self.problems
                    .push(format!("{name}: expected {expected}, got {raw:?}"));
                default
            }),
        }
    }

    /// The value if the variable is set (and valid), else `None`.
    pub(super) fn optional<T: FromStr>(&mut self, name: &str, expected: &str) -> Option<T> {
        let raw = self.raw(name)?;
        match raw.parse() {
            Ok(value) => Some(value),
            Err(_) => {
                self.problems
                    .push(format!("{name}: expected {expected}, got {raw:?}"));
                None
            }
        }
    }

    pub(super) fn optional_bool(&mut self, name: &str) -> Option<bool> {
        self.raw(name).map(|_| self.bool(name, false))
    }

    pub(super) fn millis(&mut self, name: &str, default_ms: u64) -> Duration {
        Duration::from_millis(self.parse(name, default_ms, "a whole number of milliseconds"))
    }

    pub(super) fn bool(&mut self, name: &str, default: bool) -> bool {
        match self.raw(name).map(|v| v.to_ascii_lowercase()) {
            None => default,
            Some(v) if ["true", "1", "yes", "on"].contains(&v.as_str()) => true,
            Some(v) if ["false", "0", "no", "off"].contains(&v.as_str()) => false,
            Some(v) => {
                self.problems
                    .push(format!("{name}: expected true or false, got {v:?}"));
                default
            }
        }
    }

    pub(super) fn problem(&mut self, message: String) {
        self.problems.push(message);
    }

    pub(super) fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError(self.problems))
        }
    }
}

impl Reader<'_> {
    /// An http(s) URL, without a trailing slash.
    pub(super) fn url(&mut self, name: &str, default: &str) -> String {
        let url = self.string(name, default);
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            self.problem(format!(
                "{name}: expected an http:// or https:// URL, got {url:?}"
            ));
        }
        url.trim_end_matches('/').to_string()
    }
}
