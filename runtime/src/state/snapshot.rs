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
    store: &dyn KeyedStore,
    timers: &TimerService,
    max_parallelism: u16,
) -> Result<Vec<(KeyGroup, Vec<u8>)>> {
    let mut by_kg: BTreeMap<KeyGroup, Vec<TimerEntry>> = BTreeMap::new();
    for (domain, (ts, key, ns)) in timers.iter() {
        by_kg
            .entry(key.key_group(max_parallelism))
            .or_default()
            .push((domain == TimeDomain::EventTime, *ts, key.clone(), *ns));
    }
    let mut out = Vec::new();
    let mut states = Vec::new();
    for kg in store.key_groups() {
        states.clear();
        store.snapshot_key_group(kg, &mut states)?;
        let t = by_kg.remove(&kg).unwrap_or_default();
        if states == 0u32.to_le_bytes() && t.is_empty() {
            continue;
        }
        let mut blob = Vec::with_capacity(states.len() + 16);
        blob.extend_from_slice(&(states.len() as u64).to_le_bytes());
        blob.extend_from_slice(&states);
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
    for (kg, blob) in blobs {
        let mut r = ByteReader::new(blob, "keyed state");
        let len = r.u64()? as usize;
        store.restore_key_group(*kg, r.take(len)?)?;
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
