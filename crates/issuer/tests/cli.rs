//! The `inflight-issuer` command line: config errors and bad programme files.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_inflight-issuer");

#[test]
fn invalid_config_reports_every_problem_and_exits_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("issuer.toml");
    std::fs::write(&cfg, "issuer_name = \"\"\nlisten = \"x\"\nbin_list_validity_hours = 0\n").expect("write");
    let out = Command::new(BIN).args(["run", "--config"]).arg(&cfg).output().expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "issuer_name",
        "listen",
        "bin_list_validity_hours",
        "signing_key_file",
        "programme_file",
        "accounts_file",
        "tls.ca_file",
    ] {
        assert!(err.contains(key), "{key} not reported in:\n{err}");
    }
}

#[test]
fn a_bad_programme_is_refused_with_every_problem_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    std::fs::write(p.join("programme.toml"), "version = 1\n[[bin]]\nprefix = \"12\"\nkind = \"gold\"\ntxn_limit_minor = 0\ncard_flight_limit_minor = 0\ncurrencies = [\"XXX\"]\n")
        .expect("write");
    let cfg = p.join("issuer.toml");
    std::fs::write(
        &cfg,
        "issuer_name = \"Bank\"\ndata_dir = \"d\"\ncard_key_file = \"k\"\nadmin_socket = \"s\"\nlisten = \"127.0.0.1:0\"\nsigning_key_file = \"sk\"\nprogramme_file = \"programme.toml\"\naccounts_file = \"a.json\"\n[tls]\nca_file = \"ca\"\ncert_file = \"c\"\nkey_file = \"k\"\n",
    )
    .expect("write");
    let out = Command::new(BIN).args(["run", "--config"]).arg(&cfg).output().expect("run");
    assert_eq!(out.status.code(), Some(64), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    for what in ["BIN prefix", "card kind", "XXX", "limits"] {
        assert!(err.contains(what), "{what} not reported in:\n{err}");
    }
    assert!(!p.join("d").exists(), "no store created for an invalid programme");
}
