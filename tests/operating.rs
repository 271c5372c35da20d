//! Operating the daemons, with real processes: `check` on a good and on a broken deployment,
//! SIGHUP (log level, revocation lists) on a running daemon, sd_notify READY/STOPPING, and the
//! systemd units under `systemd-analyze verify`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use inflight_e2e::{bin, Deployment, SaleApp};
use inflight_setup::provision::{self, Role};
use serde_json::json;

/// `inflight-<daemon> check --config <config>`: (exit code, stderr).
fn check(daemon: &str, config: &Path) -> (i32, String) {
    let out = Command::new(bin(&format!("inflight-{daemon}")))
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("run check");
    assert!(out.stdout.is_empty(), "check prints to stderr only: {}", String::from_utf8_lossy(&out.stdout));
    (out.status.code().expect("exit code"), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn kill(sig: &str, pid: u32) {
    let st = Command::new("kill").args([sig, &pid.to_string()]).status().expect("kill");
    assert!(st.success(), "kill {sig} {pid}");
}

#[test]
fn check_passes_on_what_setup_writes() {
    let dep = Deployment::new(2);
    for (daemon, config) in [("master", "master"), ("issuer", "issuer"), ("slave", "slave-1"), ("slave", "slave-2")] {
        let (code, err) = check(daemon, &dep.config(config));
        assert_eq!(code, 0, "{config}: {err}");
        assert!(err.contains("0 problem(s), 0 warning(s): the daemon would start"), "{config}: {err}");
    }
    // Next to the running daemon: the store is not opened (its lock is not disturbed), the
    // socket in use is a warning, not a problem.
    let _master = dep.start_master();
    let (code, err) = check("master", &dep.config("master"));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning: admin_socket") && err.contains("0 problem(s), 1 warning(s)"), "{err}");
    assert!(dep.master_status(None)["link"].is_string(), "the master still answers");
}

#[test]
fn check_lists_every_problem_at_once_and_never_key_material() {
    let dep = Deployment::new(1);
    let card_key = std::fs::read_to_string(dep.path("keys/master.card.key")).expect("card key");
    // 1. The card key is gone.
    std::fs::remove_file(dep.path("keys/master.card.key")).expect("remove");
    // 2 and 3. The master's certificate expired, and its (new) key is readable by everyone.
    let aircraft_ca = provision::load_ca(&dep.path(""), Role::Aircraft).expect("aircraft CA");
    let old = inflight_net::pki::Validity { not_before: (2020, 1, 1), not_after: (2020, 12, 31) };
    let names = ["master.d-aixa.aircraft.inflight", "d-aixa.aircraft.inflight"];
    let expired = aircraft_ca.issue_names(&names, true, true, old).expect("certificate");
    std::fs::write(dep.path("pki/master.pem"), &expired.cert_pem).expect("write cert");
    std::fs::write(dep.path("pki/master.key"), &expired.key_pem).expect("write key");
    std::fs::set_permissions(dep.path("pki/master.key"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    // 4. The terminal CA's revocation list is replaced by the aircraft CA's: a list from the
    // wrong CA (every terminal would be refused).
    std::fs::copy(dep.path("pki/aircraft-ca.crl.pem"), dep.path("pki/terminal-ca.crl.pem")).expect("copy");
    // 5. The issuer CA file holds a leaf, not a CA.
    std::fs::copy(dep.path("pki/slave-1.pem"), dep.path("pki/issuer-ca.pem")).expect("copy");

    let (code, err) = check("master", &dep.config("master"));
    assert_eq!(code, 64, "{err}");
    let problems: Vec<&str> = err.lines().filter(|l| l.starts_with("problem: ")).collect();
    for (key, says) in [
        ("card_key_file", "No such file"),
        ("tls.cert_file", "expired on"),
        ("tls.key_file", "mode 644"),
        ("tls.crl_file", "not issued and signed by the CA"),
        ("ground.issuer_ca_file", "not a CA certificate"),
        // Its revocation list no longer matches the CA file named with it.
        ("ground.issuer_crl_file", "not issued and signed by the CA"),
    ] {
        assert!(
            problems.iter().any(|l| l.starts_with(&format!("problem: {key} (")) && l.contains(says)),
            "no {key} problem saying {says:?} in:\n{err}"
        );
    }
    assert_eq!(problems.len(), 6, "one line per problem:\n{err}");
    assert!(err.lines().last().is_some_and(|l| l.ends_with("6 problem(s), 0 warning(s): the daemon would not start")));
    // `run` agrees: it stops at the first of them (the card key: 74).
    assert_eq!(run_exit_code(&dep), Some(74));
    for secret in [card_key.trim(), "PRIVATE KEY", "CERTIFICATE"] {
        assert!(!err.contains(secret), "check printed file content:\n{err}");
    }
    for line in expired.key_pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!err.contains(line), "check printed key material");
    }

    // A config that does not load: its problems, all of them, before any file is looked at.
    dep.prepend_config("master", "stray_key = 1\nlog_level = \"info,[\"");
    let (code, err) = check("master", &dep.config("master"));
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("problem: stray_key: unknown key"), "{err}");
    assert!(err.contains("problem: log_level: not a log filter"), "{err}");
    assert_eq!(run_exit_code(&dep), Some(64));
}

/// `inflight-master run` on the deployment: its exit code (it must exit by itself).
fn run_exit_code(dep: &Deployment) -> Option<i32> {
    let mut d = inflight_e2e::Daemon::spawn("inflight-master", &dep.config("master"), &dep.path("master.log"));
    d.wait_exit(Duration::from_secs(30)).code()
}

#[test]
fn ready_once_listening_and_stopping_on_sigterm() {
    let dep = Deployment::new(1);
    let notify_path = dep.path("run/notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("bind notify socket");
    notify.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let notify_env = notify_path.to_str().expect("utf-8").to_owned();
    let mut master = inflight_e2e::Daemon::spawn_env(
        "inflight-master",
        &dep.config("master"),
        &dep.path("master.log"),
        &[("NOTIFY_SOCKET", &notify_env)],
    );
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("a notification within 30 s");
    assert_eq!(std::str::from_utf8(&buf[..n]).expect("text"), "READY=1\n");
    // Ready means listening: the admin socket answers at once.
    let mut admin = SaleApp::connect(&dep.path("run/master.sock")).expect("admin socket bound before READY");
    let status = admin.request(&json!({"op": "status"})).expect("status");
    assert!(status["link"].is_string(), "{status}");
    drop(admin);
    kill("-TERM", master.child.id());
    let n = notify.recv(&mut buf).expect("STOPPING within 30 s");
    assert_eq!(std::str::from_utf8(&buf[..n]).expect("text"), "STOPPING=1\n");
    assert!(master.wait_exit(Duration::from_secs(30)).success());
}

#[test]
fn sighup_reloads_the_log_level_and_the_revocation_list_and_keeps_serving() {
    let dep = Deployment::new(2);
    dep.prepend_config("master", "log_level = \"warn\"");
    let issuer = dep.start_issuer();
    // The master looks at its TLS files every hour only: the revocation below can only take
    // effect through SIGHUP.
    let master = dep.start_master_env(&[(inflight_daemon::TLS_RELOAD_POLL_ENV, "3600000")]);
    let slaves: Vec<_> = (1..=2).map(|k| dep.start_slave(k)).collect();
    dep.wait_bin_lists();
    dep.wait_for("both terminals connected", Duration::from_secs(30), || {
        dep.master_status(None)["terminals_connected"] == 2
    });
    assert!(!dep.log("master").contains(" INFO "), "log_level = warn hides info lines");

    // A SIGHUP with the config broken: logged, nothing changes, the master goes on.
    dep.set_config("master", "log_level", "\"info,[\"");
    kill("-HUP", master.child.id());
    dep.wait_for("the broken config is reported", Duration::from_secs(20), || {
        dep.log("master").contains("SIGHUP: the config no longer loads")
    });
    assert!(!dep.log("master").contains(" INFO "), "the level in force is kept");

    // Terminal 1 is stolen: revoked, then SIGHUP.
    dep.set_config("master", "log_level", "\"info\"");
    let out = Command::new(bin("inflight-setup"))
        .args(["revoke", "--role", "terminal", "--name", "slave-1", "--dir"])
        .arg(dep.path(""))
        .output()
        .expect("revoke");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    kill("-HUP", master.child.id());
    dep.wait_for("the new level is in force", Duration::from_secs(20), || {
        dep.log("master").contains("SIGHUP: config re-read; log level in force")
    });
    dep.wait_for("the revoked terminal is cut off", Duration::from_secs(20), || {
        dep.master_status(None)["terminals_connected"] == 1 && dep.slave_status(1, None)["master_connected"] == false
    });
    // It stays out (its reconnects are refused at the handshake); the other one is served.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(dep.slave_status(1, None)["master_connected"], false, "a revoked terminal reconnected");
    let card = dep.cards().into_iter().find(|c| c.enrolled && c.status == "open").expect("an enrolled card");
    let mut app = SaleApp::connect(&dep.slave_socket(2)).expect("terminal 2");
    let answer = app
        .request(&json!({"op": "capture", "pan": card.pan, "expiry": card.expiry, "amount_minor": 100,
            "currency": card.currency, "seat": "12A", "request_id": "after-sighup"}))
        .expect("capture");
    assert_eq!(answer["outcome"], "accepted", "{answer}");
    dep.wait_for("terminal 2's payment reaches the master", Duration::from_secs(20), || dep.master_total() == 1);
    assert!(dep.log("master").contains("on=\"reload\""), "the revocation was read on SIGHUP");
    // A key SIGHUP cannot reload is not silently ignored.
    const RESTART: &str = "they take effect at the next restart";
    assert!(!dep.log("master").contains(RESTART), "only log_level changed so far");
    dep.set_config("master", "flight_id", "\"IF999\"");
    kill("-HUP", master.child.id());
    dep.wait_for("the warning that a restart is needed", Duration::from_secs(20), || {
        dep.log("master").contains(RESTART)
    });
    drop((issuer, slaves));
}

/// `systemd-analyze verify` on a copy of `unit` whose `/usr/local/bin/` binaries are the ones
/// built here (verify checks that every command exists). Ok when it passes with nothing to say:
/// it exits 0 on unknown keys and bad values, and only warns.
fn verify(name: &str, unit: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let built = bin("inflight-master");
    let built_dir = built.parent().expect("target dir").to_str().expect("utf-8").to_owned() + "/";
    let path = dir.path().join(name);
    std::fs::write(&path, unit.replace("/usr/local/bin/", &built_dir)).expect("write unit");
    let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&path).output().expect("run");
    let said = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {said}", out.status))
    }
}

