//! `inflight-issuer check --config FILE`: every problem that would stop the issuer at start, or
//! make aircraft refuse it, found at once, with the loading code `run` uses.

use std::path::Path;

use inflight_daemon::check::CheckReport;
use inflight_net::check::{self as tls_check, Expect};
use inflight_store::{BinListSigner, CardVault};

use crate::IssuerConfig;

/// Checks `config` and every file it names. Never opens the store (a running daemon holds its
/// lock): its folder must be writable or creatable. The accounts file is read only on the first
/// start: once the store's folder holds anything, a bad accounts file is a warning.
pub fn check(config: &Path) -> CheckReport {
    let mut r = CheckReport::new(config);
    let Some(cfg) = r.config(IssuerConfig::load(config)) else { return r };
    let now_s = inflight_daemon::unix_ms_now() / 1_000;
    r.result("card_key_file", Some(&cfg.card_key_file), CardVault::from_key_file(&cfg.card_key_file));
    match &cfg.chip_key_file {
        Some(chip) => {
            r.result("chip_key_file", Some(chip), inflight_store::chip_master_key_from_file(chip));
        }
        None => r.warning(
            "chip_key_file",
            None,
            "absent: every chip and contactless payment will be declined cryptogram_invalid".to_owned(),
        ),
    }
    r.result("signing_key_file", Some(&cfg.signing_key_file), BinListSigner::from_hex_file(&cfg.signing_key_file));
    if let Err(errors) = crate::config::load_programme(&cfg.programme_file) {
        for e in errors {
            r.problem("programme_file", Some(&cfg.programme_file), e);
        }
    }
    let store_started = std::fs::read_dir(&cfg.data_dir).is_ok_and(|mut d| d.next().is_some());
    // Its errors never quote a card number (`load_accounts`).
    if let Err(errors) = crate::config::load_accounts(&cfg.accounts_file) {
        for e in errors {
            if store_started {
                r.warning("accounts_file", Some(&cfg.accounts_file), format!("{e} (read only on a first start)"));
            } else {
                r.problem("accounts_file", Some(&cfg.accounts_file), e);
            }
        }
    }
    r.directory("data_dir", &cfg.data_dir);
    r.socket_path("admin_socket", &cfg.admin_socket);

    let before = r.problems();
    // Aircraft check the issuer's name against their own config (ground.issuer_server_name),
    // which is not here: only the usage is checked.
    let expect = Expect { names: &[], client: false, server: true };
    r.private_key_file("tls.key_file", &cfg.key_file);
    let own = Some((cfg.cert_file.as_path(), &expect));
    for f in tls_check::tls_files("tls.", own, &cfg.ca_file, cfg.crl_file.as_deref(), now_s) {
        r.found_all(&f.key, &f.file, f.findings);
    }
    // Then the configuration `run` builds from them, when the files themselves passed.
    if r.problems() == before {
        r.result("tls", None, crate::aircraft_server_config(&cfg));
    }
    r
}
