//! The spilled part of a timer queue on the disk backend: timers as keys of their own LSM
//! keyspace, encoded so that byte order is the queue's order (timestamp, then key, then
//! namespace, exactly as `Ord` orders them in memory). Registering and deleting are blind
//! writes (a timer that is there is written again; one that is not is deleted anyway), so
//! the per-record path never reads disk; the first timer is kept in memory. Reading and
//! writing errors are kept for [`TimerSpill::check`].

use std::collections::BTreeSet;

use super::Namespace;
use super::timers::Timer;
use crate::error::{Error, Result};
use crate::key::Key;

/// Timers on disk, in order.
pub(crate) struct TimerSpill {
    db: fjall::Database,
    /// `None` only while dropping.
    ks: Option<fjall::Keyspace>,
    first: Option<Timer>,
    /// Every key below this one is deleted: reads seek here instead of stepping over the
    /// tombstones of every timer already taken (which made firing millions of spilled timers
    /// quadratic).
    low: Vec<u8>,
    error: Option<Error>,
}

impl TimerSpill {
    pub(crate) fn new(db: fjall::Database, ks: fjall::Keyspace) -> Self {
        TimerSpill {
            db,
            ks: Some(ks),
            first: None,
            low: Vec::new(),
            error: None,
        }
    }

    fn ks(&self) -> &fjall::Keyspace {
        self.ks
            .as_ref()
            .expect("keyspace is open until the queue is dropped")
    }

    fn fail(&mut self, what: &str, e: impl std::fmt::Display) {
        if self.error.is_none() {
            let e = Error::state("timers", format!("{what} spilled timers: {e}"));
            tracing::error!(error = %e, "disk state backend");
            self.error = Some(e);
        }
    }

    /// The earliest spilled timer.
    pub(crate) fn first(&self) -> Option<&Timer> {
        self.first.as_ref()
    }

    /// Number of spilled timers (reads them all: for tests and diagnostics).
    pub(crate) fn len(&self) -> usize {
        self.ks().range(self.low.as_slice()..).count()
    }

    pub(crate) fn check(&self) -> Result<()> {
        match &self.error {
            Some(e) => Err(Error::Checkpoint(format!("disk state backend: {e}"))),
            None => Ok(()),
        }
    }

    /// Adds a timer (a no-op when it is there).
    pub(crate) fn insert(&mut self, timer: &Timer) {
        let k = encode(timer);
        if k < self.low {
            self.low.clone_from(&k);
        }
        if let Err(e) = self.ks().insert(k, []) {
            return self.fail("writing", e);
        }
        if self.first.as_ref().is_none_or(|f| timer < f) {
            self.first = Some(timer.clone());
        }
    }

    /// Adds timers that are not there yet (all earlier than the spilled ones).
    pub(crate) fn insert_all(&mut self, timers: BTreeSet<Timer>) {
        let Some(ks) = self.ks.clone() else {
            return;
        };
        let mut batch = self.db.batch();
        for t in &timers {
            let k = encode(t);
            if k < self.low {
                self.low.clone_from(&k);
            }
            batch.insert(&ks, k, []);
        }
        if let Err(e) = batch.commit() {
            return self.fail("writing", e);
        }
        if let Some(t) = timers.into_iter().next() {
            if self.first.as_ref().is_none_or(|f| t < *f) {
                self.first = Some(t);
            }
        }
    }

    /// Removes a timer (a no-op when it is not there).
    pub(crate) fn remove(&mut self, timer: &Timer) {
        if self.first.is_none() {
            return;
        }
        if let Err(e) = self.ks().remove(encode(timer)) {
            return self.fail("removing", e);
        }
        if self.first.as_ref() == Some(timer) {
            self.first = self.read_first();
        }
    }

    fn read_first(&mut self) -> Option<Timer> {
        let item = self.ks().range(self.low.as_slice()..).next()?;
        match item
            .key()
            .map_err(|e| e.to_string())
            .and_then(|k| decode(&k))
        {
            Ok(t) => Some(t),
            Err(e) => {
                self.fail("reading", e);
                None
            }
        }
    }