fn units() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    let mut units: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("deploy/systemd")
        .map(|e| {
            let p = e.expect("entry").path();
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).expect("unit"))
        })
        .collect();
    units.sort();
    units
}

#[test]
fn systemd_units_verify_and_are_hardened() {
    let units = units();
    let names: Vec<&str> = units.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["inflight-issuer.service", "inflight-master.service", "inflight-slave.service"]);
    for (name, text) in &units {
        for line in [
            "Type=notify",
            "Restart=on-failure",
            "User=inflight",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
            "CapabilityBoundingSet=\n",
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
            "ExecReload=/bin/kill -HUP $MAINPID",
        ] {
            assert!(text.contains(line), "{name} lacks {line:?}");
        }
        let rw: Vec<&str> = text.lines().filter(|l| l.starts_with("ReadWritePaths=")).collect();
        let stem = name.trim_start_matches("inflight-").trim_end_matches(".service");
        assert_eq!(rw, [format!("ReadWritePaths=/var/lib/inflight/{stem} /run/inflight-{stem}")], "{name}");
        assert!(text.lines().any(|l| l.starts_with("MemoryMax=") && l.ends_with('M')), "{name}: MemoryMax");
    }
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("SKIPPED: systemd-analyze is not installed; the units were not verified");
        return;
    }
    for (name, text) in &units {
        verify(name, text).unwrap_or_else(|e| panic!("{name} does not verify: {e}"));
    }
    // The check can fail: a misspelt key, a bad value, a missing binary.
    let (name, text) = &units[1];
    let typo = text.replace("ProtectSystem=strict", "ProtectSytem=strict");
    assert!(verify(name, &typo).is_err_and(|e| e.contains("ProtectSytem")), "a misspelt key must fail");
    let memory_max = text.lines().find(|l| l.starts_with("MemoryMax=")).expect("MemoryMax");
    let bad_value = text.replace(memory_max, "MemoryMax=lots");
    assert!(verify(name, &bad_value).is_err(), "a bad value must fail");
    let missing = text.replace("/usr/local/bin/inflight-master run", "/nonexistent/inflight-master run");
    assert!(verify(name, &missing).is_err(), "a missing binary must fail");
}

/// `runtime.worker_threads` sets how many async worker threads the master runs; a value out of
/// range is a config problem, named.
#[test]
fn the_master_runs_the_worker_threads_its_config_names() {
    let dep = Deployment::new(1);
    dep.set_config("master", "worker_threads", "300");
    let (code, err) = check("master", &dep.config("master"));
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("runtime.worker_threads"), "{err}");

    // 3: neither the default on this 2-core machine nor on a 1-core one.
    dep.set_config("master", "worker_threads", "3");
    let master = dep.start_master();
    let workers = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("threads")
            .filter_map(|t| std::fs::read_to_string(t.expect("thread").path().join("comm")).ok())
            .filter(|name| name.trim() == "tokio-rt-worker")
            .count()
    };
    assert_eq!(workers(master.child.id()), 3, "three worker threads");
    assert!(dep.master_status(None)["link"].is_string(), "and it serves");
}
