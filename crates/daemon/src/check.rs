//! What `<daemon> check --config FILE` reports, and the checks of files and folders every daemon
//! shares (private keys, data and socket folders).
//!
//! A check collects every finding before it prints any: one line per finding on stderr, then a
//! summary line; exit 64 if any finding is a problem, 0 otherwise (warnings alone pass). Each
//! line names the config key and the file; none holds key material or card data (the checks
//! only report what is wrong with a file, never what is in it).
//!
//! A check never opens a store: sled takes an exclusive lock on it, and a check run next to a
//! running daemon must not disturb it. It checks that the store's folder is a folder this user
//! can write to, or can create.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::ConfigErrors;

/// Longest path a Unix socket can be bound at (`sun_path` is 108 bytes with the final NUL).
pub const SOCKET_PATH_BYTES_MAX: usize = 107;

/// Longest lead-in before a path that [`CheckReport`] drops with it ("key file ").
const PATH_LEAD_CHARS_MAX: usize = 16;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The daemon would not start, or would start and be refused by its peers: exit 64.
    Problem,
    /// Worth fixing soon (a certificate near its end, a daemon already running): exit 0.
    Warning,
}

/// One thing a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Problem or warning.
    pub severity: Severity,
    /// The config key it is about (`tls.key_file`), or `config` for the file as a whole.
    pub key: String,
    /// The file or folder it is about, when there is one.
    pub file: Option<PathBuf>,
    /// What is wrong, in a sentence.
    pub what: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Problem => "problem",
            Severity::Warning => "warning",
        };
        match &self.file {
            Some(file) => write!(f, "{level}: {} ({}): {}", self.key, file.display(), self.what),
            None => write!(f, "{level}: {}: {}", self.key, self.what),
        }
    }
}

/// Every finding of one check of one config file.
#[derive(Debug)]
pub struct CheckReport {
    /// The config file checked.
    config: PathBuf,
    /// In the order found.
    findings: Vec<Finding>,
}

impl CheckReport {
    /// An empty report for `config`.
    pub fn new(config: &Path) -> Self {
        Self { config: config.to_owned(), findings: Vec::new() }
    }

    /// Records a problem with `key` (and `file`).
    pub fn problem(&mut self, key: &str, file: Option<&Path>, what: impl fmt::Display) {
        self.push(Severity::Problem, key, file, what);
    }

    /// Records a warning about `key` (and `file`).
    pub fn warning(&mut self, key: &str, file: Option<&Path>, what: impl fmt::Display) {
        self.push(Severity::Warning, key, file, what);
    }

    /// Records findings about `key` and `file`, each `(is a problem, what it says)` (as
    /// `inflight_net::check::tls_files` gives them).
    pub fn found_all(&mut self, key: &str, file: &Path, findings: impl IntoIterator<Item = (bool, String)>) {
        for (problem, what) in findings {
            self.found(problem, key, file, what);
        }
    }

    /// Records a problem (`problem`) or a warning about `key` and `file`.
    pub fn found(&mut self, problem: bool, key: &str, file: &Path, what: impl fmt::Display) {
        let severity = if problem { Severity::Problem } else { Severity::Warning };
        self.push(severity, key, Some(file), what);
    }

    fn push(&mut self, severity: Severity, key: &str, file: Option<&Path>, what: impl fmt::Display) {
        let mut what = what.to_string();
        // Errors of the loading code often open with the path ("key file <path>: ..."); the
        // line names the key and the file already.
        if let Some(prefix) = file.map(|f| format!("{}: ", f.display())) {
            if let Some(at) = what.find(&prefix).filter(|&at| at <= PATH_LEAD_CHARS_MAX) {
                what = what[at + prefix.len()..].to_owned();
            }
        }
        self.findings.push(Finding { severity, key: key.to_owned(), file: file.map(Path::to_path_buf), what });
    }

    /// Records every problem of a config that does not load (one per line of `errors`, each
    /// `key: what`; a file that cannot be read or is not TOML is `config`).
    pub fn config_errors(&mut self, errors: &ConfigErrors) {
        for e in &errors.errors {
            match e.split_once(": ") {
                Some((key, what)) if !key.contains(' ') => self.problem(key, None, what),
                _ => self.problem("config", Some(&errors.file), e),
            }
        }
    }

    /// The loaded config, or `None` with every problem of it recorded ([`CheckReport::config_errors`]):
    /// the checks of the files it names then have nothing to go on.
    pub fn config<T>(&mut self, loaded: Result<T, ConfigErrors>) -> Option<T> {
        loaded.map_err(|e| self.config_errors(&e)).ok()
    }

    /// `r`'s value, or its error recorded as a problem with `key` and `file`.
    pub fn result<T, E: fmt::Display>(&mut self, key: &str, file: Option<&Path>, r: Result<T, E>) -> Option<T> {
        r.map_err(|e| self.problem(key, file, e)).ok()
    }