    /// Removes and returns the `n` earliest timers.
    pub(crate) fn take_first(&mut self, n: usize) -> BTreeSet<Timer> {
        let mut taken = BTreeSet::new();
        if self.first.is_none() {
            return taken;
        }
        let Some(ks) = self.ks.clone() else {
            return taken;
        };
        let mut batch = self.db.batch();
        let mut last = None;
        for item in ks.range(self.low.as_slice()..).take(n) {
            match item.key().map_err(|e| e.to_string()).and_then(|k| {
                let t = decode(&k)?;
                batch.remove(&ks, k.clone());
                last = Some(k);
                Ok(t)
            }) {
                Ok(t) => {
                    taken.insert(t);
                }
                Err(e) => {
                    self.fail("reading", e);
                    break;
                }
            }
        }
        if let Err(e) = batch.commit() {
            self.fail("removing", e);
        }
        if let Some(k) = last {
            // The least key above the last one taken.
            self.low = k.to_vec();
            self.low.push(0);
        }
        self.first = self.read_first();
        taken
    }

    /// Calls `f` with every spilled timer, in order.
    pub(crate) fn for_each(&self, f: &mut dyn FnMut(&Timer)) -> Result<()> {
        self.check()?;
        visit(self.ks().range(self.low.as_slice()..), f)
    }

    /// The spilled timers as of now, readable while this queue goes on changing.
    pub(crate) fn view(&self) -> Result<SpillView> {
        self.check()?;
        Ok(SpillView {
            snapshot: self.db.snapshot(),
            ks: self.ks().clone(),
            low: self.low.clone(),
        })
    }
}

/// Spilled timers as of [`TimerSpill::view`].
pub(crate) struct SpillView {
    snapshot: fjall::Snapshot,
    ks: fjall::Keyspace,
    low: Vec<u8>,
}

impl SpillView {
    /// Calls `f` with every timer of the view, in order.
    pub(crate) fn for_each(&self, f: &mut dyn FnMut(&Timer)) -> Result<()> {
        use fjall::Readable;
        visit(self.snapshot.range(&self.ks, self.low.as_slice()..), f)
    }

    /// Whether the view holds `timer`.
    pub(crate) fn contains(&self, timer: &Timer) -> Result<bool> {
        use fjall::Readable;
        let key = encode(timer);
        if key < self.low {
            return Ok(false);
        }
        self.snapshot
            .contains_key(&self.ks, key)
            .map_err(|e| Error::state("timers", format!("reading spilled timers: {e}")))
    }
}

fn visit(items: fjall::Iter, f: &mut dyn FnMut(&Timer)) -> Result<()> {
    for item in items {
        let k = item
            .key()
            .map_err(|e| Error::state("timers", format!("reading spilled timers: {e}")))?;
        let t = decode(&k).map_err(|e| Error::state("timers", e))?;
        f(&t);
    }
    Ok(())
}

impl Drop for TimerSpill {
    fn drop(&mut self) {
        if let Some(ks) = self.ks.take() {
            if let Err(e) = self.db.delete_keyspace(ks) {
                tracing::warn!(error = %e, "could not delete a timer keyspace");
            }
        }
    }
}

/// An `i64` as bytes whose order is the integers' order.
fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&((v as u64) ^ (1 << 63)).to_be_bytes());
}

fn get_i64(b: &[u8]) -> std::result::Result<(i64, &[u8]), String> {
    if b.len() < 8 {
        return Err("truncated spilled timer".into());
    }
    let (head, rest) = b.split_at(8);
    let mut a = [0u8; 8];
    a.copy_from_slice(head);
    Ok(((u64::from_be_bytes(a) ^ (1 << 63)) as i64, rest))
}

