//! The report as one self-contained page a crew tablet can open offline: inline CSS and SVG,
//! no script, no external URL. The markup is well-formed XHTML (every element closed, every
//! attribute quoted, text escaped), so an XML parser can check it; each number shown also sits
//! in `data-` attributes (`data-terminal`, `data-currency`, `data-measure`, `data-reason`,
//! `data-count`, `data-amount-minor`) that a checker reads and compares with the JSON form.
//!
//! The helpers ([`escape`], [`page`], [`Segment`], [`stacked_bar`]) are shared with
//! `inflight-sim --html`.

use std::fmt::Write as _;

use inflight_wire::Currency;

use super::{FlightReport, Outcome, Tally, Totals, ALL_TERMINALS};

/// Text escaped for XHTML element content and double-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in XML 1.0: shown as a replacement character.
            c if c.is_control() && !matches!(c, '\n' | '\t') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// The style every page shares.
const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1em;color:#222;background:#fff}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}\
th{text-align:left;background:#f4f4f4}.note{color:#555;max-width:60em}\
.legend span{display:inline-block;margin-right:1em}.swatch{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}\
svg{display:block;margin:.5em 0}svg text{font-size:11px;fill:#222}";

/// A whole page: `title` (escaped here) and `body` (markup, already escaped).
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n<title>{}</title>\n<style>{STYLE}</style>\n\
         </head>\n<body>\n{body}</body>\n</html>\n",
        escape(title)
    )
}

/// One segment of a stacked bar.
#[derive(Debug, Clone)]
pub struct Segment {
    /// What it counts (shown on hover).
    pub label: String,
    /// Its size, in the bar's unit.
    pub value: u64,
    /// A CSS colour.
    pub colour: &'static str,
    /// Extra attributes of its `rect` (`data-…="…"`, already escaped).
    pub attrs: String,
}

/// A horizontal stacked bar at (`x`, `y`), `width` standing for `scale` units: SVG `rect`s.
pub fn stacked_bar(out: &mut String, x: f64, y: f64, width: f64, height: f64, scale: u64, segments: &[Segment]) {
    let mut at = x;
    for s in segments.iter().filter(|s| s.value > 0) {
        let w = width * s.value as f64 / scale.max(1) as f64;
        let _ = write!(
            out,
            "<rect x=\"{at:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{height:.1}\" fill=\"{}\" {}><title>{}</title></rect>",
            s.colour,
            s.attrs,
            escape(&s.label)
        );
        at += w;
    }
}

/// The colour an outcome is drawn in.
pub fn colour(o: Outcome) -> &'static str {
    match o {
        Outcome::Approved => "#2e7d32",
        Outcome::Declined => "#c62828",
        Outcome::Pending => "#f9a825",
        Outcome::Quarantined => "#6a1b9a",
        Outcome::ReversalPending => "#8d6e63",
        Outcome::Reversed => "#00838f",
        Outcome::Unconfirmed => "#90a4ae",
        Outcome::Refused => "#ef6c00",
        Outcome::Voided => "#546e7a",
    }
}

/// An amount in minor units, shown in major units (`1250` EUR → `12.50`).
pub fn amount(amount_minor: u64, currency: &str) -> String {
    let exp = Currency::parse(currency).map_or(2, |c| c.exponent()) as u32;
    if exp == 0 {
        return amount_minor.to_string();
    }
    let unit = 10u64.pow(exp);
    format!("{}.{:0width$}", amount_minor / unit, amount_minor % unit, width = exp as usize)
}

/// The attributes that carry a tally for checkers.
fn data(terminal: &str, currency: &str, measure: &str, reason: Option<&str>, t: Tally) -> String {
    let reason = reason.map(|r| format!(" data-reason=\"{}\"", escape(r))).unwrap_or_default();
    format!(
        "data-terminal=\"{}\" data-currency=\"{}\" data-measure=\"{}\"{reason} data-count=\"{}\" data-amount-minor=\"{}\"",
        escape(terminal),
        escape(currency),
        escape(measure),
        t.count,
        t.amount_minor
    )
}

