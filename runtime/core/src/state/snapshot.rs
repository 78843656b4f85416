//! Snapshot and restore of an operator's keyed state and timers, per key group: the unit a
//! checkpoint stores and a restore at another parallelism moves.
//!
//! Blob of one key group: the state backend's encoding (length-prefixed, u64), then the
//! key group's timers (bincode list of `(domain, timestamp, key, namespace)`).

use std::collections::BTreeMap;

use bytes::Bytes;

use super::codec::ByteReader;
use super::{KeyedStore, Namespace, TimeDomain, TimerService};
use crate::element::Timestamp;
use crate::error::{Error, Result};
use crate::key::{Key, KeyGroup};

type TimerEntry = (bool, Timestamp, Key, Namespace);

/// The keyed state and timers of one operator instance, per key group (empty ones left out).
pub fn snapshot_keyed(
    store: &mut dyn KeyedStore,
    timers: &TimerService,
    max_parallelism: u16,
) -> Result<Vec<(KeyGroup, Vec<u8>)>> {
    let mut by_kg: BTreeMap<KeyGroup, Vec<TimerEntry>> = BTreeMap::new();
    timers.for_each(&mut |domain, (ts, key, ns)| {
        by_kg
            .entry(key.key_group(max_parallelism))
            .or_default()
            .push((domain == TimeDomain::EventTime, *ts, key.clone(), *ns));
    })?;
    store.prepare_snapshot()?;
    let mut out = Vec::new();
    for kg in store.key_groups() {
        let t = by_kg.remove(&kg).unwrap_or_default();
        let n = store.key_group_len(kg);
        // Length placeholder, the backend's encoding in place, then the length patched in.
        // Generous: pages never written are never touched, and regrowing a large buffer
        // means copying it and faulting in fresh pages.
        let mut blob = Vec::with_capacity(16 + n * 256);
        blob.extend_from_slice(&[0u8; 8]);
        store.snapshot_key_group(kg, &mut blob)?;
        let len = (blob.len() - 8) as u64;
        if blob[8..] == 0u32.to_le_bytes() && t.is_empty() {
            continue;
        }
        blob[..8].copy_from_slice(&len.to_le_bytes());
        bincode::serialize_into(&mut blob, &t).map_err(|e| Error::state("timers", e))?;
        out.push((kg, blob));
    }
    if let Some(kg) = by_kg.keys().next() {
        return Err(Error::Checkpoint(format!(
            "a timer's key belongs to key group {kg}, outside this instance's {:?}",
            store.key_groups()
        )));
    }
    Ok(out)
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
