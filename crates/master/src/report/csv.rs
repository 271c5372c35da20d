//! The report as CSV for the airline's back office (RFC 4180: comma-separated, CRLF line ends,
//! a field quoted when it holds a comma, a quote or a line break, quotes doubled).
//!
//! One header row, then one row per (terminal, currency, measure[, reason]): first the rows
//! totalling every terminal (`terminal` = [`ALL_TERMINALS`]) for each currency, then each
//! terminal's. `measure` is `captured`, `accepted`, `aged`, `deadline_soon`, `deadline_missed`
//! or an outcome name
//! ([`Outcome::ALL`]); `reason` is empty, except on the by-reason rows of `refused` and
//! `declined`, which add up to their measure's row. Flagged payments are in the JSON and HTML
//! forms only.

use super::{FlightReport, Outcome, Tally, Totals, ALL_TERMINALS};

/// The header row's fields.
pub const HEADER: [&str; 7] = ["flight", "terminal", "currency", "measure", "reason", "count", "amount_minor"];

/// The report as CSV.
pub fn render(r: &FlightReport) -> String {
    let mut out = String::new();
    line(&mut out, &HEADER);
    for c in &r.currencies {
        rows(&mut out, &r.flight, ALL_TERMINALS, &c.currency, &c.totals);
    }
    for t in &r.terminals {
        rows(&mut out, &r.flight, &t.terminal, &t.currency, &t.totals);
    }
    out
}

/// The rows of one terminal (or all) in one currency.
fn rows(out: &mut String, flight: &str, terminal: &str, currency: &str, t: &Totals) {
    let mut row = |measure: &str, reason: &str, n: Tally| {
        line(out, &[flight, terminal, currency, measure, reason, &n.count.to_string(), &n.amount_minor.to_string()]);
    };
    row("captured", "", t.captured);
    row("accepted", "", t.accepted);
    row("aged", "", t.aged);
    row("deadline_soon", "", t.deadline_soon);
    row("deadline_missed", "", t.deadline_missed);
    for o in Outcome::ALL {
        row(o.as_str(), "", t.outcome(o));
        let by_reason = match o {
            Outcome::Refused => &t.refused_by_reason,
            Outcome::Declined => &t.declined_by_reason,
            _ => continue,
        };
        for (reason, n) in by_reason {
            row(o.as_str(), reason, *n);
        }
    }
}

fn line(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field(out, f);
    }
    out.push_str("\r\n");
}

/// One field, quoted when RFC 4180 needs it.
fn field(out: &mut String, f: &str) {
    if f.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&f.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(f);
    }
}

/// Parses RFC 4180 text into rows of fields (for tests and checkers of the report).
pub fn parse(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let (mut row, mut f) = (Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                f.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => f.push(c),
            (false, '"') if f.is_empty() => quoted = true,
            (false, '"') => return Err(format!("row {}: a quote inside an unquoted field", rows.len() + 1)),
            (false, ',') => row.push(std::mem::take(&mut f)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut f));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => f.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    if !f.is_empty() || !row.is_empty() {
        row.push(f);
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{every_outcome, report};

    #[test]
    fn fields_are_quoted_as_rfc_4180_says() {
        let mut out = String::new();
        line(&mut out, &["plain", "a,b", "say \"hi\"", "two\nlines", ""]);
        assert_eq!(out, "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\r\n");
        assert_eq!(parse(&out).expect("parses"), [["plain", "a,b", "say \"hi\"", "two\nlines", ""]]);
        assert!(parse("a\"b\r\n").is_err());
        assert!(parse("\"open\r\n").is_err());
    }

    #[test]
    fn every_row_has_the_header_and_terminals_add_up_to_the_all_rows() {
        let r = report(&every_outcome());
        let rows = parse(&render(&r)).expect("parses");
        assert_eq!(rows[0], HEADER);
        assert!(rows.iter().all(|row| row.len() == HEADER.len()), "{rows:?}");
        let sum = |terminal_all: bool, currency: &str, measure: &str, reason: &str| -> (u64, u64) {
            rows[1..]
                .iter()
                .filter(|row| (row[1] == ALL_TERMINALS) == terminal_all)
                .filter(|row| row[2] == currency && row[3] == measure && row[4] == reason)
                .map(|row| (row[5].parse::<u64>().expect("count"), row[6].parse::<u64>().expect("amount")))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        };
        for c in &r.currencies {
            let measures = ["captured", "accepted", "aged", "deadline_soon", "deadline_missed"]
                .into_iter()
                .chain(Outcome::ALL.iter().map(|o| o.as_str()));
            for m in measures {
                assert_eq!(sum(true, &c.currency, m, ""), sum(false, &c.currency, m, ""), "{} {m}", c.currency);
            }
            let t = &c.totals;
            assert_eq!(
                sum(true, &c.currency, "approved", ""),
                (t.outcome(Outcome::Approved).count, t.outcome(Outcome::Approved).amount_minor)
            );
        }
        assert_eq!(sum(true, "EUR", "declined", "insufficient_funds"), (1, 300));
        assert_eq!(sum(true, "EUR", "refused", "over_card_flight_limit"), (1, 700));
        assert!(rows.iter().all(|row| row[0] == "IF200" || row == &HEADER));
    }
}
