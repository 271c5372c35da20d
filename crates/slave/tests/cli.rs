//! The `inflight-slave` command line: config errors and an unreachable daemon.

use std::io::Write;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_inflight-slave");

#[test]
fn invalid_config_reports_every_problem_and_exits_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("slave.toml");
    std::fs::write(&cfg, "terminal_id = \"Bad Id\"\ndata_dir = \"d\"\nstray = 1\n[master]\naddr = \"nowhere\"\n[limits]\nforward_window = 0\n[capture]\nallowed_gids = [4294967296]\ncrew_uids = [1]\n").expect("write");
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
        "capture.allowed_gids",
        // The capture socket has no crew ops: crew lists are not a thing there.
        "capture.crew_uids: unknown key",
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

/// A card number mistyped into a command line never comes back in clap's error: not as an
/// unexpected argument, not as an invalid value, not in part. (Before, clap quoted it.)
#[test]
fn bad_command_lines_never_echo_a_card_number() {
    const PAN: &str = "4111111111111111";
    let cases: [&[&str]; 7] = [
        &["capture", "--config", "c", PAN],
        &["capture", "--config", "c", "--pan", PAN, "--amount", "4111111111111111x"],
        &["capture", "--config", "c", "--pann", PAN],
        &["capture", "--config", "c", &format!("--pan{PAN}")],
        &[
            "capture",
            "--config",
            "c",
            "--pan",
            "x",
            "--expiry",
            "12/30",
            "--amount",
            "1",
            "--currency",
            "EUR",
            "4111 1111 1111 1111",
        ],
        &[
            "capture",
            "--config",
            "c",
            "--pan",
            "x",
            "--expiry",
            "12/30",
            "--amount",
            "1",
            "--currency",
            "EUR",
            "4111-1111-1111-1111",
        ],
        &[PAN],
    ];
    for args in cases {
        let out = Command::new(BIN).args(args).output().expect("run");
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error"), "{args:?}: {err}");
        let digits: String = err.chars().filter(char::is_ascii_digit).collect();
        assert!(!digits.contains("411111"), "{args:?}: card digits in\n{err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("4111"), "{args:?}");
    }
}

/// `--pan -` with a card number that cannot be one (too long a line) or no line at all: exit
/// 64 before any daemon is asked, and the digits given are not in the error.
#[test]
fn a_bad_card_number_on_stdin_is_refused_without_echoing_it() {
    let long = format!("{}\n", "4111111111111111".repeat(5));
    for input in [long.as_str(), "", "  \n"] {
        let mut child = Command::new(BIN)
            .args(["capture", "--config", "/nonexistent/slave.toml", "--pan", "-"])
            .args(["--expiry", "12/30", "--amount", "100", "--currency", "EUR"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        child.stdin.take().expect("piped").write_all(input.as_bytes()).expect("write stdin");
        let out = child.wait_with_output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{input:?}: {err}");
        assert!(err.contains("--pan -:"), "{err}");
        assert!(!err.contains("4111"), "card digits in: {err}");
        assert!(out.stdout.is_empty());
    }
}
