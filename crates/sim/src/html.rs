//! `inflight-sim --html FILE`: the simulated flight as one self-contained page (inline CSS and
//! SVG, no script, no external URL, well-formed XHTML, the same helpers as the crew's report):
//! a timeline — the capture rate (captures per second, in buckets of `capture_bucket_ms`), the ground link up and down, emulated outages, the batch
//! sealed and answered, results decided and delivered over time — and the outcome breakdown.
//! Each number shown also sits in `data-` attributes equal to the JSON report's
//! (`data-measure`, `data-reason`, `data-count`; `data-bucket` on the capture bars).

use std::fmt::Write as _;

use inflight_master::report::html::{escape, page, stacked_bar, Segment};

use crate::report::{Report, Timeline};

/// Width of the timeline's drawing area, px.
const PLOT_WIDTH: f64 = 900.0;
/// Room left of the plot for the lanes' names, px.
const LANE_LABEL: f64 = 130.0;
/// Height of the captures-per-second lane, px.
const CAPTURES_HEIGHT: f64 = 80.0;
/// Height of the ground-link lane, px.
const LINK_HEIGHT: f64 = 18.0;
/// Height of the results lane, px.
const RESULTS_HEIGHT: f64 = 80.0;

const GREEN: &str = "#2e7d32";
const RED: &str = "#c62828";
const AMBER: &str = "#f9a825";
const ORANGE: &str = "#ef6c00";
const GREY: &str = "#90a4ae";
const BLUE: &str = "#1565c0";

/// The page.
pub fn render(r: &Report) -> String {
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>Simulated flight: {} terminals × {} payments, seed {}</h1>\n<p id=\"verdict\" data-ok=\"{}\"><strong>{}</strong></p>\n",
        r.slaves,
        r.payments_per_slave,
        r.seed,
        r.ok(),
        if r.ok() { "Every invariant held.".to_owned() } else { format!("{} invariant(s) broke.", r.violations.len()) }
    );
    if !r.violations.is_empty() {
        b.push_str("<ul id=\"violations\">");
        for v in &r.violations {
            let _ = write!(b, "<li>{}</li>", escape(v));
        }
        b.push_str("</ul>\n");
    }
    b.push_str("<h2>Timeline</h2>\n");
    timeline(&mut b, &r.timeline);
    b.push_str("<h2>Outcomes</h2>\n");
    breakdown(&mut b, r);
    summary(&mut b, r);
    page(&format!("Simulated flight, seed {}", r.seed), &b)
}

/// `data-` attributes of one number.
fn data(measure: &str, reason: Option<&str>, count: u64) -> String {
    let reason = reason.map(|r| format!(" data-reason=\"{}\"", escape(r))).unwrap_or_default();
    format!("data-measure=\"{}\"{reason} data-count=\"{count}\"", escape(measure))
}

