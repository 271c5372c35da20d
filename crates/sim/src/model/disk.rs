//! A store that can crash: writes apply at once to what the node reads (like sled's memory),
//! become durable at the next flush, and a crash keeps only what was durable plus a prefix of
//! the writes since (sled recovers a prefix of its log). What waits on a flush — an ack, an
//! answer — is lost with a crash.

/// State that a write changes.
pub trait Apply<Op> {
    /// Applies one write.
    fn apply(&mut self, op: &Op);
}

/// One node's disk.
#[derive(Debug, Clone)]
pub struct Disk<S, Op, C> {
    /// What survives a crash.
    durable: S,
    /// What the node reads: durable plus pending.
    current: S,
    /// Written, not yet durable, with what waits on each.
    pending: Vec<(Op, Option<C>)>,
}

impl<S: Apply<Op> + Clone, Op, C> Disk<S, Op, C> {
    /// A disk holding `state`, all durable.
    pub fn new(state: S) -> Self {
        Self { durable: state.clone(), current: state, pending: Vec::new() }
    }

    /// What the node reads.
    pub fn current(&self) -> &S {
        &self.current
    }

    /// What survives a crash now.
    pub fn durable(&self) -> &S {
        &self.durable
    }

    /// Applies `op`; `then` is handed back once it is durable.
    pub fn write(&mut self, op: Op, then: Option<C>) {
        self.current.apply(&op);
        self.pending.push((op, then));
    }

    /// Makes every pending write durable, in order; returns what waited on them. `durable_hook`
    /// sees each write as it becomes durable (the checker's view).
    pub fn flush(&mut self, mut durable_hook: impl FnMut(&Op)) -> Vec<C> {
        let mut out = Vec::new();
        for (op, then) in self.pending.drain(..) {
            self.durable.apply(&op);
            durable_hook(&op);
            out.extend(then);
        }
        out
    }

    /// A crash: the first `keep` pending writes reach the disk, the rest are lost, and nothing
    /// waiting on any of them is told.
    pub fn crash(&mut self, keep: usize, mut durable_hook: impl FnMut(&Op)) {
        for (op, _) in self.pending.drain(..).take(keep) {
            self.durable.apply(&op);
            durable_hook(&op);
        }
        self.current = self.durable.clone();
    }

    /// A failed flush: nothing becomes durable now, but every pending write stays
    /// applied and may still reach the disk at a crash; whoever waited is told it failed.
    pub fn fail_flush(&mut self) -> Vec<C> {
        self.pending.iter_mut().filter_map(|(_, then)| then.take()).collect()
    }

    /// Pending writes.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Default, PartialEq)]
    struct Log(Vec<u32>);

    impl Apply<u32> for Log {
        fn apply(&mut self, op: &u32) {
            self.0.push(*op);
        }
    }

    #[test]
    fn a_crash_keeps_the_durable_state_and_a_prefix_of_the_rest() {
        let mut d: Disk<Log, u32, &str> = Disk::new(Log::default());
        d.write(1, Some("one"));
        assert_eq!(d.flush(|_| {}), vec!["one"]);
        d.write(2, Some("two"));
        d.write(3, None);
        d.write(4, Some("four"));
        assert_eq!(d.current(), &Log(vec![1, 2, 3, 4]));
        assert_eq!(d.durable(), &Log(vec![1]));
        d.crash(2, |_| {});
        assert_eq!(d.current(), &Log(vec![1, 2, 3]));
        assert_eq!(d.flush(|_| {}), Vec::<&str>::new(), "nothing waits after a crash");
    }
}
