//! The ground-link watcher: is the issuer reachable? Probes feed in; hysteresis keeps one lost
//! probe from tearing down an upload and one lucky probe from starting one. The crew can
//! override it (`auto|up|down`).

/// The crew's override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkOverride {
    /// Follow the probes.
    #[default]
    Auto,
    /// Treat the link as up (uploads are attempted even if probes fail).
    Up,
    /// Treat the link as down (nothing is sent to the ground).
    Down,
}

impl LinkOverride {
    /// Parses `auto`, `up` or `down`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "up" => Ok(Self::Up),
            "down" => Ok(Self::Down),
            _ => Err(format!("link override must be auto, up or down, not {s:?}")),
        }
    }

    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// Probe results in, link state out.
#[derive(Debug, Clone)]
pub struct LinkWatcher {
    /// Consecutive successful probes needed to call the link up.
    up_after: u32,
    /// Consecutive failed probes needed to call it down.
    down_after: u32,
    ok_streak: u32,
    fail_streak: u32,
    /// What the probes say.
    probed_up: bool,
    /// What the crew says.
    mode: LinkOverride,
}

impl LinkWatcher {
    /// A watcher that starts down. Streak lengths are at least 1.
    pub fn new(up_after: u32, down_after: u32) -> Self {
        Self {
            up_after: up_after.max(1),
            down_after: down_after.max(1),
            ok_streak: 0,
            fail_streak: 0,
            probed_up: false,
            mode: LinkOverride::Auto,
        }
    }

    /// The effective state.
    pub fn is_up(&self) -> bool {
        match self.mode {
            LinkOverride::Auto => self.probed_up,
            LinkOverride::Up => true,
            LinkOverride::Down => false,
        }
    }

    /// The crew's override in force.
    pub fn mode(&self) -> LinkOverride {
        self.mode
    }

    /// Records a probe result. Returns the new effective state if it changed.
    pub fn on_probe(&mut self, ok: bool) -> Option<bool> {
        let before = self.is_up();
        if ok {
            self.ok_streak += 1;
            self.fail_streak = 0;
            if self.ok_streak >= self.up_after {
                self.probed_up = true;
            }
        } else {
            self.fail_streak += 1;
            self.ok_streak = 0;
            if self.fail_streak >= self.down_after {
                self.probed_up = false;
            }
        }
        (self.is_up() != before).then_some(self.is_up())
    }

    /// Sets the crew override. Returns the new effective state if it changed.
    pub fn set_override(&mut self, mode: LinkOverride) -> Option<bool> {
        let before = self.is_up();
        self.mode = mode;
        (self.is_up() != before).then_some(self.is_up())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_and_override() {
        let mut w = LinkWatcher::new(2, 3);
        assert!(!w.is_up());
        assert_eq!(w.on_probe(true), None, "one good probe is not enough");
        assert_eq!(w.on_probe(true), Some(true));
        assert_eq!(w.on_probe(false), None);
        assert_eq!(w.on_probe(false), None);
        assert_eq!(w.on_probe(true), None, "a good probe resets the failure streak");
        assert_eq!(w.on_probe(false), None);
        assert_eq!(w.on_probe(false), None);
        assert_eq!(w.on_probe(false), Some(false));
        assert_eq!(w.set_override(LinkOverride::Up), Some(true));
        assert_eq!(w.on_probe(false), None, "the override wins over probes");
        assert_eq!(w.set_override(LinkOverride::Auto), Some(false));
        assert_eq!(w.set_override(LinkOverride::Down), None);
        assert_eq!(w.mode(), LinkOverride::Down, "the crew's override is kept");
        assert_eq!(
            LinkOverride::parse("sideways").map(|_| ()),
            Err("link override must be auto, up or down, not \"sideways\"".into())
        );
        for mode in [LinkOverride::Auto, LinkOverride::Up, LinkOverride::Down] {
            assert_eq!(LinkOverride::parse(mode.as_str()), Ok(mode), "names round-trip");
        }
        assert_eq!(LinkOverride::Up.as_str(), "up");
    }
}