    /// Every finding so far.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// How many findings are problems.
    pub fn problems(&self) -> usize {
        self.findings.iter().filter(|f| f.severity == Severity::Problem).count()
    }

    /// The last line: counts, and whether `name` would start with this config.
    pub fn summary(&self, name: &str) -> String {
        let problems = self.problems();
        let warnings = self.findings.len() - problems;
        let verdict = if problems == 0 { "the daemon would start" } else { "the daemon would not start" };
        format!("{name} check {}: {problems} problem(s), {warnings} warning(s): {verdict}", self.config.display())
    }

    /// Prints every finding and the summary to stderr; exit 64 on any problem, else 0.
    pub fn finish(self, name: &str) -> std::process::ExitCode {
        for f in &self.findings {
            eprintln!("{f}");
        }
        eprintln!("{}", self.summary(name));
        if self.problems() == 0 {
            std::process::ExitCode::SUCCESS
        } else {
            crate::exit(crate::EXIT_CONFIG)
        }
    }

    /// Checks that `path` names a file this user can read. Returns whether it can.
    pub fn readable_file(&mut self, key: &str, path: &Path) -> bool {
        match std::fs::metadata(path) {
            Ok(m) if !m.is_file() => self.problem(key, Some(path), "is not a regular file"),
            Ok(_) => match std::fs::File::open(path) {
                Ok(_) => return true,
                Err(e) => self.problem(key, Some(path), format!("cannot be read by this user: {e}")),
            },
            Err(e) => self.problem(key, Some(path), format!("cannot be read: {e}")),
        }
        false
    }

    /// Checks a private key file the way the daemons read their card keys: a regular file (not
    /// a symbolic link), readable, that only its owner may read or write (mode 0600 or
    /// stricter), owned by this user (unless this user is root). Returns whether it passes.
    pub fn private_key_file(&mut self, key: &str, path: &Path) -> bool {
        match secret_file_problem(path) {
            Some(what) => {
                self.problem(key, Some(path), what);
                false
            }
            None => true,
        }
    }

    /// Checks that `path` is a folder this user can create files in, or that it can be created
    /// (its nearest existing parent is such a folder). Never opens what is inside.
    pub fn directory(&mut self, key: &str, path: &Path) {
        match std::fs::metadata(path) {
            Ok(m) if !m.is_dir() => self.problem(key, Some(path), "exists and is not a folder"),
            Ok(_) => {
                if let Err(e) = probe_writable(path) {
                    self.problem(key, Some(path), format!("this user cannot create files in it: {e}"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let parent = path.ancestors().skip(1).find(|a| a.exists());
                match parent {
                    Some(p) if p.is_dir() => {
                        if let Err(e) = probe_writable(p) {
                            self.problem(
                                key,
                                Some(path),
                                format!("does not exist and cannot be created in {}: {e}", p.display()),
                            );
                        }
                    }
                    _ => self.problem(key, Some(path), "does not exist and cannot be created"),
                }
            }
            Err(e) => self.problem(key, Some(path), format!("cannot be read: {e}")),
        }
    }

    /// Checks a Unix socket path the daemon will bind: short enough for a socket address, its
    /// folder usable ([`CheckReport::directory`]), and nothing but a stale socket there. A
    /// daemon answering on it is a warning (check is often run next to the running daemon; a
    /// second one would not start).
    pub fn socket_path(&mut self, key: &str, path: &Path) {
        let len = path.as_os_str().len();
        if len > SOCKET_PATH_BYTES_MAX {
            self.problem(
                key,
                Some(path),
                format!("is {len} bytes long; a Unix socket path holds at most {SOCKET_PATH_BYTES_MAX}"),
            );
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_socket() => {
                    if std::os::unix::net::UnixStream::connect(path).is_ok() {
                        self.warning(key, Some(path), "a daemon is running and listening on it");
                    }
                }
                Ok(_) => self.problem(key, Some(path), "exists and is not a socket (the daemon never replaces it)"),
                Err(_) => {}
            }
        }
        match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => self.directory(key, dir),
            _ => self.directory(key, Path::new(".")),
        }
    }
}

/// Why `path` is not a private key file the daemons accept, or `None` when it is. The rules of
/// `inflight_store`'s key files (the card keys, the issuer's signing key), applied to the TLS
/// private keys too.
pub fn secret_file_problem(path: &Path) -> Option<String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => return Some(format!("cannot be read: {e}")),
    };
    if meta.file_type().is_symlink() {
        return Some("is a symbolic link; name the key file itself".into());
    }
    if !meta.is_file() {
        return Some("is not a regular file".into());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Some(format!("mode {:o} lets others read it; chmod 600", mode & 0o777));
        }
        // /proc/self belongs to the process's effective user (Linux); elsewhere, not checked.
        if let Ok(me) = std::fs::metadata("/proc/self").map(|m| m.uid()) {
            if meta.uid() != me && me != 0 {
                return Some(format!("owned by uid {}, not by this user (uid {me})", meta.uid()));
            }
        }
    }
    if let Err(e) = std::fs::File::open(path) {
        return Some(format!("cannot be read by this user: {e}"));
    }
    None
}

