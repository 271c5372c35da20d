//! `inflight-sim --html`: a real small flight (with a ground-link drop-out) rendered as a page
//! that parses and whose numbers are the JSON report's. No headless browser is installed here:
//! the render check (the page drawn is not blank) runs only where `chromium`, `chromium-browser`,
//! `google-chrome` or `firefox` is on the PATH, and says so when it is skipped.

use std::path::PathBuf;
use std::process::Command;

use inflight_sim::{run, SimOptions};

#[path = "common/page_check.rs"]
mod page_check;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_flight_as_a_page() {
    let r = run(SimOptions { slaves: 4, payments_per_slave: 6, seed: 12, flaps: 1, ..SimOptions::default() })
        .await
        .expect("the flight completes");
    assert!(r.ok(), "{:?}", r.violations);
    let html = inflight_sim::html::render(&r);
    page_check::assert_page_matches_json(&html, &serde_json::to_value(&r).expect("json"));
    let events: Vec<&str> = r.timeline.events.iter().map(|e| e.event.as_str()).collect();
    // The drop-out is not asserted: a small batch may be answered before it begins.
    for e in ["gate", "take_off", "landing", "all_delivered"] {
        assert!(events.contains(&e), "{e} missing from {events:?}");
    }
    assert!(r.timeline.link.iter().any(|l| l.up) && r.timeline.link.iter().any(|l| !l.up), "{:?}", r.timeline.link);
    let delivered = r.timeline.samples.last().map(|s| s.delivered);
    assert_eq!(delivered, Some(r.accepted), "the last sample has every result delivered");
    render_if_a_browser_is_here(&html);
}

/// Draws the page with a headless browser, if one is installed, and checks the picture is not
/// blank (more than one colour).
fn render_if_a_browser_is_here(html: &str) {
    let Some(browser) = ["chromium", "chromium-browser", "google-chrome", "firefox"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
    else {
        println!("SKIPPED the render check: no headless browser (chromium, google-chrome, firefox) on the PATH");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (page, shot): (PathBuf, PathBuf) = (dir.path().join("flight.html"), dir.path().join("flight.png"));
    std::fs::write(&page, html).expect("write page");
    let args: Vec<String> = if browser == "firefox" {
        vec![
            "--headless".into(),
            "--screenshot".into(),
            shot.display().to_string(),
            format!("file://{}", page.display()),
        ]
    } else {
        vec![
            "--headless".into(),
            "--disable-gpu".into(),
            "--no-sandbox".into(),
            format!("--screenshot={}", shot.display()),
            "--window-size=1200,900".into(),
            format!("file://{}", page.display()),
        ]
    };
    let out = Command::new(browser).args(&args).output().expect("run the browser");
    assert!(out.status.success(), "{browser}: {}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&shot).expect("screenshot written");
    // A PNG of one flat colour compresses to almost nothing; a drawn page does not.
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{browser}: the page rendered blank ({} bytes)",
        png.len()
    );
}