fn timeline(b: &mut String, t: &Timeline) {
    // From the gate (nothing happens before but the set-up) to the end.
    let start = t.link.first().map_or(0, |l| l.from_ms).min(t.sales_start_ms);
    let end = t.end_ms.max(start + 1);
    let x =
        |ms: u64| LANE_LABEL + PLOT_WIDTH * ms.clamp(start, end).saturating_sub(start) as f64 / (end - start) as f64;
    let (y_captures, y_link) = (20.0, 20.0 + CAPTURES_HEIGHT + 12.0);
    let y_results = y_link + LINK_HEIGHT + 12.0;
    let height = y_results + RESULTS_HEIGHT + 50.0;
    let _ = write!(
        b,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"timeline\" width=\"{w}\" height=\"{height}\" viewBox=\"0 0 {w} {height}\" role=\"img\" aria-label=\"timeline of the flight\">",
        w = LANE_LABEL + PLOT_WIDTH + 20.0
    );
    // Lane 1: the capture rate, one bar per bucket.
    let bucket = t.capture_bucket_ms.max(1);
    let per_s = |n: u64| n * 1_000 / bucket;
    let peak = t.captures_per_bucket.iter().copied().max().unwrap_or(0).max(1);
    let _ = write!(
        b,
        "<text x=\"0\" y=\"{:.1}\">captures / s</text><text x=\"0\" y=\"{:.1}\">(peak {})</text>",
        y_captures + CAPTURES_HEIGHT / 2.0,
        y_captures + CAPTURES_HEIGHT / 2.0 + 13.0,
        per_s(peak)
    );
    for (i, n) in t.captures_per_bucket.iter().enumerate() {
        let from = t.sales_start_ms + i as u64 * bucket;
        let h = CAPTURES_HEIGHT * *n as f64 / peak as f64;
        let _ = write!(
            b,
            "<rect class=\"captures\" data-bucket=\"{i}\" data-count=\"{n}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{BLUE}\"><title>{:.2}–{:.2} s: {n} captures ({} / s)</title></rect>",
            x(from),
            y_captures + CAPTURES_HEIGHT - h,
            (x(from + bucket) - x(from) - 0.5).max(0.5),
            from as f64 / 1e3,
            (from + bucket) as f64 / 1e3,
            per_s(*n),
        );
    }
    // Lane 2: the ground link as the master saw it, and the emulated outages.
    let _ = write!(b, "<text x=\"0\" y=\"{:.1}\">ground link</text>", y_link + 13.0);
    for l in &t.link {
        let state = if l.up { "up" } else { "down" };
        let _ = write!(
            b,
            "<rect class=\"link\" data-link=\"{state}\" data-from-ms=\"{}\" data-to-ms=\"{}\" x=\"{:.1}\" y=\"{y_link:.1}\" width=\"{:.1}\" height=\"{LINK_HEIGHT}\" fill=\"{}\"><title>link {state} {:.1}–{:.1} s</title></rect>",
            l.from_ms,
            l.to_ms,
            x(l.from_ms),
            (x(l.to_ms) - x(l.from_ms)).max(0.5),
            if l.up { GREEN } else { RED },
            l.from_ms as f64 / 1e3,
            l.to_ms as f64 / 1e3,
        );
    }
    // Under it, the outages the emulator put on the link (the master notices them late, or
    // not at all when they are short).
    let mut outage_from = None;
    for e in &t.events {
        match (e.event.as_str(), outage_from) {
            ("ground_outage_start", _) => outage_from = Some(e.t_ms),
            ("ground_outage_end", Some(from)) => {
                outage_from = None;
                let _ = write!(
                    b,
                    "<rect class=\"outage\" data-from-ms=\"{from}\" data-to-ms=\"{}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"5\" fill=\"#000\"><title>emulated outage {:.1}–{:.1} s</title></rect>",
                    e.t_ms,
                    x(from),
                    y_link + LINK_HEIGHT + 2.0,
                    (x(e.t_ms) - x(from)).max(0.5),
                    from as f64 / 1e3,
                    e.t_ms as f64 / 1e3,
                );
            }
            _ => {}
        }
    }
    // Lane 3: results decided and delivered over time, the batch in flight.
    let total = t.samples.iter().map(|s| s.decided + s.delivered + s.in_batch).max().unwrap_or(0).max(1);
    let _ = write!(b, "<text x=\"0\" y=\"{:.1}\">results</text>", y_results + RESULTS_HEIGHT / 2.0);
    let y = |n: u64| y_results + RESULTS_HEIGHT - RESULTS_HEIGHT * n as f64 / total as f64;
    let line = |b: &mut String, class: &str, colour: &str, f: &dyn Fn(&crate::report::Sample) -> u64| {
        let points: Vec<String> = t.samples.iter().map(|s| format!("{:.1},{:.1}", x(s.t_ms), y(f(s)))).collect();
        if !points.is_empty() {
            let last = t.samples.last().map_or(0, f);
            let _ = write!(
                b,
                "<polyline class=\"{class}\" data-last=\"{last}\" points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"><title>{class}</title></polyline>",
                points.join(" ")
            );
        }
    };
    line(b, "in_batch", AMBER, &|s| s.in_batch);
    line(b, "decided", ORANGE, &|s| s.decided + s.delivered);
    line(b, "delivered", GREEN, &|s| s.delivered);
    // Events: a line across every lane, its name under the plot.
    for (i, e) in t.events.iter().enumerate() {
        let ex = x(e.t_ms);
        let _ = write!(
            b,
            "<g class=\"event\" data-event=\"{ev}\" data-t-ms=\"{}\"><line x1=\"{ex:.1}\" y1=\"10\" x2=\"{ex:.1}\" y2=\"{:.1}\" stroke=\"#555\" stroke-dasharray=\"3,3\"/><text x=\"{ex:.1}\" y=\"{:.1}\">{ev}</text><title>{ev} at {:.1} s</title></g>",
            e.t_ms,
            y_results + RESULTS_HEIGHT,
            y_results + RESULTS_HEIGHT + 14.0 + 10.0 * (i % 3) as f64,
            e.t_ms as f64 / 1e3,
            ev = escape(&e.event),
        );
    }
    let _ = writeln!(
        b,
        "<text x=\"{:.1}\" y=\"{:.1}\">{:.1} s</text><text x=\"{:.1}\" y=\"{:.1}\">{:.1} s</text></svg>",
        LANE_LABEL,
        height - 2.0,
        start as f64 / 1e3,
        x(end) - 30.0,
        height - 2.0,
        end as f64 / 1e3
    );
    let _ = writeln!(
        b,
        "<p class=\"legend\"><span><span class=\"swatch\" style=\"background:{BLUE}\"></span>captures per second</span>\
         <span><span class=\"swatch\" style=\"background:{GREEN}\"></span>link up / results delivered</span>\
         <span><span class=\"swatch\" style=\"background:{RED}\"></span>link down (as the master saw it)</span>\
         <span><span class=\"swatch\" style=\"background:#000\"></span>emulated outage</span>\
         <span><span class=\"swatch\" style=\"background:{AMBER}\"></span>in the batch</span>\
         <span><span class=\"swatch\" style=\"background:{ORANGE}\"></span>decided</span></p>"
    );
}

