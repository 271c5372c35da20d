//! End-to-end test harness: a local deployment made by the real `inflight-setup`, real daemon
//! processes, and clients that speak to them the way a sale app or a terminal would.
//!
//! The binaries are the workspace's own, found next to the test executable
//! (`target/<profile>/`). `cargo nextest run --workspace` (and `cargo test --workspace`) builds
//! them first, because each daemon crate has integration tests of its binary.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

/// Path of a workspace binary.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let p = dir.join(name);
    assert!(p.is_file(), "{} not built: run `cargo build --workspace` (or the README's test command)", p.display());
    p
}

/// A free UDP port on loopback (bound, read, released).
pub fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    s.local_addr().expect("addr").port()
}

/// A port P with P and P+1 both free (master and issuer), chosen below Linux's ephemeral range
/// (32768-60999) so that the client endpoints of concurrently running tests, which bind
/// ephemeral ports, cannot take them between this check and the daemons' start.
pub fn free_udp_port_pair() -> u16 {
    let mut seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
    for _ in 0..200 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let p = 20_000 + (seed >> 33) as u16 % 12_000;
        let a = std::net::UdpSocket::bind(("127.0.0.1", p));
        let b = std::net::UdpSocket::bind(("127.0.0.1", p + 1));
        if a.is_ok() && b.is_ok() {
            return p;
        }
    }
    panic!("no free pair of UDP ports found");
}

/// Terminals' claim period in tests, milliseconds (see `claim_grace_ms` in the slave config).
pub const CLAIM_GRACE_MS: u64 = 3_000;

/// One test card from `test-cards.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Card {
    /// Full number (test data).
    pub pan: String,
    /// MM/YY.
    pub expiry: String,
    /// credit, debit, check.
    pub kind: String,
    /// On the BIN list.
    pub enrolled: bool,
    /// Available amount.
    pub available_minor: u64,
    /// Currency.
    pub currency: String,
    /// open, blocked, or lost (on the issuer's hot-card list from the start).
    pub status: String,
    /// A chip card (`inflight-setup chip-data` makes its chip data).
    #[serde(default)]
    pub chip: bool,
    /// Its PAN sequence number.
    #[serde(default)]
    pub pan_sequence: u8,
}

/// A deployment written by `inflight-setup local` into a temporary folder.
#[derive(Debug)]
pub struct Deployment {
    /// The folder (removed on drop).
    pub dir: tempfile::TempDir,
    /// Number of terminals.
    pub terminals: u32,
}

impl Deployment {
    /// Runs `inflight-setup local --out <tmp> --terminals N --base-port <free>`.
    pub fn new(terminals: u32) -> Self {
        let dir = tempfile::Builder::new().prefix("inflight-e2e").tempdir_in("/tmp").expect("tempdir");
        let port = free_udp_port_pair();
        let out = Command::new(bin("inflight-setup"))
            .args(["local", "--out"])
            .arg(dir.path())
            .args(["--terminals", &terminals.to_string(), "--base-port", &port.to_string()])
            .output()
            .expect("run inflight-setup");
        assert!(out.status.success(), "inflight-setup failed: {}", String::from_utf8_lossy(&out.stderr));
        let dep = Self { dir, terminals };
        // A short claim period, so tests that kill terminals see unanswered payments voided
        // within the test (a deployment's default is a minute).
        for k in 1..=terminals {
            dep.set_config(&format!("slave-{k}"), "claim_grace_ms", &CLAIM_GRACE_MS.to_string());
        }
        dep
    }

    /// `config/<name>.toml`.
    pub fn config(&self, name: &str) -> PathBuf {
        self.dir.path().join("config").join(format!("{name}.toml"))
    }

    /// A file under the deployment.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The published test cards.
    pub fn cards(&self) -> Vec<Card> {
        serde_json::from_slice(&std::fs::read(self.path("test-cards.json")).expect("test-cards.json"))
            .expect("valid JSON")
    }

    /// Starts the master and waits until it answers on its admin socket.
    pub fn start_master(&self) -> Daemon {
        self.start_master_env(&[])
    }