/// Width of the bars' drawing area, px.
const BAR_WIDTH: f64 = 600.0;
/// Room for the terminal names left of the bars, px.
const LABEL_WIDTH: f64 = 110.0;
/// Height of one terminal's bar, px.
const BAR_HEIGHT: f64 = 14.0;

/// A duration in hours, with a decimal when it is not whole (a test's window of seconds).
fn hours(ms: u64) -> String {
    if ms % 3_600_000 == 0 {
        (ms / 3_600_000).to_string()
    } else {
        format!("{:.3}", ms as f64 / 3_600_000.0)
    }
}

/// The report as one page.
pub fn render(r: &FlightReport) -> String {
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>Flight <span id=\"flight\">{}</span>: payments</h1>\n<p class=\"note\">What the aircraft server recorded for this \
         flight. Cards refused at the seat never reach it and are not counted here. Amounts in major units; \
         <em>aged</em>: waiting for the issuer for more than {} h; <em>deadline missed</em>: sealed for the issuer \
         more than {} h after capture (sent late, never dropped), <span id=\"deadline-missed\">{}</span> in all; \
         <em>deadline soon</em>: waiting, within {} h of that deadline, <span id=\"deadline-soon\">{}</span> in all.{}</p>\n",
        escape(&r.flight),
        r.aged_after_ms / 3_600_000,
        hours(r.deadline_window_ms),
        r.deadline_missed,
        hours(r.deadline_warn_lead_ms),
        r.deadline_soon,
        match r.flights.iter().filter(|f| **f != r.flight).cloned().collect::<Vec<_>>() {
            others if others.is_empty() => String::new(),
            others => format!(" Other flights on record: {}.", escape(&others.join(", "))),
        }
    );
    if r.currencies.is_empty() {
        b.push_str("<p id=\"empty\">No payment recorded for this flight.</p>\n");
    }
    legend(&mut b);
    for c in &r.currencies {
        currency_section(&mut b, r, &c.currency, &c.totals);
    }
    flagged(&mut b, r);
    page(&format!("Flight {}: payments", r.flight), &b)
}

fn legend(b: &mut String) {
    b.push_str("<p class=\"legend\">");
    for o in Outcome::ALL {
        let _ =
            write!(b, "<span><span class=\"swatch\" style=\"background:{}\"></span>{}</span>", colour(o), o.as_str());
    }
    b.push_str("</p>\n");
}

