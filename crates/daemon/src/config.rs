//! Reading a TOML config into types, collecting every error before giving up.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every problem found in a config file, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// The config file.
    pub file: PathBuf,
    /// One line per problem, naming the key.
    pub errors: Vec<String>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid config {} ({} problem(s)):", self.file.display(), self.errors.len())?;
        for e in &self.errors {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

/// Reads typed values out of a TOML table by dotted key (`limits.window`), remembering every
/// error and every key read, so that [`ConfigReader::finish`] can report all problems at once,
/// unknown keys included. Relative paths are resolved against the config file's folder, so a
/// config works from wherever the daemon is started.
#[derive(Debug)]
pub struct ConfigReader {
    file: PathBuf,
    base: PathBuf,
    table: toml::Table,
    errors: Vec<String>,
    known: BTreeSet<String>,
}

impl ConfigReader {
    /// Loads `file`. A file that cannot be read or is not TOML is one error, reported at once.
    pub fn load(file: &Path) -> Result<Self, ConfigErrors> {
        let fail = |e: String| ConfigErrors { file: file.to_owned(), errors: vec![e] };
        let text = std::fs::read_to_string(file).map_err(|e| fail(format!("cannot read: {e}")))?;
        let table: toml::Table =
            text.parse().map_err(|e: toml::de::Error| fail(format!("not valid TOML: {}", e.message())))?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Self { file: file.to_owned(), base, table, errors: vec![], known: BTreeSet::new() })
    }

    fn raw(&mut self, key: &str) -> Option<&toml::Value> {
        self.known.insert(key.to_owned());
        let mut parts = key.split('.').peekable();
        let mut table = &self.table;
        while let Some(p) = parts.next() {
            let v = table.get(p)?;
            if parts.peek().is_none() {
                return Some(v);
            }
            table = v.as_table()?;
        }
        None
    }

    /// Records a problem with `key`.
    pub fn error(&mut self, key: &str, msg: impl fmt::Display) {
        self.errors.push(format!("{key}: {msg}"));
    }

    /// A required string, parsed by `parse`.
    pub fn parse<T, E: fmt::Display>(&mut self, key: &str, parse: impl FnOnce(&str) -> Result<T, E>) -> Option<T> {
        match self.raw(key).map(|v| v.as_str().map(str::to_owned)) {
            None => {
                self.error(key, "missing");
                None
            }
            Some(None) => {
                self.error(key, "must be a string");
                None
            }
            Some(Some(s)) => match parse(&s) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.error(key, e);
                    None
                }
            },
        }
    }

    /// An optional string, parsed by `parse`, or `default` when absent.
    pub fn parse_or<T, E: fmt::Display>(
        &mut self,
        key: &str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        if self.raw(key).is_none() {
            return Some(default);
        }
        self.parse(key, parse)
    }

    /// A required string.
    pub fn string(&mut self, key: &str) -> Option<String> {
        self.parse(key, |s| Ok::<_, String>(s.to_owned()))
    }

    /// A required path, resolved against the config file's folder.
    pub fn path(&mut self, key: &str) -> Option<PathBuf> {
        let base = self.base.clone();
        self.parse(key, |s| if s.is_empty() { Err("must not be empty") } else { Ok(base.join(s)) })
    }

    /// An optional path, resolved against the config file's folder.
    pub fn optional_path(&mut self, key: &str) -> Option<PathBuf> {
        self.raw(key)?;
        self.path(key)
    }

    /// A required socket address (`127.0.0.1:7400`).
    pub fn socket_addr(&mut self, key: &str) -> Option<SocketAddr> {
        self.parse(key, |s| s.parse::<SocketAddr>().map_err(|e| format!("{e} (want host:port, e.g. 127.0.0.1:7400)")))
    }

    /// An optional socket address: `None` when absent (or when it does not parse: an error).
    pub fn optional_socket_addr(&mut self, key: &str) -> Option<SocketAddr> {
        self.raw(key)?;
        self.socket_addr(key)
    }

    /// An optional integer in `min..=max`, or `default`.
    pub fn u64_or(&mut self, key: &str, default: u64, min: u64, max: u64) -> u64 {
        match self.raw(key).map(toml::Value::as_integer) {
            None => default,
            Some(Some(i)) if i >= 0 && (min..=max).contains(&(i as u64)) => i as u64,
            Some(_) => {
                self.error(key, format!("must be an integer from {min} to {max}"));
                default
            }
        }
    }

    /// An optional list of user or group ids (`[0, 1001]`) of at most `max` entries, or empty.
    pub fn id_list_or_empty(&mut self, key: &str, max: usize) -> Vec<u32> {
        let parsed = match self.raw(key) {
            None => return vec![],
            Some(toml::Value::Array(a)) if a.len() <= max => {
                a.iter().map(|v| v.as_integer().and_then(|i| u32::try_from(i).ok())).collect::<Option<Vec<u32>>>()
            }
            Some(_) => None,
        };
        parsed.unwrap_or_else(|| {
            self.error(key, format!("must be a list of at most {max} ids, each from 0 to {}", u32::MAX));
            vec![]
        })
    }

    /// An optional duration in milliseconds (`key` ends in `_ms`), in `min..=max`, or `default`.
    pub fn millis_or(&mut self, key: &str, default: Duration, min: Duration, max: Duration) -> Duration {
        let ms = self.u64_or(key, default.as_millis() as u64, min.as_millis() as u64, max.as_millis() as u64);
        Duration::from_millis(ms)
    }

    /// `log_format`, which every daemon has: `plain` (the default) or `json`.
    pub fn log_format(&mut self) -> Option<crate::LogFormat> {
        self.parse_or("log_format", crate::LogFormat::Plain, crate::LogFormat::parse)
    }

    /// `log_level`, which every daemon may have: a `tracing` filter (`RUST_LOG` syntax) that
    /// wins over `RUST_LOG`; absent, `RUST_LOG` (else `info`) decides. Re-read on SIGHUP.
    pub fn log_level(&mut self) -> Option<crate::LogLevel> {
        self.raw("log_level")?;
        self.parse("log_level", crate::LogLevel::parse)
    }

    /// The keep-alive interval and idle timeout of a daemon's QUIC link, which every daemon
    /// has under `timers`: `timers.keep_alive_ms` (default 2 s, 100 ms to 60 s) and
    /// `timers.idle_timeout_ms` (default 10 s, 500 ms to 600 s); a keep-alive that is not
    /// shorter than the idle timeout is an error (the link would drop between two pings).
    pub fn link_keep_alive_and_idle(&mut self) -> (Duration, Duration) {
        let ms = Duration::from_millis;
        let keep_alive = self.millis_or("timers.keep_alive_ms", ms(2_000), ms(100), ms(60_000));
        let idle = self.millis_or("timers.idle_timeout_ms", ms(10_000), ms(500), ms(600_000));
        if keep_alive >= idle {
            self.error("timers.keep_alive_ms", "must be shorter than timers.idle_timeout_ms");
        }
        (keep_alive, idle)
    }

    /// Ends reading: unknown keys are errors too. All problems or nothing.
    pub fn finish(mut self) -> Result<(), ConfigErrors> {
        let mut unknown = Vec::new();
        collect_keys(&self.table, "", &mut |k| {
            if !self.known.contains(k) {
                unknown.push(k.to_owned());
            }
        });
        for k in unknown {
            self.errors.push(format!("{k}: unknown key"));
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors { file: self.file, errors: self.errors })
        }
    }
}