    /// Starts the master with extra environment (e.g. an armed crash point).
    pub fn start_master_env(&self, env: &[(&str, &str)]) -> Daemon {
        let mut d = Daemon::spawn_env("inflight-master", &self.config("master"), &self.path("master.log"), env);
        d.wait_socket(&self.path("run/master.sock"));
        d
    }

    /// Starts the issuer and waits until it answers on its admin socket.
    pub fn start_issuer(&self) -> Daemon {
        self.start_issuer_env(&[])
    }

    /// Starts the issuer with extra environment.
    pub fn start_issuer_env(&self, env: &[(&str, &str)]) -> Daemon {
        let mut d = Daemon::spawn_env("inflight-issuer", &self.config("issuer"), &self.path("issuer.log"), env);
        d.wait_socket(&self.path("run/issuer.sock"));
        d
    }

    /// Issuer, master and every terminal, with the BIN list on every terminal (the gate).
    pub fn start_flight(&self) -> (Daemon, Daemon, Vec<Daemon>) {
        let issuer = self.start_issuer();
        let master = self.start_master();
        let slaves = (1..=self.terminals).map(|k| self.start_slave(k)).collect();
        self.wait_bin_lists();
        (issuer, master, slaves)
    }

    /// Waits until every terminal holds a valid BIN list.
    pub fn wait_bin_lists(&self) {
        for k in 1..=self.terminals {
            self.wait_for(&format!("slave-{k} has the BIN list"), Duration::from_secs(30), || {
                self.slave_status(k, None)["bin_list_valid"] == true
            });
        }
    }

    /// Waits until every terminal holds the issuer's hot-card list at `version` or later.
    pub fn wait_hot_lists(&self, version: u64) {
        for k in 1..=self.terminals {
            self.wait_for(&format!("slave-{k} has hot-card list {version}"), Duration::from_secs(30), || {
                self.slave_status(k, None)["hot_list_version"].as_u64().is_some_and(|v| v >= version)
            });
        }
    }

