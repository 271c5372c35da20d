//! Checks an `inflight-sim --html` page against the JSON report (shared by the sim's unit tests
//! and its integration test): the page is well-formed XHTML, its numbers are the JSON's, it
//! fetches nothing.

use std::collections::BTreeMap;

use serde_json::Value;

/// Every `data-measure` number of a page, `(measure, reason)` → count, and its
/// capture-rate bars in order; panics if the page is not well-formed.
pub fn read_back(html: &str) -> (BTreeMap<(String, String), u64>, Vec<u64>) {
    let doc = roxmltree::Document::parse_with_options(
        html,
        roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() },
    )
    .expect("well-formed XHTML");
    let attr = |n: &roxmltree::Node<'_, '_>, k: &str| n.attribute(k).unwrap_or_default().to_owned();
    let numbers = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("total"))
        .map(|n| {
            let count = attr(&n, "data-count").parse().expect("a count");
            ((attr(&n, "data-measure"), attr(&n, "data-reason")), count)
        })
        .collect();
    let mut bars: Vec<(u64, u64)> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("captures"))
        .map(|n| (attr(&n, "data-bucket").parse().expect("bucket"), attr(&n, "data-count").parse().expect("count")))
        .collect();
    bars.sort();
    (numbers, bars.into_iter().map(|(_, n)| n).collect())
}

/// The page's numbers are the JSON report's: every count, every reason, the capture
/// buckets (which add up to `captures`).
pub fn assert_page_matches_json(html: &str, json: &Value) {
    let (numbers, bars) = read_back(html);
    let n = |m: &str, reason: &str| numbers.get(&(m.to_owned(), reason.to_owned())).copied();
    for m in ["captures", "accepted", "unanswered", "approved", "lost", "duplicated", "phantom", "batches", "pan_leaks"]
    {
        assert_eq!(n(m, ""), json[m].as_u64(), "{m}");
    }
    for m in ["rejected", "declined"] {
        let by_reason = json[m].as_object().expect("by reason");
        for (reason, count) in by_reason {
            assert_eq!(n(m, reason), count.as_u64(), "{m} {reason}");
        }
        assert_eq!(n(m, ""), Some(by_reason.values().filter_map(Value::as_u64).sum()), "{m}");
    }
    let per_s: Vec<u64> = json["timeline"]["captures_per_bucket"]
        .as_array()
        .expect("captures_per_bucket")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(bars, per_s);
    assert_eq!(Some(bars.iter().sum::<u64>()), json["captures"].as_u64(), "every capture in one bucket of the sales");
    for external in ["src=", "href=", "url(", "<script"] {
        assert!(!html.contains(external), "{external} in the page");
    }
}