fn collect_keys(t: &toml::Table, prefix: &str, f: &mut impl FnMut(&str)) {
    for (k, v) in t {
        let full = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v.as_table() {
            Some(sub) => collect_keys(sub, &full, f),
            None => f(&full),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_problem_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "name = 3\naddr = \"nowhere\"\nstray = 1\n[limits]\nwindow = -1\ntypo = 2\n")
            .expect("write");
        let mut r = ConfigReader::load(&f).expect("valid TOML");
        assert_eq!(r.string("name"), None);
        assert_eq!(r.socket_addr("addr"), None);
        assert_eq!(r.path("data_dir"), None);
        assert_eq!(r.u64_or("limits.window", 7, 1, 10), 7);
        assert_eq!(r.u64_or("limits.absent", 9, 1, 10), 9);
        let errs = r.finish().expect_err("invalid").errors;
        let keys: Vec<&str> = errs.iter().map(|e| e.split(':').next().unwrap_or("")).collect();
        assert_eq!(keys, ["name", "addr", "data_dir", "limits.window", "limits.typo", "stray"], "{errs:?}");
    }

    #[test]
    fn id_lists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "a = [0, 1001]\nb = [-1]\nc = \"1001\"\nd = [1, 2, 3]\ne = [4294967296]\n").expect("write");
        let mut r = ConfigReader::load(&f).expect("valid TOML");
        assert_eq!(r.id_list_or_empty("a", 4), vec![0, 1001]);
        assert_eq!(r.id_list_or_empty("absent", 4), Vec::<u32>::new());
        for k in ["b", "c", "d", "e"] {
            assert_eq!(r.id_list_or_empty(k, 2), Vec::<u32>::new(), "{k}");
        }
        let errs = r.finish().expect_err("invalid").errors;
        let keys: Vec<&str> = errs.iter().map(|e| e.split(':').next().unwrap_or("")).collect();
        assert_eq!(keys, ["b", "c", "d", "e"], "{errs:?}");
    }

    #[test]
    fn keys_every_daemon_shares() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "").expect("write");
        let mut r = ConfigReader::load(&f).expect("valid");
        assert_eq!(r.log_format(), Some(crate::LogFormat::Plain));
        assert_eq!(r.log_level(), None);
        assert_eq!(r.link_keep_alive_and_idle(), (Duration::from_secs(2), Duration::from_secs(10)));
        assert!(r.finish().is_ok());

        std::fs::write(&f, "log_level = \"warn,inflight_master=debug\"\n").expect("write");
        let mut r = ConfigReader::load(&f).expect("valid");
        assert_eq!(r.log_level().as_ref().map(crate::LogLevel::as_str), Some("warn,inflight_master=debug"));
        assert!(r.finish().is_ok());
        for bad in ["log_level = \"\"", "log_level = \"info,[\"", "log_level = 3"] {
            std::fs::write(&f, bad).expect("write");
            let mut r = ConfigReader::load(&f).expect("valid");
            assert_eq!(r.log_level(), None, "{bad}");
            let errs = r.finish().expect_err(bad).errors;
            assert!(errs.len() == 1 && errs[0].starts_with("log_level: "), "{bad}: {errs:?}");
        }

        std::fs::write(&f, "log_format = \"json\"\n[timers]\nkeep_alive_ms = 300\nidle_timeout_ms = 900\n")
            .expect("write");
        let mut r = ConfigReader::load(&f).expect("valid");
        assert_eq!(r.log_format(), Some(crate::LogFormat::Json));
        assert_eq!(r.link_keep_alive_and_idle(), (Duration::from_millis(300), Duration::from_millis(900)));
        assert!(r.finish().is_ok());

        std::fs::write(&f, "log_format = \"xml\"\n[timers]\nkeep_alive_ms = 5000\nidle_timeout_ms = 5000\n")
            .expect("write");
        let mut r = ConfigReader::load(&f).expect("valid");
        assert_eq!(r.log_format(), None);
        r.link_keep_alive_and_idle();
        let errs = r.finish().expect_err("invalid").errors;
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("log_format: "), "{errs:?}");
        assert_eq!(errs[1], "timers.keep_alive_ms: must be shorter than timers.idle_timeout_ms");
    }

    #[test]
    fn an_optional_address_is_none_when_absent_and_an_error_when_bad() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "metrics_listen = \"127.0.0.1:9400\"\nother = \"nowhere\"\n").expect("write");
        let mut r = ConfigReader::load(&f).expect("valid");
        assert_eq!(r.optional_socket_addr("metrics_listen"), Some("127.0.0.1:9400".parse().expect("literal")));
        assert_eq!(r.optional_socket_addr("absent"), None);
        assert_eq!(r.optional_socket_addr("other"), None);
        let errs = r.finish().expect_err("invalid").errors;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("other: "), "{errs:?}");
    }

    #[test]
    fn paths_resolve_against_the_config_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "data_dir = \"../data\"\n").expect("write");
        let mut r = ConfigReader::load(&f).expect("valid");
        assert_eq!(r.path("data_dir"), Some(dir.path().join("../data")));
        assert!(r.finish().is_ok());
    }
}