    /// `inflight-master link <mode>`.
    pub fn master_link(&self, mode: &str) {
        let out = Command::new(bin("inflight-master"))
            .args(["link", mode, "--config"])
            .arg(self.config("master"))
            .output()
            .expect("run link");
        assert!(out.status.success(), "link {mode}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `inflight-issuer ledger`: one JSON object per decided payment.
    pub fn ledger(&self) -> Vec<Value> {
        self.issuer_lines("ledger")
    }

    /// `inflight-issuer accounts`: one JSON object per account.
    pub fn accounts(&self) -> Vec<Value> {
        self.issuer_lines("accounts")
    }

    /// `inflight-issuer <command> --config …`, which prints JSON lines.
    fn issuer_lines(&self, command: &str) -> Vec<Value> {
        let out = Command::new(bin("inflight-issuer"))
            .args([command, "--config"])
            .arg(self.config("issuer"))
            .output()
            .unwrap_or_else(|e| panic!("run {command}: {e}"));
        assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{command} line is not JSON: {e}")))
            .collect()
    }

    /// The exactly-once checker, in money. Every payment in `accepted` is decided once, with
    /// the amount its terminal captured, and its terminal holds the issuer's decision; nothing
    /// else is decided; and every account's available amount is its opening amount minus the
    /// approved amounts charged to its card — so a payment charged twice (the ledger, keyed by
    /// payment id, would still show one line) or an approval without a ledger line is caught.
    /// Terminals are asked through their sockets when running, else read from their stores.
    /// Returns the ledger.
    pub fn assert_exactly_once_in_money(&self, accepted: &BTreeSet<String>) -> Vec<Value> {
        let ledger = self.ledger();
        let mut by_id = BTreeMap::<String, &Value>::new();
        for l in &ledger {
            let id = l["payment_id"].as_str().expect("payment_id").to_owned();
            assert!(by_id.insert(id.clone(), l).is_none(), "ledger lists {id} twice");
        }
        let decided: BTreeSet<String> = by_id.keys().cloned().collect();
        let lost: Vec<_> = accepted.difference(&decided).collect();
        let extra: Vec<_> = decided.difference(accepted).collect();
        assert!(lost.is_empty(), "accepted but never decided: {lost:?}");
        assert!(extra.is_empty(), "decided without an accepted capture: {extra:?}");

        let mut terminals = TerminalViews::new(self);
        for id in accepted {
            let l = by_id[id];
            let v = terminals.find(id).unwrap_or_else(|| panic!("accepted payment {id} is on no terminal"));
            for field in ["amount_minor", "currency", "card"] {
                assert_eq!(v[field], l[field], "{id}: terminal and ledger differ in {field}");
            }
            for field in ["outcome", "auth_code"] {
                assert_eq!(v[field], l[field], "{id}: the terminal's result differs from the ledger in {field}");
            }
            assert_eq!(v["decline_reason"], l["reason"], "{id}: the terminal's decline reason differs from the ledger");
        }

        let mut approved = BTreeMap::<(String, String), u64>::new();
        for l in ledger.iter().filter(|l| l["outcome"] == "approved") {
            let key =
                (l["card"].as_str().expect("card").to_owned(), l["currency"].as_str().expect("currency").to_owned());
            *approved.entry(key).or_default() += l["amount_minor"].as_u64().expect("amount_minor");
        }
        let mut seen = BTreeSet::new();
        for a in self.accounts() {
            let key =
                (a["card"].as_str().expect("card").to_owned(), a["currency"].as_str().expect("currency").to_owned());
            assert!(
                seen.insert(key.clone()),
                "two accounts share the masked card {key:?}: the check would be ambiguous"
            );
            let opening = a["opening_minor"].as_u64().expect("opening_minor");
            let available = a["available_minor"].as_u64().expect("available_minor");
            let charged = approved.remove(&key).unwrap_or(0);
            assert_eq!(
                Some(available),
                opening.checked_sub(charged),
                "account {key:?}: opening {opening} − approved {charged} ≠ available {available}"
            );
        }
        assert!(approved.is_empty(), "approved payments charged to no account: {approved:?}");
        ledger
    }

    /// Replaces `key = ...` in a config file (first occurrence), keeping the rest.
    pub fn set_config(&self, name: &str, key: &str, value: &str) {
        let path = self.config(name);
        let text = std::fs::read_to_string(&path).expect("config");
        let mut done = false;
        let lines: Vec<String> = text
            .lines()
            .map(|l| {
                if !done && l.starts_with(&format!("{key} =")) {
                    done = true;
                    format!("{key} = {value}")
                } else {
                    l.to_owned()
                }
            })
            .collect();
        assert!(done, "{key} not in {}", path.display());
        std::fs::write(&path, lines.join("\n") + "\n").expect("write config");
    }

    /// Adds a top-level `line` (`key = value`) to a config file, before its first table.
    pub fn prepend_config(&self, name: &str, line: &str) {
        let path = self.config(name);
        let text = std::fs::read_to_string(&path).expect("config");
        std::fs::write(&path, format!("{line}\n{text}")).expect("write config");
    }

    /// The whole text of a daemon's log (`master`, `issuer`, `slave-<k>`).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
    }

    /// Starts terminal `k` and waits until its capture socket answers.
    pub fn start_slave(&self, k: u32) -> Daemon {
        let mut d =
            Daemon::spawn("inflight-slave", &self.config(&format!("slave-{k}")), &self.path(&format!("slave-{k}.log")));
        d.wait_socket(&self.slave_socket(k));
        d
    }

    /// Starts terminal `k` with extra environment and waits until its capture socket answers.
    pub fn start_slave_env(&self, k: u32, env: &[(&str, &str)]) -> Daemon {
        let mut d = Daemon::spawn_env(
            "inflight-slave",
            &self.config(&format!("slave-{k}")),
            &self.path(&format!("slave-{k}.log")),
            env,
        );
        d.wait_socket(&self.slave_socket(k));
        d
    }

    /// Terminal `k`'s capture socket.
    pub fn slave_socket(&self, k: u32) -> PathBuf {
        self.path(&format!("run/slave-{k}.sock"))
    }

    /// The master's status (from the daemon, or from its store when it is stopped).
    pub fn master_status(&self, payment: Option<&str>) -> Value {
        let mut cmd = Command::new(bin("inflight-master"));
        cmd.args(["status", "--config"]).arg(self.config("master"));
        if let Some(p) = payment {
            cmd.args(["--payment", p]);
        }
        run_json(cmd)
    }

    /// Terminal `k`'s status.
    pub fn slave_status(&self, k: u32, payment: Option<&str>) -> Value {
        let mut cmd = Command::new(bin("inflight-slave"));
        cmd.args(["status", "--config"]).arg(self.config(&format!("slave-{k}")));
        if let Some(p) = payment {
            cmd.args(["--payment", p]);
        }
        run_json(cmd)
    }

    /// The master's `payments.total`.
    pub fn master_total(&self) -> u64 {
        self.master_status(None)["payments"]["total"].as_u64().expect("payments.total")
    }

    /// Waits until `cond` holds, or panics after `timeout` with `what`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every byte of every file under `data/` and every log: no test card number in any form
    /// (ASCII, packed BCD, UTF-16, as encoded in records and frames), and no unkeyed digest of any
    /// decided payment (see `inflight_sim::leaks`). Terminals are asked through their sockets
    /// when running, else read from their stores.
    pub fn assert_no_full_pan_anywhere(&self) {
        let cards = self.cards();
        let mut scanner = inflight_sim::leaks::CardScanner::new();
        for c in &cards {
            scanner.add_pan(&c.pan);
        }
        let mut terminals = TerminalViews::new(self);
        let mut payments = 0;
        for l in self.ledger() {
            let id = l["payment_id"].as_str().expect("payment_id");
            let Some((k, v)) = terminals.find_on(id) else { continue };
            let card = cards
                .iter()
                .find(|c| inflight_wire::Pan::parse(&c.pan).is_ok_and(|p| p.masked().to_string() == v["card"]))
                .expect("a test card");
            let currency = inflight_wire::Currency::parse(v["currency"].as_str().expect("currency")).expect("currency");
            scanner.add_payment(&inflight_wire::Payment {
                id: inflight_wire::PaymentId::parse(id).expect("payment id"),
                terminal: inflight_wire::TerminalId::parse(&format!("slave-{k}")).expect("terminal id"),
                pan: inflight_wire::Pan::parse(&card.pan).expect("pan"),
                expiry: inflight_wire::Expiry::parse(&card.expiry).expect("expiry"),
                amount: inflight_wire::Money::new(v["amount_minor"].as_u64().expect("amount"), currency)
                    .expect("money"),
                seat: v["seat"].as_str().expect("seat").to_owned(),
                captured_unix_ms: v["captured_unix_ms"].as_u64().expect("captured_unix_ms"),
                items: vec![],
                emv: None,
                pos: inflight_wire::PointOfSale::LEGACY,
            });
            payments += 1;
        }
        drop(terminals);
        let mut found = scanner.scan_dir(&self.path("data"));
        for e in std::fs::read_dir(self.dir.path()).expect("deployment dir") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "log") {
                let bytes = std::fs::read(&p).unwrap_or_default();
                if let Some(what) = scanner.find(&bytes) {
                    found.push((p, what.to_owned()));
                }
            }
        }
        assert!(found.is_empty(), "card data found ({payments} payments' digests looked for): {found:?}");
    }
}