fn currency_section(b: &mut String, r: &FlightReport, currency: &str, t: &Totals) {
    let cur = escape(currency);
    let _ = write!(b, "<section class=\"currency\" data-currency=\"{cur}\">\n<h2>{cur}</h2>\n");
    // The outcome breakdown: one bar for the whole flight, then the table.
    let segments = |terminal: &str, t: &Totals| -> Vec<Segment> {
        let name = if terminal == ALL_TERMINALS { "all terminals" } else { terminal };
        Outcome::ALL
            .iter()
            .map(|o| {
                let n = t.outcome(*o);
                Segment {
                    label: format!(
                        "{name} {}: {} payment(s), {} {currency}",
                        o.as_str(),
                        n.count,
                        amount(n.amount_minor, currency)
                    ),
                    value: n.amount_minor,
                    colour: colour(*o),
                    attrs: format!("class=\"bar\" {}", data(terminal, currency, o.as_str(), None, n)),
                }
            })
            .collect()
    };
    let _ = write!(
        b,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"breakdown\" width=\"{w}\" height=\"30\" viewBox=\"0 0 {w} 30\" role=\"img\" aria-label=\"outcome breakdown, {cur}\">",
        w = LABEL_WIDTH + BAR_WIDTH + 10.0
    );
    let _ = write!(b, "<text x=\"0\" y=\"19\">all terminals</text>");
    stacked_bar(b, LABEL_WIDTH, 5.0, BAR_WIDTH, 20.0, t.captured.amount_minor, &segments(ALL_TERMINALS, t));
    b.push_str(
        "</svg>\n<table class=\"totals\">\n<tr><th>measure</th><th>reason</th><th>payments</th><th>amount</th></tr>\n",
    );
    let mut row = |measure: &str, reason: Option<&str>, n: Tally| {
        let _ = writeln!(
            b,
            "<tr class=\"total\" {}><th>{}</th><td>{}</td><td>{}</td><td>{}</td></tr>",
            data(ALL_TERMINALS, currency, measure, reason, n),
            escape(measure),
            escape(reason.unwrap_or("")),
            n.count,
            amount(n.amount_minor, currency)
        );
    };
    row("captured", None, t.captured);
    row("accepted", None, t.accepted);
    for o in Outcome::ALL {
        row(o.as_str(), None, t.outcome(o));
        let by_reason = match o {
            Outcome::Refused => &t.refused_by_reason,
            Outcome::Declined => &t.declined_by_reason,
            _ => continue,
        };
        for (reason, n) in by_reason {
            row(o.as_str(), Some(reason), *n);
        }
    }
    row("aged", None, t.aged);
    row("deadline_soon", None, t.deadline_soon);
    row("deadline_missed", None, t.deadline_missed);
    b.push_str("</table>\n");
    // Per terminal: one stacked bar each, on one scale (the largest terminal).
    let terminals: Vec<_> = r.terminals.iter().filter(|x| x.currency == currency).collect();
    let scale = terminals.iter().map(|x| x.totals.captured.amount_minor).max().unwrap_or(0);
    let h = BAR_HEIGHT + 4.0;
    let height = 20.0 + h * terminals.len() as f64;
    let _ = write!(
        b,
        "<h3>Per terminal ({cur}, captured amount by outcome)</h3>\n<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"terminals\" width=\"{w}\" height=\"{height}\" viewBox=\"0 0 {w} {height}\" role=\"img\" aria-label=\"per terminal, {cur}\">",
        w = LABEL_WIDTH + BAR_WIDTH + 120.0
    );
    for (i, x) in terminals.iter().enumerate() {
        let y = 10.0 + h * i as f64;
        let _ = write!(
            b,
            "<g class=\"terminal\" {}><text x=\"0\" y=\"{:.1}\">{}</text>",
            data(&x.terminal, currency, "captured", None, x.totals.captured),
            y + BAR_HEIGHT - 3.0,
            escape(&x.terminal)
        );
        stacked_bar(b, LABEL_WIDTH, y, BAR_WIDTH, BAR_HEIGHT, scale, &segments(&x.terminal, &x.totals));
        let _ = write!(
            b,
            "<text x=\"{:.1}\" y=\"{:.1}\">{} · {}</text></g>",
            LABEL_WIDTH + BAR_WIDTH + 6.0,
            y + BAR_HEIGHT - 3.0,
            x.totals.captured.count,
            amount(x.totals.captured.amount_minor, currency)
        );
    }
    b.push_str("</svg>\n</section>\n");
}