fn breakdown(b: &mut String, r: &Report) {
    let mut captures = vec![Segment {
        label: format!("accepted: {}", r.accepted),
        value: r.accepted,
        colour: GREEN,
        attrs: format!("class=\"bar\" {}", data("accepted", None, r.accepted)),
    }];
    for (reason, n) in &r.rejected {
        captures.push(Segment {
            label: format!("rejected, {reason}: {n}"),
            value: *n,
            colour: ORANGE,
            attrs: format!("class=\"bar\" stroke=\"#fff\" {}", data("rejected", Some(reason), *n)),
        });
    }
    captures.push(Segment {
        label: format!("unanswered: {}", r.unanswered),
        value: r.unanswered,
        colour: GREY,
        attrs: format!("class=\"bar\" {}", data("unanswered", None, r.unanswered)),
    });
    let mut accepted = vec![Segment {
        label: format!("approved: {}", r.approved),
        value: r.approved,
        colour: GREEN,
        attrs: format!("class=\"bar\" {}", data("approved", None, r.approved)),
    }];
    for (reason, n) in &r.declined {
        accepted.push(Segment {
            label: format!("declined, {reason}: {n}"),
            value: *n,
            colour: RED,
            attrs: format!("class=\"bar\" stroke=\"#fff\" {}", data("declined", Some(reason), *n)),
        });
    }
    accepted.push(Segment {
        label: format!("lost: {}", r.lost),
        value: r.lost,
        colour: "#000",
        attrs: format!("class=\"bar\" {}", data("lost", None, r.lost)),
    });
    let scale = r.captures.max(1);
    let w = LANE_LABEL + PLOT_WIDTH + 20.0;
    let _ = write!(
        b,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"breakdown\" width=\"{w}\" height=\"60\" viewBox=\"0 0 {w} 60\" role=\"img\" aria-label=\"outcome breakdown\">\
         <text x=\"0\" y=\"19\">{} captures</text><text x=\"0\" y=\"47\">{} accepted</text>",
        r.captures, r.accepted
    );
    stacked_bar(b, LANE_LABEL, 5.0, PLOT_WIDTH, 20.0, scale, &captures);
    stacked_bar(b, LANE_LABEL, 33.0, PLOT_WIDTH * r.accepted as f64 / scale as f64, 20.0, r.accepted.max(1), &accepted);
    b.push_str("</svg>\n");
}