fn run_json(mut cmd: Command) -> Value {
    let out = cmd.output().expect("run status");
    assert!(out.status.success(), "status failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("status prints JSON")
}

/// Each terminal's view of its payments: its socket while it runs, its store when stopped.
struct TerminalViews<'a> {
    dep: &'a Deployment,
    sockets: BTreeMap<u32, SaleApp>,
    stores: BTreeMap<u32, inflight_store::SlaveStore>,
}

impl<'a> TerminalViews<'a> {
    fn new(dep: &'a Deployment) -> Self {
        Self { dep, sockets: BTreeMap::new(), stores: BTreeMap::new() }
    }

    /// The payment as its terminal shows it (`inflight-slave status --payment` fields).
    fn find(&mut self, id: &str) -> Option<Value> {
        self.find_on(id).map(|(_, v)| v)
    }

    /// [`TerminalViews::find`], with the terminal's number.
    fn find_on(&mut self, id: &str) -> Option<(u32, Value)> {
        (1..=self.dep.terminals).find_map(|k| self.on(k, id).map(|v| (k, v)))
    }

    fn on(&mut self, k: u32, id: &str) -> Option<Value> {
        if !self.stores.contains_key(&k) && !self.sockets.contains_key(&k) {
            match SaleApp::connect(&self.dep.slave_socket(k)) {
                Ok(app) => {
                    self.sockets.insert(k, app);
                }
                Err(_) => {
                    let key =
                        inflight_store::CardVault::from_key_file(&self.dep.path(&format!("keys/slave-{k}.card.key")))
                            .expect("slave key");
                    let s = inflight_store::SlaveStore::open(&self.dep.path(&format!("data/slave-{k}")), key, 2 << 20)
                        .expect("slave store");
                    self.stores.insert(k, s);
                }
            }
        }
        if let Some(app) = self.sockets.get_mut(&k) {
            let v = app.request(&json!({"op": "status", "payment_id": id})).expect("terminal status");
            return v.get("state").is_some().then_some(v);
        }
        let s = &self.stores[&k];
        let pid = inflight_wire::PaymentId::parse(id).expect("payment id");
        let v = s.view(pid).expect("slave store read")?;
        let mut out = json!({
            "amount_minor": v.payment.amount.amount_minor(),
            "currency": v.payment.amount.currency().as_str(),
            "card": v.payment.card.to_string(),
            "seat": v.payment.seat,
            "captured_unix_ms": v.payment.captured_unix_ms,
        });
        match v.outcome {
            Some(inflight_wire::AuthOutcome::Approved { auth_code }) => {
                out["outcome"] = json!("approved");
                out["auth_code"] = json!(auth_code);
            }
            Some(inflight_wire::AuthOutcome::Declined(r)) => {
                out["outcome"] = json!("declined");
                out["decline_reason"] = json!(r.as_str());
            }
            None => {}
        }
        Some(out)
    }
}