// Key tags, in the order of `Key`'s variants; 0 ends a composite key.
const END: u8 = 0;
const NULL: u8 = 1;
const INT: u8 = 2;
const STR: u8 = 3;
const COMPOSITE: u8 = 4;

/// A key as bytes whose order is `Key`'s order. Strings escape 0x00 as 0x00 0xFF and end with
/// 0x00 0x00, so a prefix sorts first.
fn put_key(out: &mut Vec<u8>, key: &Key) {
    match key {
        Key::Null => out.push(NULL),
        Key::Int(v) => {
            out.push(INT);
            put_i64(out, *v);
        }
        Key::Str(s) => {
            out.push(STR);
            for &b in s.as_bytes() {
                out.push(b);
                if b == 0 {
                    out.push(0xff);
                }
            }
            out.extend_from_slice(&[0, 0]);
        }
        Key::Composite(parts) => {
            out.push(COMPOSITE);
            for p in parts.iter() {
                put_key(out, p);
            }
            out.push(END);
        }
    }
}

fn get_key(b: &[u8]) -> std::result::Result<(Key, &[u8]), String> {
    let bad = || "corrupt spilled timer key".to_string();
    let (&tag, rest) = b.split_first().ok_or_else(bad)?;
    match tag {
        NULL => Ok((Key::Null, rest)),
        INT => {
            let (v, rest) = get_i64(rest)?;
            Ok((Key::Int(v), rest))
        }
        STR => {
            let mut s = Vec::new();
            let mut i = 0;
            loop {
                match (rest.get(i), rest.get(i + 1)) {
                    (Some(0), Some(0)) => break,
                    (Some(0), Some(0xff)) => {
                        s.push(0);
                        i += 2;
                    }
                    (Some(&c), _) if c != 0 => {
                        s.push(c);
                        i += 1;
                    }
                    _ => return Err(bad()),
                }
            }
            let s = String::from_utf8(s).map_err(|_| bad())?;
            Ok((Key::Str(s.into()), &rest[i + 2..]))
        }
        COMPOSITE => {
            let mut parts = Vec::new();
            let mut rest = rest;
            loop {
                match rest.first() {
                    Some(&END) => break,
                    Some(_) => {
                        let (p, r) = get_key(rest)?;
                        parts.push(p);
                        rest = r;
                    }
                    None => return Err(bad()),
                }
            }
            Ok((Key::Composite(parts.into()), &rest[1..]))
        }
        _ => Err(bad()),
    }
}

pub(crate) fn encode((ts, key, ns): &Timer) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    put_i64(&mut out, *ts);
    put_key(&mut out, key);
    put_i64(&mut out, ns.start);
    put_i64(&mut out, ns.end);
    out
}

pub(crate) fn decode(b: &[u8]) -> std::result::Result<Timer, String> {
    let (ts, rest) = get_i64(b)?;
    let (key, rest) = get_key(rest)?;
    let (start, rest) = get_i64(rest)?;
    let (end, rest) = get_i64(rest)?;
    if !rest.is_empty() {
        return Err("spilled timer has trailing bytes".into());
    }
    Ok((ts, key, Namespace { start, end }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = Key> {
        let leaf = prop_oneof![
            Just(Key::Null),
            any::<i64>().prop_map(Key::Int),
            "[a\\x00b]{0,4}".prop_map(|s| Key::Str(s.into())),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop::collection::vec(inner, 0..3).prop_map(|v| Key::Composite(v.into()))
        })
    }

    fn timer() -> impl Strategy<Value = Timer> {
        (any::<i64>(), key(), any::<i64>(), any::<i64>())
            .prop_map(|(ts, k, start, end)| (ts, k, Namespace { start, end }))
    }

    proptest! {
        #[test]
        fn byte_order_is_timer_order(a in timer(), b in timer()) {
            let (ea, eb) = (encode(&a), encode(&b));
            prop_assert_eq!(ea.cmp(&eb), a.cmp(&b));
            prop_assert_eq!(decode(&ea), Ok(a));
        }
    }
}
