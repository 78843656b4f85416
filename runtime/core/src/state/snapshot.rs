//! Snapshot and restore of an operator's keyed state and timers, per key group: the unit a
//! checkpoint stores and a restore at another parallelism moves.
//!
//! Blob of one key group: the state backend's encoding (length-prefixed, u64), then the
//! key group's timers (bincode list of `(domain, timestamp, key, namespace)`).

use std::collections::BTreeMap;
use std::ops::Range;

use bytes::Bytes;

use super::codec::{ByteReader, put_bytes};
use super::timers::{Timer, TimerView};
use super::values_format::for_each_raw;
use super::{KeyGroupView, KeyedStore, Namespace, TimeDomain, TimerService};
use crate::checkpoint::{Barrier, DeferredKeyed, EmitKeyGroup, OperatorSnapshot};
use crate::element::Timestamp;
use crate::error::{Error, Result};
use crate::key::{Key, KeyGroup};

type TimerEntry = (bool, Timestamp, Key, Namespace);

/// The keyed state and timers of one operator instance, per key group (empty ones left out),
/// encoded on the calling thread.
pub fn snapshot_keyed(
    store: &mut dyn KeyedStore,
    timers: &TimerService,
    max_parallelism: u16,
) -> Result<Vec<(KeyGroup, Vec<u8>)>> {
    let groups = store.key_groups();
    let by_kg = timers_by_key_group(
        &mut |f| timers.for_each(f),
        &(0..max_parallelism),
        max_parallelism,
    )?;
    store.prepare_snapshot()?;
    let mut out = Vec::new();
    encode(
        groups,
        by_kg,
        &mut |kg| store.key_group_len(kg),
        &mut |kg, out| store.snapshot_key_group(kg, out),
        &mut |kg, blob| {
            out.push((kg, blob));
            Ok(())
        },
    )?;
    Ok(out)
}

/// An operator instance's keyed state and timers for the snapshot of `barrier`. When the
/// store offers a consistent view (the disk backend), the task thread only takes the view
/// (writing its cache out and pinning an LSM snapshot: milliseconds) and the encoding is
/// deferred to the thread that writes the state file; otherwise it is encoded now. With
/// incremental checkpoints the view may hold only what changed since a base checkpoint
/// (see [`merge_key_group_chain`] for the format).
pub fn snapshot_keyed_state(
    store: &mut dyn KeyedStore,
    timers: &TimerService,
    max_parallelism: u16,
    barrier: &Barrier,
) -> Result<OperatorSnapshot> {
    let Some((view, spool)) = store.snapshot_view(barrier)? else {
        return Ok(OperatorSnapshot {
            keyed: snapshot_keyed(store, timers, max_parallelism)?,
            ..Default::default()
        });
    };
    let timers = timers.view()?;
    let (base, shared) = (view.base(), view.shared());
    if base.is_some() {
        return Ok(OperatorSnapshot {
            deferred: Some(DeferredKeyed::new(spool, move |emit| {
                for kg in view.key_groups() {
                    if let Some(blob) = changes_of(view.as_ref(), &timers, kg)? {
                        emit(kg, blob)?;
                    }
                }
                Ok(())
            })),
            base,
            shared,
            ..Default::default()
        });
    }
    Ok(OperatorSnapshot {
        shared,
        deferred: Some(DeferredKeyed::new(spool, move |emit| {
            let mut for_each = |f: &mut VisitTimer<'_>| timers.for_each(f);
            let groups = view.key_groups();
            for batch in timer_batches(&mut for_each, groups, max_parallelism, TIMERS_AT_ONCE)? {
                let by_kg = timers_by_key_group(&mut for_each, &batch, max_parallelism)?;
                encode(
                    batch,
                    by_kg,
                    &mut |_| 0,
                    &mut |kg, out| view.write_key_group(kg, out),
                    emit,
                )?;
            }
            Ok(())
        })),
        ..Default::default()
    })
}