fn summary(b: &mut String, r: &Report) {
    b.push_str("<table id=\"summary\">\n<tr><th>measure</th><th>reason</th><th>payments</th></tr>\n");
    let mut row = |measure: &str, reason: Option<&str>, n: u64| {
        let _ = writeln!(
            b,
            "<tr class=\"total\" {}><th>{}</th><td>{}</td><td>{n}</td></tr>",
            data(measure, reason, n),
            escape(measure),
            escape(reason.unwrap_or(""))
        );
    };
    row("captures", None, r.captures);
    row("accepted", None, r.accepted);
    row("rejected", None, r.rejected.values().sum());
    for (reason, n) in &r.rejected {
        row("rejected", Some(reason), *n);
    }
    row("unanswered", None, r.unanswered);
    row("approved", None, r.approved);
    row("declined", None, r.declined.values().sum());
    for (reason, n) in &r.declined {
        row("declined", Some(reason), *n);
    }
    for (name, n) in [
        ("lost", r.lost),
        ("duplicated", r.duplicated),
        ("phantom", r.phantom),
        ("money_mismatches", r.money_mismatches),
        ("undelivered", r.undelivered),
        ("mismatched", r.mismatched),
        ("card_data_retained", r.card_data_retained),
        ("pan_leaks", r.pan_leaks),
        ("batches", r.batches),
    ] {
        row(name, None, n);
    }
    b.push_str("</table>\n");
}

#[cfg(test)]
#[path = "../tests/common/page_check.rs"]
mod page_check;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::page_check::assert_page_matches_json;
    use super::*;
    use crate::report::{LinkInterval, Sample};

    fn report() -> Report {
        let mut t = Timeline::default();
        t.link_seen(1_000, true);
        t.mark(1_000, "gate");
        t.link_seen(1_200, false);
        t.mark(1_200, "take_off");
        t.sales_start_ms = 1_300;
        t.capture_bucket_ms = 1_000;
        t.captures_per_bucket = vec![5, 3];
        t.mark(3_500, "landing");
        t.mark(3_700, "ground_outage_start");
        t.mark(3_900, "ground_outage_end");
        for (ms, up, in_batch, delivered) in [(3_600, false, 0, 0), (4_000, true, 8, 0), (4_500, true, 0, 8)] {
            t.sample(Sample { t_ms: ms, link_up: up, in_batch, decided: 0, delivered });
        }
        t.mark(4_500, "all_delivered");
        t.finish(4_600);
        Report {
            seed: 7,
            slaves: 2,
            payments_per_slave: 4,
            captures: 8,
            accepted: 6,
            rejected: BTreeMap::from([("bin_not_enrolled".into(), 1), ("<expired>".into(), 1)]),
            approved: 5,
            declined: BTreeMap::from([("insufficient_funds".into(), 1)]),
            batches: 1,
            timeline: t,
            ..Report::default()
        }
    }

    #[test]
    fn the_page_parses_and_its_numbers_are_the_json_reports() {
        let r = report();
        let html = render(&r);
        assert_page_matches_json(&html, &serde_json::to_value(&r).expect("json"));
        assert!(html.contains("&lt;expired&gt;"), "reasons are escaped");
    }

    #[test]
    fn the_timeline_keeps_link_intervals_and_drops_repeated_samples() {
        let t = report().timeline;
        assert_eq!(
            t.link,
            [
                LinkInterval { from_ms: 1_000, to_ms: 1_200, up: true },
                LinkInterval { from_ms: 1_200, to_ms: 4_000, up: false },
                LinkInterval { from_ms: 4_000, to_ms: 4_600, up: true },
            ]
        );
        let mut again = t.clone();
        again.sample(Sample { t_ms: 4_550, link_up: true, in_batch: 0, decided: 0, delivered: 8 });
        assert_eq!(again.samples.len(), t.samples.len(), "an unchanged sample is not repeated");
        let html = render(&report());
        let (_, bars) = super::page_check::read_back(&html);
        assert_eq!(bars, [5, 3]);
        assert_eq!(html.matches("class=\"link\"").count(), 3);
        assert!(html.contains("class=\"outage\" data-from-ms=\"3700\" data-to-ms=\"3900\""), "{html}");
    }
}