fn flagged(b: &mut String, r: &FlightReport) {
    let _ = writeln!(
        b,
        "<h2>Flagged payments: <span id=\"flagged-total\" data-count=\"{n}\">{n}</span></h2>",
        n = r.flagged_total
    );
    if r.flagged.is_empty() {
        return;
    }
    if (r.flagged.len() as u64) < r.flagged_total {
        let _ = writeln!(
            b,
            "<p class=\"note\">The first {} are listed; the JSON form has the same list.</p>",
            r.flagged.len()
        );
    }
    b.push_str(
        "<table id=\"flagged\">\n<tr><th>payment</th><th>terminal</th><th>seat</th><th>card</th><th>amount</th><th>currency</th><th>flags</th><th>state</th></tr>\n",
    );
    for f in &r.flagged {
        let state = match &f.reason {
            Some(reason) => format!("{} ({reason})", f.state),
            None => f.state.clone(),
        };
        let _ = writeln!(
            b,
            "<tr class=\"flagged\" data-payment-id=\"{}\" data-amount-minor=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&f.payment_id),
            f.amount_minor,
            escape(&f.payment_id),
            escape(&f.terminal),
            escape(&f.seat),
            escape(&f.card),
            amount(f.amount_minor, &f.currency),
            escape(&f.currency),
            escape(&f.flags.join(", ")),
            escape(&state)
        );
    }
    b.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{every_outcome, report};

    /// The `data-` tallies of elements of `class`, as (terminal, currency, measure, reason, tally).
    fn tallies(doc: &roxmltree::Document<'_>, class: &str) -> Vec<(String, String, String, String, Tally)> {
        doc.descendants()
            .filter(|n| n.attribute("class") == Some(class))
            .map(|n| {
                let a = |k: &str| n.attribute(k).unwrap_or_default().to_owned();
                let num = |k: &str| a(k).parse::<u64>().expect("a number");
                (
                    a("data-terminal"),
                    a("data-currency"),
                    a("data-measure"),
                    a("data-reason"),
                    Tally { count: num("data-count"), amount_minor: num("data-amount-minor") },
                )
            })
            .collect()
    }

    #[test]
    fn the_page_parses_and_its_numbers_are_the_reports() {
        let r = report(&every_outcome());
        let html = render(&r);
        let doc = roxmltree::Document::parse_with_options(
            &html,
            roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() },
        )
        .expect("well-formed XHTML");
        let totals = tallies(&doc, "total");
        for c in &r.currencies {
            let find = |m: &str, reason: &str| {
                totals
                    .iter()
                    .find(|t| t.0 == ALL_TERMINALS && t.1 == c.currency && t.2 == m && t.3 == reason)
                    .map(|t| t.4)
                    .unwrap_or_else(|| panic!("{} {m} {reason} missing", c.currency))
            };
            assert_eq!(find("captured", ""), c.totals.captured);
            assert_eq!(find("accepted", ""), c.totals.accepted);
            assert_eq!(find("aged", ""), c.totals.aged);
            assert_eq!(find("deadline_soon", ""), c.totals.deadline_soon);
            assert_eq!(find("deadline_missed", ""), c.totals.deadline_missed);
            for o in Outcome::ALL {
                assert_eq!(find(o.as_str(), ""), c.totals.outcome(o), "{}", o.as_str());
            }
            for (reason, n) in &c.totals.declined_by_reason {
                assert_eq!(find("declined", reason), *n);
            }
        }
        let bars = tallies(&doc, "bar");
        for t in &r.terminals {
            for o in Outcome::ALL.iter().filter(|o| t.totals.outcome(**o).count > 0) {
                let bar = bars.iter().find(|b| b.0 == t.terminal && b.1 == t.currency && b.2 == o.as_str());
                assert_eq!(
                    bar.map(|b| b.4),
                    Some(t.totals.outcome(*o)),
                    "{} {} {}",
                    t.terminal,
                    t.currency,
                    o.as_str()
                );
            }
        }
        for c in &r.currencies {
            for o in Outcome::ALL.iter().filter(|o| c.totals.outcome(**o).count > 0) {
                let bar = bars.iter().find(|b| b.0 == ALL_TERMINALS && b.1 == c.currency && b.2 == o.as_str());
                assert_eq!(bar.map(|b| b.4), Some(c.totals.outcome(*o)), "breakdown {} {}", c.currency, o.as_str());
            }
        }
        let flagged = doc.descendants().find(|n| n.attribute("id") == Some("flagged-total")).expect("flagged total");
        assert_eq!(flagged.attribute("data-count"), Some("2"));
        assert_eq!(doc.descendants().filter(|n| n.attribute("class") == Some("flagged")).count(), 2);
    }

    #[test]
    fn text_from_input_is_escaped_and_nothing_is_fetched() {
        let mut rows = every_outcome();
        rows[8].view.payment.seat = "<script>alert(\"x\")</script>&'".into();
        let html = render(&report(&rows));
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"));
        roxmltree::Document::parse_with_options(
            &html,
            roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() },
        )
        .expect("still well-formed");
        for external in ["src=", "href=", "url(", "@import"] {
            assert!(!html.contains(external), "{external} in the page");
        }
        assert!(!html.contains("4111111111111111"));
    }

    #[test]
    fn amounts_are_shown_in_major_units() {
        assert_eq!(amount(1_250, "EUR"), "12.50");
        assert_eq!(amount(5, "EUR"), "0.05");
        assert_eq!(amount(1_250, "JPY"), "1250");
        assert_eq!(escape("a\u{1}b"), "a\u{fffd}b");
    }
}
