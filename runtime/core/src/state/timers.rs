//! Timers per key and namespace, in event time (fired by the watermark) and processing time
//! (fired by the wall clock), deduplicated as in Flink: registering the same timer twice
//! fires it once.
//!
//! Each domain's timers are a queue ordered by timestamp. On the heap backend the whole queue
//! is in memory; on the disk backend (as with Flink's RocksDB timers) only its earliest part
//! is, and the rest is spilled to the backend's LSM tree ([`TimerSpill`]), so millions of
//! keys with a timer each fit in a bounded memory.

use std::collections::BTreeSet;

use super::Namespace;
use super::changes::ChangeLog;
use super::timer_spill::{SpillView, TimerSpill};
use crate::element::Timestamp;
use crate::error::Result;
use crate::key::Key;

/// Which clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeDomain {
    EventTime,
    ProcessingTime,
}

/// A timer: when it fires, and the key and namespace it fires for.
pub type Timer = (Timestamp, Key, Namespace);

/// Fewest timers held in memory per domain before the latest half of them spills (when the
/// queue can spill; the disk backend sets the limit from its budget): about 4 MiB.
pub(crate) const MIN_IN_MEMORY_TIMERS: usize = 1 << 16;

/// Estimated bytes of one timer held in memory (B-tree slot and key).
pub(crate) const TIMER_BYTES: usize = 64;

/// The timers of one domain: an in-memory head and, on the disk backend, a spilled tail.
/// Invariant: every spilled timer is later than every timer in memory, so the head's first
/// timer is the queue's first.
#[derive(Default)]
struct TimerQueue {
    head: BTreeSet<Timer>,
    tail: Option<TimerSpill>,
    /// Timers the head holds at most when there is a tail.
    limit: usize,
}

impl TimerQueue {
    fn insert(&mut self, timer: Timer) {
        match &mut self.tail {
            Some(tail) if tail.first().is_some_and(|first| timer >= *first) => tail.insert(&timer),
            Some(tail) => {
                self.head.insert(timer);
                if self.head.len() > self.limit {
                    // The latest half goes to disk; all of it is earlier than what is there.
                    let keep = self.limit / 2;
                    let Some(split) = self.head.iter().nth(keep).cloned() else {
                        return;
                    };
                    let spilled = self.head.split_off(&split);
                    tail.insert_all(spilled);
                }
            }
            None => {
                self.head.insert(timer);
            }
        }
    }

    fn remove(&mut self, timer: &Timer) {
        if !self.head.remove(timer) {
            if let Some(tail) = &mut self.tail {
                tail.remove(timer);
            }
        }
    }

    fn pop_due(&mut self, time: Timestamp) -> Option<Timer> {
        if self.head.is_empty() {
            if let Some(tail) = &mut self.tail {
                self.head = tail.take_first(self.limit / 2);
            }
        }
        match self.head.first() {
            Some((t, _, _)) if *t <= time => self.head.pop_first(),
            _ => None,
        }
    }

    fn len(&self) -> usize {
        self.head.len() + self.tail.as_ref().map_or(0, TimerSpill::len)
    }
}

/// The timers of one operator instance.
#[derive(Default)]
pub struct TimerService {
    event: TimerQueue,
    processing: TimerQueue,
    /// Incremental checkpoints: where changed timers are marked.
    changes: Option<ChangeLog>,
}

impl std::fmt::Debug for TimerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerService")
            .field("event", &self.event.len())
            .field("processing", &self.processing.len())
            .finish()
    }
}

impl TimerService {
    /// Timers whose queues keep their earliest `limit` (at least [`MIN_IN_MEMORY_TIMERS`])
    /// in memory and spill the rest to `event` and `processing` (made by the disk backend's
    /// stores).
    pub(crate) fn spilling(
        event: TimerSpill,
        processing: TimerSpill,
        limit: usize,
        changes: Option<ChangeLog>,
    ) -> Self {
        let limit = limit.max(MIN_IN_MEMORY_TIMERS);
        TimerService {
            changes,
            event: TimerQueue {
                head: BTreeSet::new(),
                tail: Some(event),
                limit,
            },
            processing: TimerQueue {
                head: BTreeSet::new(),
                tail: Some(processing),
                limit,
            },
        }
    }

    fn queue(&mut self, domain: TimeDomain) -> &mut TimerQueue {
        match domain {
            TimeDomain::EventTime => &mut self.event,
            TimeDomain::ProcessingTime => &mut self.processing,
        }
    }

    /// Registers a timer (a no-op when it exists).
    pub fn register(&mut self, domain: TimeDomain, ts: Timestamp, key: Key, ns: Namespace) {
        let timer = (ts, key, ns);
        if let Some(c) = &self.changes {
            c.mark_timer(domain, &timer);
        }
        self.queue(domain).insert(timer);
    }

    /// Deletes a timer (a no-op when it does not exist).
    pub fn delete(&mut self, domain: TimeDomain, ts: Timestamp, key: Key, ns: Namespace) {
        let timer = (ts, key, ns);
        if let Some(c) = &self.changes {
            c.mark_timer(domain, &timer);
        }
        self.queue(domain).remove(&timer);
    }

    /// Removes and returns the earliest timer due at `time`, if any.
    pub fn pop_due(
        &mut self,
        domain: TimeDomain,
        time: Timestamp,
    ) -> Option<(Timestamp, Key, Namespace)> {
        let timer = self.queue(domain).pop_due(time)?;
        if let Some(c) = &self.changes {
            c.mark_timer(domain, &timer);
        }
        Some(timer)
    }