/// Creates and removes an empty file in `dir`: whether this user may create files there (mode
/// bits alone do not say: ACLs, read-only mounts, root).
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".inflight-check-{}", std::process::id()));
    std::fs::OpenOptions::new().write(true).create_new(true).open(&probe)?;
    std::fs::remove_file(&probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(dir: &Path, name: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, "-----BEGIN PRIVATE KEY-----\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }

    #[test]
    fn private_keys_must_be_private_regular_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = key_file(dir.path(), "good.key", 0o600);
        let stricter = key_file(dir.path(), "stricter.key", 0o400);
        let open = key_file(dir.path(), "open.key", 0o644);
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&good, &link).expect("symlink");
        let mut r = CheckReport::new(&dir.path().join("c.toml"));
        assert!(r.private_key_file("a", &good));
        assert!(r.private_key_file("b", &stricter));
        assert!(!r.private_key_file("c", &open));
        assert!(!r.private_key_file("d", &link));
        assert!(!r.private_key_file("e", &dir.path().join("absent.key")));
        assert!(!r.private_key_file("f", dir.path()));
        let keys: Vec<&str> = r.findings().iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["c", "d", "e", "f"]);
        assert!(r.findings()[0].what.contains("mode 644"), "{:?}", r.findings()[0]);
        assert_eq!(r.problems(), 4);
    }

    #[test]
    fn folders_exist_or_can_be_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, "x").expect("write");
        let mut r = CheckReport::new(&dir.path().join("c.toml"));
        r.directory("a", dir.path());
        r.directory("b", &dir.path().join("new/deeper"));
        r.directory("c", &file);
        r.directory("d", &file.join("under-a-file"));
        let keys: Vec<&str> = r.findings().iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["c", "d"], "{:?}", r.findings());
        assert!(!dir.path().join("new").exists(), "a check creates nothing");
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("list").collect();
        assert_eq!(left.len(), 1, "the probe file is removed");
    }

    #[test]
    fn socket_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = CheckReport::new(&dir.path().join("c.toml"));
        r.socket_path("fine", &dir.path().join("d.sock"));
        let long = dir.path().join("x".repeat(SOCKET_PATH_BYTES_MAX));
        r.socket_path("long", &long);
        let file = dir.path().join("file.sock");
        std::fs::write(&file, "x").expect("write");
        r.socket_path("file", &file);
        let live = dir.path().join("live.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&live).expect("bind");
        r.socket_path("live", &live);
        let got: Vec<(&str, Severity)> = r.findings().iter().map(|f| (f.key.as_str(), f.severity)).collect();
        assert_eq!(
            got,
            [("long", Severity::Problem), ("file", Severity::Problem), ("live", Severity::Warning)],
            "{:?}",
            r.findings()
        );
    }

    #[test]
    fn lines_name_key_and_file_and_the_summary_counts() {
        let mut r = CheckReport::new(Path::new("/etc/inflight/master.toml"));
        let key = Path::new("/k/master.key");
        r.problem("tls.key_file", Some(key), "/k/master.key: no private key in file");
        r.problem("card_key_file", Some(key), "key file /k/master.key: not found");
        r.warning("tls.cert_file", Some(Path::new("/k/master.pem")), "ends in 3 day(s)");
        r.config_errors(&ConfigErrors {
            file: "/etc/inflight/master.toml".into(),
            errors: vec!["limits.window: must be an integer".into(), "cannot read: denied".into()],
        });
        let lines: Vec<String> = r.findings().iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "problem: tls.key_file (/k/master.key): no private key in file",
                "problem: card_key_file (/k/master.key): not found",
                "warning: tls.cert_file (/k/master.pem): ends in 3 day(s)",
                "problem: limits.window: must be an integer",
                "problem: config (/etc/inflight/master.toml): cannot read: denied",
            ]
        );
        assert_eq!(
            r.summary("inflight-master"),
            "inflight-master check /etc/inflight/master.toml: 4 problem(s), 1 warning(s): the daemon would not start"
        );
        assert_eq!(r.finish("inflight-master"), crate::exit(64));
        let ok = CheckReport::new(Path::new("c.toml"));
        assert!(ok.summary("d").ends_with("0 problem(s), 0 warning(s): the daemon would start"));
        assert_eq!(ok.finish("d"), std::process::ExitCode::SUCCESS);
    }
}