impl Drop for TerminalViews<'_> {
    fn drop(&mut self) {
        for s in self.stores.values() {
            s.close();
        }
    }
}

/// A daemon process; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Daemon {
    /// The process.
    pub child: Child,
    /// Where its log goes.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `bin run --config cfg`, appending stderr (logs) to `log`.
    pub fn spawn(name: &str, cfg: &Path, log: &Path) -> Self {
        Self::spawn_env(name, cfg, log, &[])
    }

    /// Like [`Daemon::spawn`], with extra environment variables.
    pub fn spawn_env(name: &str, cfg: &Path, log: &Path, env: &[(&str, &str)]) -> Self {
        let logf = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        let child = Command::new(bin(name))
            .args(["run", "--config"])
            .arg(cfg)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawn daemon");
        Self { child, log: log.to_owned() }
    }

    fn wait_socket(&mut self, sock: &Path) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                panic!(
                    "daemon exited with {status} before answering on {}; its log ends:\n{}",
                    sock.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            if let Ok(mut s) = UnixStream::connect(sock) {
                if writeln!(s, "{}", json!({"op": "status"})).is_ok() {
                    let mut line = String::new();
                    if BufReader::new(&s).read_line(&mut line).is_ok() && !line.is_empty() {
                        return;
                    }
                }
            }
            assert!(start.elapsed() < Duration::from_secs(20), "daemon never answered on {}", sock.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Peak resident memory so far (VmHWM), MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kb: f64 = s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }

    /// Waits for the process to exit by itself (e.g. at an armed crash point).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            assert!(start.elapsed() < timeout, "daemon did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            assert!(start.elapsed() < Duration::from_secs(15), "daemon did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A sale app: one connection to a terminal's capture socket.
#[derive(Debug)]
pub struct SaleApp {
    stream: BufReader<UnixStream>,
}

impl SaleApp {
    /// Connects to the socket.
    pub fn connect(sock: &Path) -> std::io::Result<Self> {
        let s = UnixStream::connect(sock)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Self { stream: BufReader::new(s) })
    }

    /// Sends one request, reads one answer.
    pub fn request(&mut self, req: &Value) -> std::io::Result<Value> {
        writeln!(self.stream.get_mut(), "{req}")?;
        let mut line = String::new();
        if self.stream.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "terminal closed the socket"));
        }
        serde_json::from_str(&line).map_err(std::io::Error::other)
    }

    /// A capture.
    pub fn capture(&mut self, card: &Card, amount_minor: u64, seat: &str) -> std::io::Result<Value> {
        self.request(&json!({
            "op": "capture", "pan": card.pan, "expiry": card.expiry,
            "amount_minor": amount_minor, "currency": card.currency, "seat": seat,
        }))
    }
}