/// What changed in key group `kg` since the view's base, as a blob of changes (`None`:
/// nothing did).
fn changes_of(
    view: &dyn KeyGroupView,
    timers: &TimerView,
    kg: KeyGroup,
) -> Result<Option<Vec<u8>>> {
    let mut blob = Vec::with_capacity(256);
    blob.extend_from_slice(&[0u8; 8]);
    let (mut removed, mut marks) = (Vec::new(), Vec::new());
    view.write_changes(kg, &mut blob, &mut removed, &mut marks)?;
    let none = [0u8; 4];
    if blob[8..] == none && removed == none && marks.is_empty() {
        return Ok(None);
    }
    let len = (blob.len() - 8) as u64;
    blob[..8].copy_from_slice(&len.to_le_bytes());
    blob.extend_from_slice(&(removed.len() as u64).to_le_bytes());
    blob.extend_from_slice(&removed);
    let (mut present, mut absent): (Vec<TimerEntry>, Vec<TimerEntry>) = (Vec::new(), Vec::new());
    for (domain, (ts, key, ns)) in marks {
        let entry = (domain == TimeDomain::EventTime, ts, key, ns);
        let there = timers.contains(domain, &(entry.1, entry.2.clone(), entry.3))?;
        if there {
            present.push(entry);
        } else {
            absent.push(entry);
        }
    }
    bincode::serialize_into(&mut blob, &(present, absent))
        .map_err(|e| Error::state("timers", e))?;
    Ok(Some(blob))
}

/// One key group's state, whole, from a chain of snapshots of it: `whole`, the key group's
/// blob in a whole snapshot (`None`: it was empty then), and `changes`, the blobs of
/// changes of each later snapshot in order (key groups that did not change have none).
///
/// A blob of changes: the values set since the previous snapshot (`u64` length, then the
/// backend's encoding), the values removed (the same, with empty values), then the timers
/// present and the timers absent among those that were registered, deleted or fired since
/// (bincode pair of lists). Values are merged by state name and encoded key and namespace,
/// without decoding, so the result is the blob a whole snapshot would have written (up to
/// the order of states). `None` when nothing is left.
pub fn merge_key_group_chain(whole: Option<&[u8]>, changes: &[&[u8]]) -> Result<Option<Vec<u8>>> {
    let mut timers: std::collections::BTreeSet<TimerEntry> = Default::default();
    // Each state's values: the whole snapshot's, then each snapshot of changes' sets and
    // removals, all as runs of (encoded key and namespace, value).
    let mut whole_values: &[u8] = &[];
    if let Some(w) = whole {
        let mut r = ByteReader::new(w, "keyed state");
        let len = r.u64()? as usize;
        whole_values = r.take(len)?;
        let t: Vec<TimerEntry> = r.value()?;
        timers.extend(t);
    }
    let mut deltas = Vec::with_capacity(changes.len());
    for c in changes {
        let mut r = ByteReader::new(c, "keyed state changes");
        let len = r.u64()? as usize;
        let set = r.take(len)?;
        let len = r.u64()? as usize;
        let removed = r.take(len)?;
        let (present, absent): (Vec<TimerEntry>, Vec<TimerEntry>) = r.value()?;
        for t in absent {
            timers.remove(&t);
        }
        timers.extend(present);
        deltas.push((runs_of(set)?, runs_of(removed)?));
    }
    let mut values = runs_of(whole_values)?;
    let sorted = |runs: &Runs<'_>| runs.values().all(|r| r.windows(2).all(|w| w[0].0 < w[1].0));
    if sorted(&values) && deltas.iter().all(|(s, r)| sorted(s) && sorted(r)) {
        // Snapshots of the disk backend list a state's values in key order: merged in one
        // pass per snapshot of changes.
        for (set, removed) in &deltas {
            for name in set.keys() {
                values.entry(name).or_default();
            }
            for (name, base) in values.iter_mut() {
                let none = Vec::new();
                let ups = set.get(name).unwrap_or(&none);
                let rem = removed.get(name).unwrap_or(&none);
                if !ups.is_empty() || !rem.is_empty() {
                    *base = merge_runs(std::mem::take(base), ups, rem);
                }
            }
        }
    } else {
        // Any other order: through ordered maps.
        let mut maps: BTreeMap<&[u8], BTreeMap<&[u8], &[u8]>> = values
            .into_iter()
            .map(|(n, run)| (n, run.into_iter().collect()))
            .collect();
        for (set, removed) in &deltas {
            for (name, run) in set {
                maps.entry(name).or_default().extend(run.iter().copied());
            }
            for (name, run) in removed {
                if let Some(m) = maps.get_mut(name) {
                    for (k, _) in run {
                        m.remove(k);
                    }
                }
            }
        }
        values = maps
            .into_iter()
            .map(|(n, m)| (n, m.into_iter().collect()))
            .collect();
    }
    values.retain(|_, run| !run.is_empty());
    if values.is_empty() && timers.is_empty() {
        return Ok(None);
    }
    let size = whole.map_or(0, <[u8]>::len) + changes.iter().map(|c| c.len()).sum::<usize>();
    let mut out = Vec::with_capacity(size + 64);
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&(values.len() as u32).to_le_bytes());
    for (name, run) in &values {
        put_bytes(&mut out, name);
        out.extend_from_slice(&(run.len() as u64).to_le_bytes());
        for (k, v) in run {
            out.extend_from_slice(k);
            put_bytes(&mut out, v);
        }
    }
    let len = (out.len() - 8) as u64;
    out[..8].copy_from_slice(&len.to_le_bytes());
    let timers: Vec<TimerEntry> = timers.into_iter().collect();
    bincode::serialize_into(&mut out, &timers).map_err(|e| Error::state("timers", e))?;
    Ok(Some(out))
}