    /// Number of pending timers in a domain.
    pub fn len(&self, domain: TimeDomain) -> usize {
        match domain {
            TimeDomain::EventTime => self.event.len(),
            TimeDomain::ProcessingTime => self.processing.len(),
        }
    }

    /// An error met by a spilled part (reading or writing disk), kept since registering and
    /// firing cannot fail; keyed operators call this with the store's check.
    pub fn check(&self) -> Result<()> {
        if let Some(c) = &self.changes {
            c.check()?;
        }
        for q in [&self.event, &self.processing] {
            if let Some(tail) = &q.tail {
                tail.check()?;
            }
        }
        Ok(())
    }

    /// The pending timers as of now, readable off the task thread: the timers in memory
    /// copied, the spilled ones through a snapshot of their LSM keyspace.
    pub fn view(&self) -> Result<TimerView> {
        let mut view = TimerView::default();
        for (domain, q) in [
            (TimeDomain::EventTime, &self.event),
            (TimeDomain::ProcessingTime, &self.processing),
        ] {
            view.heads.push((domain, q.head.clone()));
            if let Some(tail) = &q.tail {
                view.tails.push((domain, tail.view()?));
            }
        }
        Ok(view)
    }

    /// Calls `f` with every pending timer and its domain (for snapshots).
    pub fn for_each(&self, f: &mut dyn FnMut(TimeDomain, &Timer)) -> Result<()> {
        for (domain, q) in [
            (TimeDomain::EventTime, &self.event),
            (TimeDomain::ProcessingTime, &self.processing),
        ] {
            for t in &q.head {
                f(domain, t);
            }
            if let Some(tail) = &q.tail {
                tail.for_each(&mut |t| f(domain, t))?;
            }
        }
        Ok(())
    }
}

/// The pending timers of a [`TimerService`] as of [`TimerService::view`].
#[derive(Default)]
pub struct TimerView {
    heads: Vec<(TimeDomain, BTreeSet<Timer>)>,
    tails: Vec<(TimeDomain, SpillView)>,
}

impl TimerView {
    /// Calls `f` with every timer of the view and its domain.
    pub fn for_each(&self, f: &mut dyn FnMut(TimeDomain, &Timer)) -> Result<()> {
        for (domain, head) in &self.heads {
            for t in head {
                f(*domain, t);
            }
        }
        for (domain, tail) in &self.tails {
            tail.for_each(&mut |t| f(*domain, t))?;
        }
        Ok(())
    }

    /// Whether the view holds `timer` in `domain`.
    pub(crate) fn contains(&self, domain: TimeDomain, timer: &Timer) -> Result<bool> {
        for (d, head) in &self.heads {
            if *d == domain && head.contains(timer) {
                return Ok(true);
            }
        }
        for (d, tail) in &self.tails {
            if *d == domain && tail.contains(timer)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Registers `n` timers in a scrambled order, each twice, and deletes every tenth.
    fn fill(timers: &mut TimerService, n: i64) {
        let ns = Namespace::VOID;
        for i in 0..n {
            let ts = (i * 7919) % n;
            timers.register(TimeDomain::EventTime, ts, Key::Int(ts % 13), ns);
            // Registered twice: fires once.
            timers.register(TimeDomain::EventTime, ts, Key::Int(ts % 13), ns);
        }
        for ts in (0..n).step_by(10) {
            timers.delete(TimeDomain::EventTime, ts, Key::Int(ts % 13), ns);
        }
    }

    /// Pops everything, at three watermarks; what fired, in order.
    fn pop_all(timers: &mut TimerService, n: i64) -> Vec<Timer> {
        let mut fired = Vec::new();
        for wm in [n / 3, n / 2, n] {
            while let Some(t) = timers.pop_due(TimeDomain::EventTime, wm) {
                fired.push(t);
            }
        }
        fired
    }

    #[test]
    fn timers_fire_once_in_order() {
        let mut timers = TimerService::default();
        fill(&mut timers, 1000);
        let fired = pop_all(&mut timers, 1000);
        assert_eq!(fired.len(), 900);
        assert!(fired.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(timers.len(TimeDomain::EventTime), 0);
    }

    #[test]
    fn spilled_timers_fire_like_timers_in_memory() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| crate::error::Error::state("test", e))?;
        let backend = crate::state::DiskStateBackend::new(crate::state::DiskOptions {
            managed_memory: 16 << 20,
            local_dir: Some(dir.path().to_path_buf()),
            incremental: false,
            ..Default::default()
        });
        let store = crate::state::StateBackend::create_store(&backend, 0..128, 128)?;
        let mut spilling = store.timer_service()?;
        let mut in_memory = TimerService::default();
        let n = 3 * MIN_IN_MEMORY_TIMERS as i64;
        fill(&mut spilling, n);
        fill(&mut in_memory, n);
        let spilled = spilling.event.tail.as_ref().map_or(0, TimerSpill::len);
        assert!(spilled > n as usize / 2, "{spilled} spilled");
        assert!(spilling.event.head.len() <= MIN_IN_MEMORY_TIMERS);
        assert_eq!(
            spilling.len(TimeDomain::EventTime),
            in_memory.len(TimeDomain::EventTime)
        );
        // A snapshot sees them all, in order.
        let mut seen = Vec::new();
        spilling.for_each(&mut |_, t| seen.push(t.clone()))?;
        let mut expected = Vec::new();
        in_memory.for_each(&mut |_, t| expected.push(t.clone()))?;
        assert_eq!(seen, expected);
        assert_eq!(pop_all(&mut spilling, n), pop_all(&mut in_memory, n));
        assert_eq!(spilling.len(TimeDomain::EventTime), 0);
        spilling.check()
    }
}