/// The accepted payment id in a capture answer, if accepted.
pub fn accepted_id(answer: &Value) -> Option<String> {
    (answer["outcome"] == "accepted")
        .then(|| answer["payment_id"].as_str().expect("accepted answers carry an id").to_owned())
}

/// A userspace UDP relay standing in for a radio link: forwards datagrams between one client
/// and an upstream server, and can black-hole them (both directions) on command or once a
/// number of client bytes have passed.
#[derive(Debug)]
pub struct UdpRelay {
    /// Where clients send.
    pub addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Client bytes left before the link cuts itself; negative: disarmed.
    trip: std::sync::Arc<std::sync::atomic::AtomicI64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl UdpRelay {
    /// Starts relaying to `upstream`.
    pub fn start(upstream: std::net::SocketAddr) -> Self {
        use std::net::UdpSocket;
        use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
        use std::sync::Arc;
        let front = UdpSocket::bind("127.0.0.1:0").expect("bind relay");
        let back = UdpSocket::bind("127.0.0.1:0").expect("bind relay upstream");
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        }
        let addr = front.local_addr().expect("addr");
        let cut = Arc::new(AtomicBool::new(false));
        let trip = Arc::new(AtomicI64::new(-1));
        let stop = Arc::new(AtomicBool::new(false));
        let client = Arc::new(std::sync::Mutex::new(None::<std::net::SocketAddr>));
        {
            let (front, back) = (front.try_clone().expect("clone"), back.try_clone().expect("clone"));
            let (cut, trip, stop, client) = (cut.clone(), trip.clone(), stop.clone(), client.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = front.recv_from(&mut buf) else { continue };
                    *client.lock().expect("lock") = Some(from);
                    let left = trip.load(Ordering::Relaxed);
                    if left >= 0 {
                        if left <= n as i64 {
                            trip.store(-1, Ordering::Relaxed);
                            cut.store(true, Ordering::Relaxed);
                        } else {
                            trip.store(left - n as i64, Ordering::Relaxed);
                        }
                    }
                    if !cut.load(Ordering::Relaxed) {
                        let _ = back.send_to(&buf[..n], upstream);
                    }
                }
            });
        }
        {
            let (cut, stop) = (cut.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, _)) = back.recv_from(&mut buf) else { continue };
                    let to = *client.lock().expect("lock");
                    if let (false, Some(to)) = (cut.load(Ordering::Relaxed), to) {
                        let _ = front.send_to(&buf[..n], to);
                    }
                }
            });
        }
        Self { addr, cut, trip, stop }
    }

    /// Black-holes everything until [`UdpRelay::restore`].
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Carries traffic again.
    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Cuts the link by itself once `bytes` more client bytes have passed.
    pub fn cut_after(&self, bytes: i64) {
        self.trip.store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the link is cut.
    pub fn is_cut(&self) -> bool {
        self.cut.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