/// Values of one key group by state name, each a run of (encoded key and namespace, value)
/// in the order the blob lists them.
type Runs<'a> = BTreeMap<&'a [u8], Vec<(&'a [u8], &'a [u8])>>;

fn runs_of(values: &[u8]) -> Result<Runs<'_>> {
    let mut runs: Runs<'_> = BTreeMap::new();
    if values.is_empty() {
        return Ok(runs);
    }
    for_each_raw(values, &mut |name, k, v| {
        runs.entry(name).or_default().push((k, v));
    })?;
    Ok(runs)
}

/// `base` (sorted by key) with `set` (sorted) put in and `removed` (sorted) taken out.
fn merge_runs<'a>(
    base: Vec<(&'a [u8], &'a [u8])>,
    set: &[(&'a [u8], &'a [u8])],
    removed: &[(&'a [u8], &'a [u8])],
) -> Vec<(&'a [u8], &'a [u8])> {
    use std::cmp::Ordering;
    let mut out = Vec::with_capacity(base.len() + set.len());
    let (mut i, mut j, mut l) = (0, 0, 0);
    loop {
        let next = match (base.get(i), set.get(j)) {
            (None, None) => break,
            (Some(b), None) => {
                i += 1;
                *b
            }
            (None, Some(u)) => {
                j += 1;
                *u
            }
            (Some(b), Some(u)) => match b.0.cmp(u.0) {
                Ordering::Less => {
                    i += 1;
                    *b
                }
                Ordering::Equal => {
                    i += 1;
                    j += 1;
                    *u
                }
                Ordering::Greater => {
                    j += 1;
                    *u
                }
            },
        };
        while removed.get(l).is_some_and(|r| r.0 < next.0) {
            l += 1;
        }
        if removed.get(l).is_some_and(|r| r.0 == next.0) {
            continue;
        }
        out.push(next);
    }
    out
}

/// Timers a deferred snapshot groups in memory at once (about 64 bytes each).
#[cfg(not(test))]
const TIMERS_AT_ONCE: usize = 1 << 20;
/// Small in tests, so that snapshots of a few thousand timers take several passes.
#[cfg(test)]
const TIMERS_AT_ONCE: usize = 10_000;

