//! Snapshot and restore of an operator's keyed state and timers, per key group: the unit a
//! checkpoint stores and a restore at another parallelism moves.
//!
//! Blob of one key group: the state backend's encoding (length-prefixed, u64), then the
//! key group's timers (bincode list of `(domain, timestamp, key, namespace)`).

use std::collections::BTreeMap;
use std::ops::Range;

use bytes::Bytes;

use super::codec::ByteReader;
use super::timers::Timer;
use super::{KeyedStore, Namespace, TimeDomain, TimerService};
use crate::checkpoint::{DeferredKeyed, EmitKeyGroup, OperatorSnapshot};
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
    let by_kg = timers_by_key_group(&mut |f| timers.for_each(f), max_parallelism)?;
    store.prepare_snapshot()?;
    let groups = store.key_groups();
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

/// An operator instance's keyed state and timers for a checkpoint. When the store offers a
/// consistent view (the disk backend), the task thread only takes the view (writing its
/// cache out and pinning an LSM snapshot: milliseconds) and the encoding is deferred to the
/// thread that writes the state file; otherwise it is encoded now.
pub fn snapshot_keyed_state(
    store: &mut dyn KeyedStore,
    timers: &TimerService,
    max_parallelism: u16,
) -> Result<OperatorSnapshot> {
    let Some((view, spool)) = store.snapshot_view()? else {
        return Ok(OperatorSnapshot {
            keyed: snapshot_keyed(store, timers, max_parallelism)?,
            ..Default::default()
        });
    };
    let timers = timers.view()?;
    Ok(OperatorSnapshot {
        deferred: Some(DeferredKeyed::new(spool, move |emit| {
            let by_kg = timers_by_key_group(&mut |f| timers.for_each(f), max_parallelism)?;
            encode(
                view.key_groups(),
                by_kg,
                &mut |_| 0,
                &mut |kg, out| view.write_key_group(kg, out),
                emit,
            )
        })),
        ..Default::default()
    })
}

/// What is called with each timer and its domain.
type VisitTimer<'a> = dyn FnMut(TimeDomain, &Timer) + 'a;

/// Every timer, grouped by the key group of its key.
fn timers_by_key_group(
    for_each: &mut dyn FnMut(&mut VisitTimer<'_>) -> Result<()>,
    max_parallelism: u16,
) -> Result<BTreeMap<KeyGroup, Vec<TimerEntry>>> {
    let mut by_kg: BTreeMap<KeyGroup, Vec<TimerEntry>> = BTreeMap::new();
    for_each(&mut |domain, (ts, key, ns)| {
        by_kg
            .entry(key.key_group(max_parallelism))
            .or_default()
            .push((domain == TimeDomain::EventTime, *ts, key.clone(), *ns));
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
