//! `inflight-slave check --config FILE`: every problem that would stop the terminal at start, or
//! make its master refuse it, found at once, with the loading code `run` uses.

use std::path::Path;

use inflight_daemon::check::CheckReport;
use inflight_net::check::{self as tls_check, Expect};
use inflight_store::CardVault;

use crate::SlaveConfig;

/// Checks `config` and every file it names. Never opens the store (a running daemon holds its
/// lock): its folder must be writable or creatable.
pub fn check(config: &Path) -> CheckReport {
    let mut r = CheckReport::new(config);
    // The config itself, as `run` reads it: every bad or unknown key, and the BIN list's public
    // key (issuer_public_key_file), which it parses.
    let Some(cfg) = r.config(SlaveConfig::load(config)) else { return r };
    let now_s = inflight_daemon::unix_ms_now() / 1_000;
    r.result("card_key_file", Some(&cfg.card_key_file), CardVault::from_key_file(&cfg.card_key_file));
    r.directory("data_dir", &cfg.data_dir);
    r.socket_path("capture_socket", &cfg.capture_socket);

    let before = r.problems();
    // The master takes the terminal id from the certificate's name.
    let names = [inflight_net::identity::terminal_cert_name(&cfg.terminal_id)];
    let expect = Expect { names: &names, client: true, server: false };
    r.private_key_file("tls.key_file", &cfg.key_file);
    let own = Some((cfg.cert_file.as_path(), &expect));
    for f in tls_check::tls_files("tls.", own, &cfg.ca_file, cfg.crl_file.as_deref(), now_s) {
        r.found_all(&f.key, &f.file, f.findings);
    }
    // Then the configuration `run` builds from them, when the files themselves passed.
    if r.problems() == before {
        r.result("tls", None, crate::client_tls(&cfg));
    }
    r
}
