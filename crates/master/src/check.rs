//! `inflight-master check --config FILE`: every problem that would stop the daemon at start, or
//! make its peers refuse it, found at once, with the loading code `run` uses.

use std::path::Path;

use inflight_daemon::check::CheckReport;
use inflight_net::check::{self as tls_check, Expect};
use inflight_store::CardVault;

use crate::MasterConfig;

/// Checks `config` and every file it names. Never opens the store (a running daemon holds its
/// lock): its folder must be writable or creatable.
pub fn check(config: &Path) -> CheckReport {
    let mut r = CheckReport::new(config);
    // The config itself, as `run` reads it: every bad or unknown key, and the BIN list's public
    // key (ground.issuer_public_key_file), which it parses.
    let Some(cfg) = r.config(MasterConfig::load(config)) else { return r };
    let now_s = inflight_daemon::unix_ms_now() / 1_000;
    r.result("card_key_file", Some(&cfg.card_key_file), CardVault::from_key_file(&cfg.card_key_file));
    r.directory("data_dir", &cfg.data_dir);
    r.socket_path("admin_socket", &cfg.admin_socket);

    let before = r.problems();
    // Its certificate is both the terminals' server and the issuer's client (named after the
    // aircraft, which the issuer checks).
    let names = [inflight_net::identity::aircraft_cert_name(&cfg.aircraft_id)];
    let expect = Expect { names: &names, client: true, server: true };
    r.private_key_file("tls.key_file", &cfg.key_file);
    let ground = &cfg.ground;
    let terminals =
        tls_check::tls_files("tls.", Some((&cfg.cert_file, &expect)), &cfg.ca_file, cfg.crl_file.as_deref(), now_s);
    let issuer =
        tls_check::tls_files("ground.issuer_", None, &ground.issuer_ca_file, ground.issuer_crl_file.as_deref(), now_s);
    for f in terminals.into_iter().chain(issuer) {
        r.found_all(&f.key, &f.file, f.findings);
    }
    // Then the configurations `run` builds from them (a key that does not match its
    // certificate...), when the files themselves passed: the same fault is reported once.
    if r.problems() == before {
        r.result("tls", None, crate::terminal_server_config(&cfg));
        r.result("ground", None, crate::ground_tls_config(&cfg));
    }
    r
}
