//! The deferred-authorization deadline: a payment captured offline must reach the issuer within
//! a window of its capture (24 h by the card schemes' deferred-authorization rules, or the
//! issuer risks "no authorization" disputes).
//!
//! The master never drops a payment for missing it: it warns the crew a lead time before the
//! deadline, and carries a payment sealed after its deadline with `late: true`, which the issuer
//! records. Whether an item is late is judged against the time its batch was **sealed** (the
//! time prefix of the batch id), not the time a byte was sent: a sealed batch is re-sent
//! unchanged after any failure, so every copy of an item says the same thing.
//!
//! Pure: every time is passed in, in milliseconds since the Unix epoch.

/// Where a payment stands against its deadline at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeadlineState {
    /// More than the lead time left.
    OnTime,
    /// The deadline is within the lead time (or now): the crew is warned.
    Soon,
    /// The deadline has passed.
    Missed,
}

/// The window a payment has to reach the issuer, and how long before its end the crew is
/// warned. Holds only `warn_lead_ms <= window_ms` and a window of at least 1 ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    window_ms: u64,
    warn_lead_ms: u64,
}

/// Why a [`Deadline`] cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeadlineError {
    /// A window of zero would make every payment late at capture.
    #[error("the deadline window must be longer than zero")]
    EmptyWindow,
    /// A warning that comes before the capture itself says nothing.
    #[error("the warning lead time ({lead_ms} ms) is longer than the window ({window_ms} ms)")]
    LeadOverWindow {
        /// The lead time asked for.
        lead_ms: u64,
        /// The window.
        window_ms: u64,
    },
}

/// The card schemes' deferred-authorization window: 24 hours.
pub const WINDOW_DEFAULT_MS: u64 = 24 * 3_600_000;
/// Default warning lead time: 4 hours, long enough for the crew to ask for a link (a gate Wi-Fi,
/// a satellite window) before the deadline.
pub const WARN_LEAD_DEFAULT_MS: u64 = 4 * 3_600_000;

impl Default for Deadline {
    fn default() -> Self {
        Self { window_ms: WINDOW_DEFAULT_MS, warn_lead_ms: WARN_LEAD_DEFAULT_MS }
    }
}

impl Deadline {
    /// A deadline `window_ms` after capture, warned about `warn_lead_ms` before.
    pub fn new(window_ms: u64, warn_lead_ms: u64) -> Result<Self, DeadlineError> {
        if window_ms == 0 {
            return Err(DeadlineError::EmptyWindow);
        }
        if warn_lead_ms > window_ms {
            return Err(DeadlineError::LeadOverWindow { lead_ms: warn_lead_ms, window_ms });
        }
        Ok(Self { window_ms, warn_lead_ms })
    }

    /// The window, ms.
    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// The lead time, ms.
    pub fn warn_lead_ms(&self) -> u64 {
        self.warn_lead_ms
    }

    /// When a payment captured at `captured_unix_ms` must have reached the issuer.
    pub fn due_unix_ms(&self, captured_unix_ms: u64) -> u64 {
        captured_unix_ms.saturating_add(self.window_ms)
    }

    /// Whether a payment captured at `captured_unix_ms` is late at `at_unix_ms`: the deadline is
    /// the last instant it is still on time.
    pub fn is_late(&self, captured_unix_ms: u64, at_unix_ms: u64) -> bool {
        at_unix_ms > self.due_unix_ms(captured_unix_ms)
    }

    /// Where a payment captured at `captured_unix_ms` stands at `now_unix_ms`.
    pub fn state(&self, captured_unix_ms: u64, now_unix_ms: u64) -> DeadlineState {
        let due = self.due_unix_ms(captured_unix_ms);
        if now_unix_ms > due {
            DeadlineState::Missed
        } else if now_unix_ms >= due.saturating_sub(self.warn_lead_ms) {
            DeadlineState::Soon
        } else {
            DeadlineState::OnTime
        }
    }

