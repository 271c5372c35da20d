//! The committed example configs in `config/` are exactly what `inflight-setup` writes for a
//! deployment in `demo/` (as the README's quickstart makes), so they cannot drift from the code.

use inflight_setup::{issuer_toml, master_toml, slave_toml, LocalPlan};

#[test]
fn committed_examples_match_the_generator() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config");
    let plan = LocalPlan { out: "demo".into(), terminals: 2, aircraft: "d-aixa".into(), base_port: 7400 };
    let cases = [
        ("master.toml", master_toml(&plan, "../demo")),
        ("issuer.toml", issuer_toml(&plan, "../demo")),
        ("slave-1.toml", slave_toml(&plan, 1, "../demo")),
    ];
    for (file, want) in cases {
        let path = format!("{root}/{file}");
        if std::env::var_os("INFLIGHT_WRITE_EXAMPLES").is_some() {
            std::fs::write(&path, &want).expect("write example");
        }
        let have = std::fs::read_to_string(&path).expect("committed example config");
        assert_eq!(have, want, "config/{file} is stale: INFLIGHT_WRITE_EXAMPLES=1 cargo test -p inflight-setup");
    }
}
