//! Timers per key and namespace, in event time (fired by the watermark) and processing time
//! (fired by the wall clock), deduplicated as in Flink: registering the same timer twice
//! fires it once.

use std::collections::BTreeSet;

use super::Namespace;
use crate::element::Timestamp;
use crate::key::Key;

/// Which clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeDomain {
    EventTime,
    ProcessingTime,
}

type Timer = (Timestamp, Key, Namespace);

/// The timers of one operator instance.
#[derive(Debug, Default)]
pub struct TimerService {
    event: BTreeSet<Timer>,
    processing: BTreeSet<Timer>,
}

impl TimerService {
    fn set(&mut self, domain: TimeDomain) -> &mut BTreeSet<Timer> {
        match domain {
            TimeDomain::EventTime => &mut self.event,
            TimeDomain::ProcessingTime => &mut self.processing,
        }
    }

    /// Registers a timer (a no-op when it exists).
    pub fn register(&mut self, domain: TimeDomain, ts: Timestamp, key: Key, ns: Namespace) {
        self.set(domain).insert((ts, key, ns));
    }

    /// Deletes a timer (a no-op when it does not exist).
    pub fn delete(&mut self, domain: TimeDomain, ts: Timestamp, key: Key, ns: Namespace) {
        self.set(domain).remove(&(ts, key, ns));
    }

    /// Removes and returns the earliest timer due at `time`, if any.
    pub fn pop_due(
        &mut self,
        domain: TimeDomain,
        time: Timestamp,
    ) -> Option<(Timestamp, Key, Namespace)> {
        let set = self.set(domain);
        match set.first() {
            Some((t, _, _)) if *t <= time => set.pop_first(),
            _ => None,
        }
    }

    /// Number of pending timers in a domain.
    pub fn len(&self, domain: TimeDomain) -> usize {
        match domain {
            TimeDomain::EventTime => self.event.len(),
            TimeDomain::ProcessingTime => self.processing.len(),
        }
    }
}

impl TimerService {
    /// Every pending timer, as `(event time?, timestamp, key, namespace)`.
    pub fn iter(&self) -> impl Iterator<Item = (TimeDomain, &Timer)> {
        self.event.iter().map(|t| (TimeDomain::EventTime, t)).chain(
            self.processing
                .iter()
                .map(|t| (TimeDomain::ProcessingTime, t)),
        )
    }
}