/// Consecutive ranges of `groups` holding at most `at_once` timers each (or one key group):
/// a deferred snapshot reads the timers once per range, so that it never holds more than a
/// range's worth (millions of keys with a timer each would otherwise all be in memory).
fn timer_batches(
    for_each: &mut dyn FnMut(&mut VisitTimer<'_>) -> Result<()>,
    groups: Range<KeyGroup>,
    max_parallelism: u16,
    at_once: usize,
) -> Result<Vec<Range<KeyGroup>>> {
    let mut counts = vec![0usize; usize::from(max_parallelism)];
    for_each(&mut |_, (_, key, _)| {
        if let Some(c) = counts.get_mut(usize::from(key.key_group(max_parallelism))) {
            *c += 1;
        }
    })?;
    if let Some(kg) =
        (0..max_parallelism).find(|kg| !groups.contains(kg) && counts[usize::from(*kg)] > 0)
    {
        return Err(Error::Checkpoint(format!(
            "a timer's key belongs to key group {kg}, outside this instance's {groups:?}"
        )));
    }
    let mut batches = Vec::new();
    let (mut start, mut held) = (groups.start, 0usize);
    for kg in groups.clone() {
        let n = counts[usize::from(kg)];
        if kg > start && held + n > at_once {
            batches.push(start..kg);
            (start, held) = (kg, 0);
        }
        held += n;
    }
    if start < groups.end {
        batches.push(start..groups.end);
    }
    Ok(batches)
}

/// What is called with each timer and its domain.
type VisitTimer<'a> = dyn FnMut(TimeDomain, &Timer) + 'a;

/// The timers whose key is in key groups `only`, grouped by key group.
fn timers_by_key_group(
    for_each: &mut dyn FnMut(&mut VisitTimer<'_>) -> Result<()>,
    only: &Range<KeyGroup>,
    max_parallelism: u16,
) -> Result<BTreeMap<KeyGroup, Vec<TimerEntry>>> {
    let mut by_kg: BTreeMap<KeyGroup, Vec<TimerEntry>> = BTreeMap::new();
    for_each(&mut |domain, (ts, key, ns)| {
        let kg = key.key_group(max_parallelism);
        if only.contains(&kg) {
            by_kg.entry(kg).or_default().push((
                domain == TimeDomain::EventTime,
                *ts,
                key.clone(),
                *ns,
            ));
        }
    })?;
    Ok(by_kg)
}

/// One blob per key group of `groups` that has values or timers, handed to `emit` in
/// key-group order.
fn encode(
    groups: Range<KeyGroup>,
    mut by_kg: BTreeMap<KeyGroup, Vec<TimerEntry>>,
    len: &mut dyn FnMut(KeyGroup) -> usize,
    write: &mut dyn FnMut(KeyGroup, &mut Vec<u8>) -> Result<()>,
    emit: &mut EmitKeyGroup<'_>,
) -> Result<()> {
    for kg in groups.clone() {
        let t = by_kg.remove(&kg).unwrap_or_default();
        let n = len(kg);
        // Length placeholder, the backend's encoding in place, then the length patched in.
        // Generous: pages never written are never touched, and regrowing a large buffer
        // means copying it and faulting in fresh pages.
        let mut blob = Vec::with_capacity(16 + n * 256);
        blob.extend_from_slice(&[0u8; 8]);
        write(kg, &mut blob)?;
        let len = (blob.len() - 8) as u64;
        if blob[8..] == 0u32.to_le_bytes() && t.is_empty() {
            continue;
        }
        blob[..8].copy_from_slice(&len.to_le_bytes());
        bincode::serialize_into(&mut blob, &t).map_err(|e| Error::state("timers", e))?;
        emit(kg, blob)?;
    }
    if let Some(kg) = by_kg.keys().next() {
        return Err(Error::Checkpoint(format!(
            "a timer's key belongs to key group {kg}, outside this instance's {groups:?}"
        )));
    }
    Ok(())
}

/// Loads key groups written by [`snapshot_keyed`] into `store` and `timers`.
pub fn restore_keyed(
    store: &mut dyn KeyedStore,
    timers: &mut TimerService,
    blobs: &[(KeyGroup, Bytes)],
) -> Result<()> {
    let mut groups = Vec::with_capacity(blobs.len());
    let mut timer_lists = Vec::with_capacity(blobs.len());
    for (kg, blob) in blobs {
        let mut r = ByteReader::new(blob, "keyed state");
        let len = r.u64()? as usize;
        r.take(len)?;
        groups.push((*kg, blob.slice(8..8 + len)));
        timer_lists.push(r);
    }
    store.restore_key_groups(groups)?;
    for mut r in timer_lists {
        let t: Vec<TimerEntry> = r.value()?;
        for (event, ts, key, ns) in t {
            let domain = if event {
                TimeDomain::EventTime
            } else {
                TimeDomain::ProcessingTime
            };
            timers.register(domain, ts, key, ns);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;

    /// A values blob of one state `a`, entries in the order given: (key, value).
    fn values(entries: &[(i64, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&1u32.to_le_bytes());
        put_bytes(&mut out, b"a");
        out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        for (k, v) in entries {
            bincode::serialize_into(&mut out, &Key::Int(*k)).expect("key");
            out.extend_from_slice(&[0u8; 16]);
            put_bytes(&mut out, v.as_bytes());
        }
        out
    }

    fn framed(parts: &[&[u8]], timers: impl serde::Serialize) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            out.extend_from_slice(&(p.len() as u64).to_le_bytes());
            out.extend_from_slice(p);
        }
        bincode::serialize_into(&mut out, &timers).expect("timers");
        out
    }

    /// The merged blob's values of state `a` as (key, value), sorted by key.
    fn merged_values(blob: &[u8]) -> Vec<(i64, String)> {
        let mut r = ByteReader::new(blob, "test");
        let len = r.u64().expect("len") as usize;
        let mut got = Vec::new();
        super::for_each_raw(r.take(len).expect("values"), &mut |_, k, v| {
            let key: Key = bincode::deserialize(k).expect("key");
            let Key::Int(k) = key else {
                panic!("not an int key")
            };
            got.push((k, String::from_utf8_lossy(v).into_owned()));
        })
        .expect("walk");
        got.sort();
        got
    }

    #[test]
    fn a_chain_merges_to_the_last_values_in_key_order_or_not() {
        let key_bytes = |k: i64| bincode::serialize(&Key::Int(k)).expect("key");
        let none: (Vec<TimerEntry>, Vec<TimerEntry>) = (Vec::new(), Vec::new());
        for sorted in [true, false] {
            let order = |mut e: Vec<(i64, &'static str)>| {
                e.sort_by_key(|(k, _)| key_bytes(*k));
                if !sorted {
                    e.reverse();
                }
                e
            };
            let whole = framed(
                &[&values(&order(vec![
                    (1, "w1"),
                    (2, "w2"),
                    (3, "w3"),
                    (300, "w300"),
                ]))],
                Vec::<TimerEntry>::new(),
            );
            // Changes: 2 set, 3 removed, 9 added, 7 removed without being there.
            let first = framed(
                &[
                    &values(&order(vec![(2, "c2"), (9, "c9")])),
                    &values(&order(vec![(3, ""), (7, "")])),
                ],
                &none,
            );
            // Then: 9 removed, 3 back, 1 set.
            let second = framed(
                &[
                    &values(&order(vec![(3, "d3"), (1, "d1")])),
                    &values(&order(vec![(9, "")])),
                ],
                &none,
            );
            let merged = merge_key_group_chain(Some(&whole), &[&first, &second])
                .expect("merge")
                .expect("not empty");
            let want: Vec<(i64, String)> = [(1, "d1"), (2, "c2"), (3, "d3"), (300, "w300")]
                .into_iter()
                .map(|(k, v)| (k, v.to_string()))
                .collect();
            assert_eq!(merged_values(&merged), want, "sorted runs: {sorted}");
            // Without a whole snapshot (empty then), and with everything removed.
            let only = merge_key_group_chain(None, &[&first])
                .expect("merge")
                .expect("some");
            assert_eq!(merged_values(&only).len(), 2);
            let gone = framed(
                &[
                    &values(&[]),
                    &values(&order(vec![(1, ""), (2, ""), (3, ""), (300, "")])),
                ],
                &none,
            );
            assert!(
                merge_key_group_chain(Some(&whole), &[&gone])
                    .expect("merge")
                    .is_none()
            );
        }
    }

    #[test]
    fn timer_batches_cover_the_key_groups_holding_a_bounded_number_each() -> Result<()> {
        let timers: Vec<Timer> = (0..5_000)
            .map(|i| (i, Key::Int(i % 700), Namespace::VOID))
            .collect();
        let mut for_each = |f: &mut VisitTimer<'_>| {
            for t in &timers {
                f(TimeDomain::EventTime, t);
            }
            Ok(())
        };
        let batches = timer_batches(&mut for_each, 0..128, 128, 1_000)?;
        assert!(batches.len() >= 5, "{batches:?}");
        assert_eq!(batches.first().map(|b| b.start), Some(0));
        assert_eq!(batches.last().map(|b| b.end), Some(128));
        let mut seen = 0;
        for pair in batches.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "{batches:?}");
        }
        for b in &batches {
            let held: usize = timers_by_key_group(&mut for_each, b, 128)?
                .values()
                .map(Vec::len)
                .sum();
            assert!(held <= 1_000 || b.len() == 1, "{b:?} holds {held}");
            seen += held;
        }
        assert_eq!(seen, timers.len());
        let e = timer_batches(&mut for_each, 0..64, 128, 1_000).expect_err("outside");
        assert!(e.to_string().contains("outside this instance"), "{e}");
        Ok(())
    }
}
