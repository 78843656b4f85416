//! The in-memory state backend (Flink's HashMapStateBackend): one hash table per state and key
//! group, values kept as live Rust objects, so reads and updates never serialize.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::background::{BackgroundRestore, Load};
use super::codec::{put_bytes, put_value};
use super::values_format::{Visit, check_key_group, read_key_group};
use super::{Cell, CellCodec, KeyedStore, Namespace, StateBackend, StateId};
use crate::error::{Error, Result};
use crate::key::{Key, KeyGroup, mix64};

/// The default state backend: everything on the heap.
#[derive(Debug, Clone, Copy)]
pub struct MemoryStateBackend {
    background_restore_min_bytes: usize,
}

impl Default for MemoryStateBackend {
    fn default() -> Self {
        MemoryStateBackend {
            background_restore_min_bytes: LAZY_RESTORE_MIN_BYTES,
        }
    }
}

impl MemoryStateBackend {
    /// A backend whose stores decode restores of at least `bytes` in the background
    /// (default [`LAZY_RESTORE_MIN_BYTES`]; 0: every restore, `usize::MAX`: none).
    pub fn with_background_restore_min_bytes(bytes: usize) -> Self {
        MemoryStateBackend {
            background_restore_min_bytes: bytes,
        }
    }
}

impl StateBackend for MemoryStateBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn create_store(
        &self,
        key_groups: Range<KeyGroup>,
        _max_parallelism: u16,
    ) -> Result<Box<dyn KeyedStore>> {
        let mut store = MemoryStore::new(key_groups);
        store.lazy_min_bytes = self.background_restore_min_bytes;
        Ok(Box::new(store))
    }
}

