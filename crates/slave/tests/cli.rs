//! The `inflight-slave` command line: config errors and an unreachable daemon.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_inflight-slave");

#[test]
fn invalid_config_reports_every_problem_and_exits_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("slave.toml");
    std::fs::write(&cfg, "terminal_id = \"Bad Id\"\ndata_dir = \"d\"\nstray = 1\n[master]\naddr = \"nowhere\"\n[limits]\nforward_window = 0\n").expect("write");
    let out = Command::new(BIN).args(["run", "--config"]).arg(&cfg).output().expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "terminal_id",
        "card_key_file",
        "capture_socket",
        "master.addr",
        "master.server_name",
        "tls.ca_file",
        "limits.forward_window",
        "stray",
    ] {
        assert!(err.contains(key), "{key} not reported in:\n{err}");
    }
    assert!(!dir.path().join("d").exists(), "nothing created before the config is valid");
}

#[test]
fn capture_without_a_running_daemon_fails_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("slave.toml");
    std::fs::write(dir.path().join("issuer.pub"), "ab".repeat(32)).expect("write");
    std::fs::write(
        &cfg,
        "terminal_id = \"t1\"\ndata_dir = \"d\"\ncard_key_file = \"k\"\ncapture_socket = \"s.sock\"\nissuer_public_key_file = \"issuer.pub\"\n[master]\naddr = \"127.0.0.1:9\"\nserver_name = \"m\"\n[tls]\nca_file = \"ca\"\ncert_file = \"c\"\nkey_file = \"k\"\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["capture", "--config"])
        .arg(&cfg)
        .args(["--pan", "4111111111111111", "--expiry", "12/30", "--amount", "100", "--currency", "EUR"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(69), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot ask the daemon"), "{err}");
    assert!(!err.contains("4111111111111111"), "no card number in errors");
    assert!(out.stdout.is_empty());
}
