//! The `inflight-master` command line: config errors, and a store that cannot be opened.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_inflight-master");

#[test]
fn invalid_config_reports_every_problem_and_exits_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("master.toml");
    std::fs::write(&cfg, "aircraft_id = \"\"\nlisten = \"127.0.0.1\"\n[limits]\nterminals_max = 0\n[timers]\nkeep_alive_ms = 20000\nidle_timeout_ms = 1000\n[admin]\ncrew_gids = [-1]\nallowed_uids = \"root\"\nallowed_users = [1]\n").expect("write");
    let out = Command::new(BIN).args(["run", "--config"]).arg(&cfg).output().expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "aircraft_id",
        "data_dir",
        "card_key_file",
        "admin_socket",
        "listen",
        "tls.ca_file",
        "limits.terminals_max",
        "timers.keep_alive_ms",
        "admin.crew_gids",
        "admin.allowed_uids",
        "admin.allowed_users: unknown key",
    ] {
        assert!(err.contains(key), "{key} not reported in:\n{err}");
    }
}

#[test]
fn unreadable_key_file_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("master.toml");
    std::fs::write(dir.path().join("issuer.pub"), "ab".repeat(32)).expect("write");
    std::fs::write(
        &cfg,
        "aircraft_id = \"d-test\"\nflight_id = \"IF1\"\ndata_dir = \"data\"\ncard_key_file = \"missing.key\"\nadmin_socket = \"m.sock\"\nlisten = \"127.0.0.1:0\"\n[tls]\nca_file = \"ca\"\ncert_file = \"c\"\nkey_file = \"k\"\n[ground]\nissuer_addr = \"127.0.0.1:9\"\nissuer_server_name = \"i\"\nissuer_ca_file = \"ica\"\nissuer_public_key_file = \"issuer.pub\"\n",
    )
    .expect("write");
    let out = Command::new(BIN).args(["run", "--config"]).arg(&cfg).output().expect("run");
    assert_eq!(out.status.code(), Some(74));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.key"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