/// A fast, non-cryptographic hasher for state tables (keys come from our own data, and the
/// per-record lookup is the hot path of every keyed operator).
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        mix64(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(buf));
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_i64(&mut self, i: i64) {
        self.write_u64(i as u64);
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

/// Hash map type used by state tables.
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

type Table = FastMap<(Key, Namespace), Cell>;

/// Keyed state of one operator instance, held in memory.
pub struct MemoryStore {
    key_groups: Range<KeyGroup>,
    names: Vec<String>,
    codecs: Vec<Arc<dyn CellCodec>>,
    /// `tables[state][kg - key_groups.start]`
    tables: Vec<Vec<Table>>,
    /// Key groups restored but not decoded yet (`None` once everything is in `tables`).
    lazy: Option<Box<BackgroundRestore<Result<Vec<Table>>>>>,
    /// A key group that failed to decode in the background: reported by
    /// [`KeyedStore::check`] so the task fails instead of running without that state.
    error: Option<Error>,
    lazy_min_bytes: usize,
}

/// Restores of at least this many bytes decode in the background while the task runs;
/// smaller ones are decoded before it starts.
pub const LAZY_RESTORE_MIN_BYTES: usize = 256 * 1024;

impl MemoryStore {
    /// An empty store for `key_groups`.
    pub fn new(key_groups: Range<KeyGroup>) -> Self {
        MemoryStore {
            key_groups,
            names: Vec::new(),
            codecs: Vec::new(),
            tables: Vec::new(),
            lazy: None,
            error: None,
            lazy_min_bytes: LAZY_RESTORE_MIN_BYTES,
        }
    }

    /// Installs the tables of a decoded key group.
    fn install(&mut self, slot: usize, decoded: Result<Vec<Table>>) {
        match decoded {
            Ok(tables) => {
                for (state, table) in tables.into_iter().enumerate() {
                    let target = &mut self.tables[state][slot];
                    if target.is_empty() {
                        *target = table;
                    } else {
                        target.extend(table);
                    }
                }
            }
            Err(e) => {
                if self.error.is_none() {
                    self.error = Some(e);
                }
            }
        }
    }

    /// Makes sure the key group in `slot` is decoded (the cheap check on every access).
    #[inline]
    fn ready(&mut self, slot: usize) {
        if self.lazy.is_some() {
            self.ready_slow(slot);
        }
    }

    #[cold]
    fn ready_slow(&mut self, slot: usize) {
        let Some(mut lazy) = self.lazy.take() else {
            return;
        };
        let done = lazy.ready(slot, &mut |s, r| match r {
            Some(r) => self.install(s, r),
            None => {
                self.error.get_or_insert_with(|| {
                    Error::Checkpoint("the state restore worker stopped early".into())
                });
            }
        });
        if !done {
            self.lazy = Some(lazy);
        }
    }

    /// Decodes every key group still pending.
    fn ready_all(&mut self) {
        while let Some(slot) = self.lazy.as_ref().and_then(|l| l.first_pending()) {
            self.ready_slow(slot);
        }
    }

    #[inline]
    fn slot(&self, kg: KeyGroup) -> usize {
        // Keys of other key groups never reach this instance (hash partitioning guarantees it);
        // clamp so a bug there shows as wrong results in tests rather than a panic.
        usize::from(kg.saturating_sub(self.key_groups.start))
            .min(usize::from(self.key_groups.end - self.key_groups.start).saturating_sub(1))
    }
}

impl KeyedStore for MemoryStore {
    fn register(&mut self, name: &str, codec: Arc<dyn CellCodec>) -> StateId {
        if let Some(i) = self.names.iter().position(|n| n == name) {
            return i;
        }
        self.names.push(name.to_string());
        self.codecs.push(codec);
        let n = usize::from(self.key_groups.end - self.key_groups.start).max(1);
        self.tables.push((0..n).map(|_| Table::default()).collect());
        self.names.len() - 1
    }

    #[inline]
    fn get(&mut self, state: StateId, kg: KeyGroup, key: &Key, ns: Namespace) -> Option<&Cell> {
        let slot = self.slot(kg);
        self.ready(slot);
        // `(Key, Namespace)` lookups need an owned tuple; integer keys clone for free.
        self.tables[state][slot].get(&(key.clone(), ns))
    }

    #[inline]
    fn get_mut(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &Key,
        ns: Namespace,
    ) -> Option<&mut Cell> {
        let slot = self.slot(kg);
        self.ready(slot);
        self.tables[state][slot].get_mut(&(key.clone(), ns))
    }

    #[inline]
    fn get_or_insert_with(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &Key,
        ns: Namespace,
        init: &mut dyn FnMut() -> Cell,
    ) -> &mut Cell {
        let slot = self.slot(kg);
        self.ready(slot);
        self.tables[state][slot]
            .entry((key.clone(), ns))
            .or_insert_with(init)
    }

    fn put(&mut self, state: StateId, kg: KeyGroup, key: Key, ns: Namespace, value: Cell) {
        let slot = self.slot(kg);
        self.ready(slot);
        self.tables[state][slot].insert((key, ns), value);
    }

    fn remove(&mut self, state: StateId, kg: KeyGroup, key: &Key, ns: Namespace) -> Option<Cell> {
        let slot = self.slot(kg);
        self.ready(slot);
        self.tables[state][slot].remove(&(key.clone(), ns))
    }

    fn len(&mut self) -> usize {
        self.ready_all();
        self.tables.iter().flatten().map(|t| t.len()).sum()
    }

    fn check(&mut self) -> Result<()> {
        match &self.error {
            Some(e) => Err(Error::Checkpoint(format!(
                "restored keyed state could not be decoded: {e}"
            ))),
            None => Ok(()),
        }
    }

    fn finish_restore(&mut self) -> Result<()> {
        self.ready_all();
        self.check()
    }

    fn key_groups(&self) -> Range<KeyGroup> {
        self.key_groups.clone()
    }

    fn snapshot_key_group(&self, kg: KeyGroup, out: &mut Vec<u8>) -> Result<()> {
        if !self.key_groups.contains(&kg) {
            return Ok(());
        }
        if let Some(e) = &self.error {
            return Err(Error::Checkpoint(format!(
                "restored keyed state could not be decoded: {e}"
            )));
        }
        let slot = usize::from(kg - self.key_groups.start);
        // A group nobody touched since the restore is still exactly its restored encoding.
        if let Some(bytes) = self.lazy.as_ref().and_then(|l| l.pending(slot)) {
            out.extend_from_slice(bytes);
            return Ok(());
        }
        let used: Vec<usize> = (0..self.names.len())
            .filter(|s| !self.tables[*s][slot].is_empty())
            .collect();
        out.extend_from_slice(&(used.len() as u32).to_le_bytes());
        for s in used {
            let table = &self.tables[s][slot];
            put_bytes(out, self.names[s].as_bytes());
            out.extend_from_slice(&(table.len() as u64).to_le_bytes());
            for ((key, ns), cell) in table {
                put_value(out, key, &self.names[s])?;
                out.extend_from_slice(&ns.start.to_le_bytes());
                out.extend_from_slice(&ns.end.to_le_bytes());
                // Length placeholder, value encoded in place, then the length patched in.
                let at = out.len();
                out.extend_from_slice(&[0u8; 4]);
                self.codecs[s]
                    .encode(cell, out)
                    .map_err(|e| Error::state(&self.names[s], e))?;
                let len = (out.len() - at - 4) as u32;
                out[at..at + 4].copy_from_slice(&len.to_le_bytes());
            }
        }
        Ok(())
    }

    fn key_group_len(&self, kg: KeyGroup) -> usize {
        if !self.key_groups.contains(&kg) {
            return 0;
        }
        let slot = usize::from(kg - self.key_groups.start);
        if let Some(bytes) = self.lazy.as_ref().and_then(|l| l.pending(slot)) {
            return bytes.len() / 256 + 1;
        }
        self.tables.iter().map(|t| t[slot].len()).sum()
    }

    fn restore_key_groups(&mut self, groups: Vec<(KeyGroup, Bytes)>) -> Result<()> {
        for (kg, _) in &groups {
            if !self.key_groups.contains(kg) {
                return Err(Error::Checkpoint(format!(
                    "key group {kg} restored into a store for key groups {:?}",
                    self.key_groups
                )));
            }
        }
        // Groups restored earlier and still pending are decoded first, so each group has
        // one blob at most.
        self.ready_all();
        // A type mismatch between the snapshot and the job's states shows here, before the
        // task starts, not later at the first record of some key group.
        for (i, (_, bytes)) in groups.iter().enumerate() {
            check_key_group(&self.names, &self.codecs, bytes, i == 0)?;
        }
        let total: usize = groups.iter().map(|(_, b)| b.len()).sum();
        if total >= self.lazy_min_bytes {
            self.restore_lazily(groups);
            return Ok(());
        }
        for (kg, bytes) in groups {
            let slot = usize::from(kg - self.key_groups.start);
            let r = decode_key_group(&self.names, &self.codecs, &bytes);
            self.install(slot, r);
        }
        self.check()
    }
}

impl MemoryStore {
    /// Leaves `groups` to a background worker and to the first accesses; the task can run
    /// at once. Large restores are dominated by building tables and values (and by the
    /// kernel clearing fresh pages for them), work that now overlaps with processing.
    fn restore_lazily(&mut self, groups: Vec<(KeyGroup, Bytes)>) {
        let (names, codecs) = (self.names.clone(), self.codecs.clone());
        let load: Arc<Load<Result<Vec<Table>>>> =
            Arc::new(move |_, bytes: &Bytes| decode_key_group(&names, &codecs, bytes));
        self.lazy = BackgroundRestore::start(self.key_groups.clone(), groups, load).map(Box::new);
    }
}

impl Drop for MemoryStore {
    fn drop(&mut self) {
        if let Some(lazy) = self.lazy.take() {
            lazy.stop();
        }
    }
}

/// Background restore workers running in this process, and when the last one finished
/// decoding (what the recovery benchmark reports next to the time to the first record).
pub mod restore_progress {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    static ACTIVE: AtomicUsize = AtomicUsize::new(0);
    static LAST_FINISHED: Mutex<Option<Instant>> = Mutex::new(None);

    pub(crate) fn started() {
        ACTIVE.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn finished() {
        if let Ok(mut t) = LAST_FINISHED.lock() {
            *t = Some(Instant::now());
        }
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }

    /// Number of restore workers still decoding.
    pub fn active() -> usize {
        ACTIVE.load(Ordering::SeqCst)
    }

    /// When a background restore last finished.
    pub fn last_finished() -> Option<Instant> {
        LAST_FINISHED.lock().ok().and_then(|t| *t)
    }
}

/// Decodes one key group's blob into one table per registered state.
fn decode_key_group(
    names: &[String],
    codecs: &[Arc<dyn CellCodec>],
    bytes: &[u8],
) -> Result<Vec<Table>> {
    let mut tables: Vec<Table> = names.iter().map(|_| Table::default()).collect();
    read_key_group(bytes, names, &mut |visit| {
        match visit {
            Visit::State { id, values } => tables[id].reserve(values as usize),
            Visit::Value { id, key, ns, value } => {
                let cell = codecs[id]
                    .decode(value)
                    .map_err(|e| Error::state(&names[id], e))?;
                tables[id].insert((key, ns), cell);
            }
        }
        Ok(())
    })?;
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::codec;
    use std::time::Instant;

    const MAX_P: u16 = 128;

    /// A store of all key groups with states "count" (i64) and "name" (String) for `keys`.
    fn filled(keys: i64) -> MemoryStore {
        let mut s = MemoryStore::new(0..MAX_P);
        let count = s.register("count", codec::<i64>());
        let name = s.register("name", codec::<String>());
        for k in 0..keys {
            let key = Key::Int(k);
            let kg = key.key_group(MAX_P);
            s.put(count, kg, key.clone(), Namespace::VOID, Box::new(k * 3));
            if k % 3 == 0 {
                s.put(name, kg, key, Namespace::VOID, Box::new(format!("k{k}")));
            }
        }
        s
    }

    fn snapshot(s: &MemoryStore) -> Vec<(KeyGroup, Bytes)> {
        (0..MAX_P)
            .filter_map(|kg| {
                let mut out = Vec::new();
                s.snapshot_key_group(kg, &mut out).ok()?;
                Some((kg, Bytes::from(out)))
            })
            .collect()
    }

    fn empty_store(lazy_min_bytes: usize) -> (MemoryStore, StateId, StateId) {
        let mut s = MemoryStore::new(0..MAX_P);
        s.lazy_min_bytes = lazy_min_bytes;
        let count = s.register("count", codec::<i64>());
        let name = s.register("name", codec::<String>());
        (s, count, name)
    }

    fn count_of(s: &mut MemoryStore, id: StateId, k: i64) -> Option<i64> {
        let key = Key::Int(k);
        let kg = key.key_group(MAX_P);
        s.get(id, kg, &key, Namespace::VOID)?
            .downcast_ref::<i64>()
            .copied()
    }

    #[test]
    fn background_restore_gives_every_value_in_any_access_order() -> Result<()> {
        let original = filled(20_000);
        let blobs = snapshot(&original);
        let (mut s, count, name) = empty_store(0);
        s.restore_key_groups(blobs)?;
        assert!(s.lazy.is_some(), "a restore above the threshold is lazy");
        // Reverse order, so the task and the worker meet on some groups.
        for k in (0..20_000).rev() {
            assert_eq!(count_of(&mut s, count, k), Some(k * 3), "key {k}");
        }
        let key = Key::Int(9);
        let got = s
            .get(name, key.key_group(MAX_P), &key, Namespace::VOID)
            .and_then(|c| c.downcast_ref::<String>())
            .cloned();
        assert_eq!(got.as_deref(), Some("k9"));
        assert_eq!(s.len(), 20_000 + 20_000 / 3 + 1);
        s.finish_restore()?;
        assert!(s.lazy.is_none());
        Ok(())
    }

    #[test]
    fn untouched_groups_snapshot_as_restored_and_touched_ones_as_changed() -> Result<()> {
        let original = filled(5_000);
        let blobs = snapshot(&original);
        let (mut s, count, _) = empty_store(0);
        s.restore_key_groups(blobs.clone())?;
        // Change one key; its group is decoded, the others may still be pending.
        let key = Key::Int(42);
        let kg = key.key_group(MAX_P);
        s.put(count, kg, key, Namespace::VOID, Box::new(-1i64));
        let again = snapshot(&s);
        let (mut eager, count2, _) = empty_store(usize::MAX);
        eager.restore_key_groups(again.clone())?;
        assert!(
            eager.lazy.is_none(),
            "below the threshold the restore is eager"
        );
        for k in 0..5_000 {
            let want = if k == 42 { -1 } else { k * 3 };
            assert_eq!(count_of(&mut eager, count2, k), Some(want), "key {k}");
        }
        // Every other group's bytes are what was restored (decoded or not, same content).
        for ((kg_a, a), (kg_b, b)) in blobs.iter().zip(&again) {
            assert_eq!(kg_a, kg_b);
            if *kg_a != kg {
                let (mut x, c1, _) = empty_store(usize::MAX);
                x.restore_key_groups(vec![(*kg_a, a.clone())])?;
                let (mut y, c2, _) = empty_store(usize::MAX);
                y.restore_key_groups(vec![(*kg_b, b.clone())])?;
                assert_eq!(x.len(), y.len());
                for k in 0..5_000 {
                    assert_eq!(count_of(&mut x, c1, k), count_of(&mut y, c2, k));
                }
            }
        }
        Ok(())
    }

    #[test]
    fn a_snapshot_of_another_value_type_is_refused_at_restore() {
        let original = filled(1_000);
        let blobs = snapshot(&original);
        let mut s = MemoryStore::new(0..MAX_P);
        s.lazy_min_bytes = 0;
        // "name" held Strings; registering it as i64 cannot decode them.
        s.register("count", codec::<i64>());
        s.register("name", codec::<(u64, u64, u64)>());
        let e = s.restore_key_groups(blobs).map(|_| ());
        assert!(
            matches!(&e, Err(Error::State { .. })),
            "a type mismatch must fail the restore: {e:?}"
        );
    }

    #[test]
    fn a_group_that_fails_in_the_background_fails_the_task_and_the_snapshot() -> Result<()> {
        let original = filled(3_000);
        let mut blobs = snapshot(&original);
        // Cut one group short after the eager check looked at its head.
        let (kg, bytes) = blobs[5].clone();
        blobs[5] = (kg, bytes.slice(..bytes.len() - 3));
        let (mut s, count, _) = empty_store(0);
        s.restore_key_groups(blobs)?;
        for k in 0..3_000 {
            let _ = count_of(&mut s, count, k);
        }
        let e = s.check();
        assert!(e.is_err(), "a group that did not decode must be reported");
        let mut out = Vec::new();
        assert!(
            s.snapshot_key_group(0, &mut out).is_err(),
            "a checkpoint must not be taken without that group"
        );
        assert!(s.check().is_err(), "the error stays");
        Ok(())
    }

    #[test]
    fn dropping_a_store_mid_restore_stops_its_worker() -> Result<()> {
        let blobs = snapshot(&filled(50_000));
        let (mut s, _, _) = empty_store(0);
        s.restore_key_groups(blobs)?;
        let queue = s
            .lazy
            .as_ref()
            .map(|l| l.queue.clone())
            .ok_or_else(|| Error::Checkpoint("the restore should be lazy".into()))?;
        drop(s);
        assert!(queue.lock().map(|q| q.is_empty()).unwrap_or(false));
        // The worker holds the other reference until it exits.
        let until = Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&queue) > 1 && Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(Arc::strong_count(&queue), 1, "the worker did not stop");
        Ok(())
    }
}