    /// What the crew is shown for one payment carried to the issuer, at `now_unix_ms`:
    ///
    /// - sealed into a batch at `sealed_unix_ms`: [`Missed`](DeadlineState::Missed) if it was
    ///   sealed late (its items say `late: true`, for good); otherwise, while the issuer has not
    ///   answered (`waiting`), [`Soon`](DeadlineState::Soon) once within the lead time or past
    ///   the deadline (the batch left on time but its answer has not come: the crew should get
    ///   a link), and [`OnTime`](DeadlineState::OnTime) once answered;
    /// - not sealed yet: its [`state`](Self::state) now (a payment past its deadline will be
    ///   sealed late: nothing can make it on time again).
    pub fn judge(
        &self,
        captured_unix_ms: u64,
        sealed_unix_ms: Option<u64>,
        waiting: bool,
        now_unix_ms: u64,
    ) -> DeadlineState {
        match sealed_unix_ms {
            Some(sealed) if self.is_late(captured_unix_ms, sealed) => DeadlineState::Missed,
            Some(_) if !waiting => DeadlineState::OnTime,
            Some(_) => match self.state(captured_unix_ms, now_unix_ms) {
                DeadlineState::OnTime => DeadlineState::OnTime,
                DeadlineState::Soon | DeadlineState::Missed => DeadlineState::Soon,
            },
            None => self.state(captured_unix_ms, now_unix_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;
    const CAPTURED: u64 = 1_700_000_000_000;

    #[test]
    fn the_deadline_is_capture_plus_the_window_and_its_last_instant_is_on_time() {
        let d = Deadline::default();
        assert_eq!(d.due_unix_ms(CAPTURED), CAPTURED + 24 * H);
        assert!(!d.is_late(CAPTURED, CAPTURED));
        assert!(!d.is_late(CAPTURED, CAPTURED + 24 * H), "the deadline itself is on time");
        assert!(d.is_late(CAPTURED, CAPTURED + 24 * H + 1));
        assert!(d.is_late(CAPTURED, CAPTURED + 30 * H), "a 30-hour diversion");
        // Never overflows, whatever a peer stamped.
        assert!(!d.is_late(u64::MAX - 1, u64::MAX));
    }

    #[test]
    fn states_in_order_over_a_flight() {
        let d = Deadline::new(24 * H, 4 * H).expect("valid");
        let table = [
            (0, DeadlineState::OnTime),
            (20 * H - 1, DeadlineState::OnTime),
            (20 * H, DeadlineState::Soon),
            (24 * H, DeadlineState::Soon),
            (24 * H + 1, DeadlineState::Missed),
            (30 * H, DeadlineState::Missed),
        ];
        for (after, want) in table {
            assert_eq!(d.state(CAPTURED, CAPTURED + after), want, "{after} ms after capture");
        }
        // A clock that puts now before the capture (a terminal's skew): on time, not a panic.
        assert_eq!(d.state(CAPTURED, CAPTURED - H), DeadlineState::OnTime);
    }

    #[test]
    fn the_lead_time_must_fit_in_a_window_that_is_not_empty() {
        assert_eq!(Deadline::new(0, 0), Err(DeadlineError::EmptyWindow));
        assert_eq!(Deadline::new(H, H + 1), Err(DeadlineError::LeadOverWindow { lead_ms: H + 1, window_ms: H }));
        let warn_from_capture = Deadline::new(H, H).expect("a lead equal to the window warns from capture");
        assert_eq!(warn_from_capture.state(CAPTURED, CAPTURED), DeadlineState::Soon);
        let no_warning = Deadline::new(H, 0).expect("valid");
        assert_eq!(no_warning.state(CAPTURED, CAPTURED + H), DeadlineState::Soon, "only the last instant");
    }

    #[test]
    fn judged_by_the_seal_once_sealed() {
        let d = Deadline::new(24 * H, 4 * H).expect("valid");
        let at = |h: u64| CAPTURED + h * H;
        // Sealed after the deadline: missed for good, answered or not.
        assert_eq!(d.judge(CAPTURED, Some(at(30)), true, at(30)), DeadlineState::Missed);
        assert_eq!(d.judge(CAPTURED, Some(at(30)), false, at(31)), DeadlineState::Missed);
        // Sealed on time and answered: on time, however late it is now.
        assert_eq!(d.judge(CAPTURED, Some(at(23)), false, at(40)), DeadlineState::OnTime);
        // Sealed on time, no answer yet: a warning, never "missed" (its items say late: false).
        assert_eq!(d.judge(CAPTURED, Some(at(1)), true, at(2)), DeadlineState::OnTime);
        assert_eq!(d.judge(CAPTURED, Some(at(23)), true, at(23)), DeadlineState::Soon);
        assert_eq!(d.judge(CAPTURED, Some(at(23)), true, at(30)), DeadlineState::Soon);
        // Not sealed yet: where it stands now.
        assert_eq!(d.judge(CAPTURED, None, true, at(1)), DeadlineState::OnTime);
        assert_eq!(d.judge(CAPTURED, None, true, at(21)), DeadlineState::Soon);
        assert_eq!(d.judge(CAPTURED, None, true, at(30)), DeadlineState::Missed);
    }
}
