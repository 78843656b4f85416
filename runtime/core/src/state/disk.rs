//! The on-disk state backend (Flink's RocksDB/ForSt backend): state lives in an embedded LSM
//! tree ([`fjall`], chosen by measurement, see `docs/architecture.md`), with a bounded cache of
//! live values in front of it, so resident memory follows the budget
//! (`taskmanager.memory.managed.size`), not the state's size.
//!
//! The cache is write-back: a record's read-modify-write touches a live Rust value, as in the
//! heap backend, and a value is encoded only when the cache evicts it (second chance: a value
//! touched since the last sweep stays) or a checkpoint flushes it. The budget is shared by
//! every store of the backend (one per stateful operator instance): three eighths for live
//! values, an eighth for the LSM's block cache; each store's write buffer (memtable) is a
//! thirty-second (up to four of them wait for their flush) and its earliest timers an eighth.
//!
//! On disk, one keyspace per store; a value's key is `kg (u16 BE) · state (u16 BE) · key
//! (bincode) · namespace (2 × i64 LE)`, so one key group is one key range, and its value is
//! the state codec's encoding. Snapshots use the heap backend's per-key-group format, so
//! checkpoints and savepoints move between the two backends and across parallelisms.
//!
//! The store API is infallible (the hot path of every keyed operator): an I/O or decoding
//! error is kept and reported by [`KeyedStore::check`], which keyed operators call before they
//! emit anything, and by the next snapshot, so a task fails rather than goes on without state.

use std::collections::hash_map::Entry as MapEntry;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::background::{BackgroundRestore, Load};
use super::changes::{ChangeLog, Increment, TIMER_MARK, VALUE_MARK, decode_timer_mark, marks_of};
use super::codec::put_bytes;
use super::timer_spill::TimerSpill;
use super::timers::Timer;
use super::values_format::{Visit, check_key_group, read_key_group};
use super::{
    Cell, CellCodec, FastMap, KeyGroupView, KeyedStore, Namespace, StateBackend, StateId,
    TimeDomain, TimerService,
};
use crate::checkpoint::{Barrier, CheckpointId};
use crate::error::{Error, Result};
use crate::key::{Key, KeyGroup};

/// Default memory budget of the disk backend (`taskmanager.memory.managed.size`).
pub const DEFAULT_MANAGED_MEMORY: u64 = 256 * 1024 * 1024;

/// Bytes a cached value costs besides its own heap size: its hash table slot, the entry, the
/// box and the allocator's headers (estimated).
const ENTRY_OVERHEAD: usize = 160;

/// Live values take this many times their encoded size on the heap (enums padded to their
/// largest variant, vectors' spare capacity, allocator rounding): measured on the SQL
/// aggregates' and window operator's values.
const HEAP_PER_ENCODED_BYTE: usize = 4;

/// How the disk backend is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskOptions {
    /// The memory budget shared by all stores (`taskmanager.memory.managed.size`).
    pub managed_memory: u64,
    /// Where the LSM files go (`io.tmp.dirs`, the first one; the system's temporary
    /// directory when empty). Each backend makes its own directory there and removes it when
    /// dropped; directories of processes that no longer run are removed at start.
    pub local_dir: Option<PathBuf>,
    /// Keep track of what changes between checkpoints, so that a checkpoint can hold only
    /// that (`execution.checkpointing.incremental`; see `changes`).
    pub incremental: bool,
    /// Restores of at least this many bytes are written into the LSM in the background
    /// while the task runs (see [`LAZY_RESTORE_MIN_BYTES`], the default).
    pub lazy_restore_min_bytes: usize,
    /// Changed values a store keeps cached before it writes them all to disk (estimated
    /// bytes; `None`: a quarter of the cache, 3/32 of the budget). What is still
    /// changed at a checkpoint's barrier is written out in its synchronous part, so this
    /// bounds the pause; below the size of the values a job keeps changing, it costs
    /// throughput instead (every change is written again after each write-out).
    pub max_dirty_bytes: Option<usize>,
}

impl Default for DiskOptions {
    fn default() -> Self {
        DiskOptions {
            managed_memory: DEFAULT_MANAGED_MEMORY,
            local_dir: None,
            incremental: false,
            lazy_restore_min_bytes: LAZY_RESTORE_MIN_BYTES,
            max_dirty_bytes: None,
        }
    }
}

/// Keyed state in an embedded LSM tree behind a bounded cache.
pub struct DiskStateBackend {
    options: DiskOptions,
    /// Opened by the first store, shared by the rest.
    shared: Mutex<Option<Arc<Shared>>>,
}

impl std::fmt::Debug for DiskStateBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStateBackend")
            .field("options", &self.options)
            .finish()
    }
}

impl DiskStateBackend {
    pub fn new(options: DiskOptions) -> Self {
        DiskStateBackend {
            options,
            shared: Mutex::new(None),
        }
    }

    pub fn options(&self) -> &DiskOptions {
        &self.options
    }

    /// Values evicted from the cache so far (all stores), for tests and metrics.
    pub fn evicted_values(&self) -> u64 {
        match self.shared.lock() {
            Ok(s) => s.as_ref().map_or(0, |s| s.evicted.load(Ordering::Relaxed)),
            Err(_) => 0,
        }
    }

    /// Bytes of live values cached by all stores now (estimated), for tests and metrics.
    pub fn cached_bytes(&self) -> usize {
        match self.shared.lock() {
            Ok(s) => s.as_ref().map_or(0, |s| s.cached.load(Ordering::Relaxed)),
            Err(_) => 0,
        }
    }

    fn shared(&self) -> Result<Arc<Shared>> {
        let mut guard = self
            .shared
            .lock()
            .map_err(|_| Error::state("disk state backend", "lock poisoned"))?;
        if let Some(s) = guard.as_ref() {
            return Ok(s.clone());
        }
        let s = Arc::new(Shared::open(&self.options)?);
        *guard = Some(s.clone());
        Ok(s)
    }
}

impl StateBackend for DiskStateBackend {
    fn name(&self) -> &'static str {
        "disk"
    }

    fn spills(&self) -> bool {
        true
    }

    fn create_store(
        &self,
        key_groups: Range<KeyGroup>,
        max_parallelism: u16,
    ) -> Result<Box<dyn KeyedStore>> {
        Ok(Box::new(self.open_store(key_groups, max_parallelism)?))
    }
}

impl DiskStateBackend {
    fn open_store(&self, key_groups: Range<KeyGroup>, max_parallelism: u16) -> Result<DiskStore> {
        let shared = self.shared()?;
        let id = shared.next_keyspace.fetch_add(1, Ordering::Relaxed);
        let memtable = (self.options.managed_memory / 32).max(1 << 20);
        let ks = shared
            .db()
            .keyspace(&format!("store-{id}"), || keyspace_options(memtable))
            .map_err(|e| Error::state("disk state backend", e))?;
        let changes = if self.options.incremental {
            Some(ChangeLog::new(
                shared.db().clone(),
                id,
                max_parallelism,
                memtable,
            )?)
        } else {
            None
        };
        Ok(DiskStore {
            id,
            ks: Some(ks),
            changes,
            lazy: None,
            lazy_min_bytes: self.options.lazy_restore_min_bytes,
            dirty_bytes: 0,
            max_dirty_bytes: self
                .options
                .max_dirty_bytes
                .unwrap_or((shared.cache_budget / 4).max(MIN_DIRTY_BYTES)),
            key_groups,
            names: Vec::new(),
            codecs: Vec::new(),
            cache: Vec::new(),
            avg_size: Vec::new(),
            own_bytes: 0,
            error: None,
            shared,
        })
    }
}

/// How the backend's keyspaces are set up. Index and filter blocks stay in memory at every
/// level (fjall loads deeper levels' indexes per read by default: with millions of keys, a
/// point read then read and checksummed a whole index block from disk, 90 % of the time).
/// Their size is small next to the values: about 10 bits of filter and a few bytes of index
/// per key.
fn keyspace_options(memtable: u64) -> fjall::KeyspaceCreateOptions {
    fjall::KeyspaceCreateOptions::default()
        .manual_journal_persist(true)
        .max_memtable_size(memtable)
        .index_block_pinning_policy(fjall::config::PinningPolicy::all(true))
        .filter_block_pinning_policy(fjall::config::PinningPolicy::all(true))
}

/// What all stores of one backend share: the LSM database and the cache's account.
struct Shared {
    /// `None` only while closing.
    db: Option<fjall::Database>,
    /// Budget for live values, over all stores.
    cache_budget: usize,
    /// Live values cached by all stores (estimated bytes).
    cached: AtomicUsize,
    /// Values evicted so far.
    evicted: AtomicU64,
    next_keyspace: AtomicU64,
    /// The whole budget (`taskmanager.memory.managed.size`).
    memory: u64,
    dir: PathBuf,
}

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

const DIR_PREFIX: &str = "flink-rs-state-";

impl Shared {
    fn open(options: &DiskOptions) -> Result<Shared> {
        let base = options.local_dir.clone().unwrap_or_else(std::env::temp_dir);
        let pid = std::process::id();
        std::fs::create_dir_all(&base).map_err(|e| {
            Error::config(
                "io.tmp.dirs",
                format!("cannot create {}: {e}", base.display()),
            )
        })?;
        remove_abandoned(&base, pid);
        let dir = base.join(format!(
            "{DIR_PREFIX}{pid}-{}",
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let budget = options.managed_memory;
        let db = fjall::Database::builder(&dir)
            .manual_journal_persist(true)
            .cache_size(budget / 8)
            .open()
            .map_err(|e| {
                Error::state(
                    "disk state backend",
                    format!("cannot open {}: {e}", dir.display()),
                )
            })?;
        Ok(Shared {
            db: Some(db),
            cache_budget: (budget * 3 / 8) as usize,
            cached: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
            next_keyspace: AtomicU64::new(0),
            memory: budget,
            dir,
        })
    }
}

impl Shared {
    fn db(&self) -> &fjall::Database {
        self.db
            .as_ref()
            .expect("the database is open until the backend is dropped")
    }
}

impl Shared {
    /// Where snapshots' state files are written before upload (next to the database, and
    /// named like it, so that a process that dies leaves nothing `remove_abandoned` misses).
    fn spool_dir(&self) -> PathBuf {
        let mut name = self.dir.as_os_str().to_owned();
        name.push("-spool");
        PathBuf::from(name)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.spool_dir());
        // fjall removes a keyspace's files when its last handle goes, and this directory
        // only once the database is closed (every handle dropped): removed here first, the
        // closing keyspaces would warn that their files are gone.
        let db = self.db.take();
        drop(db);
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => tracing::debug!(dir = %self.dir.display(), "disk state backend closed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove the state directory")
            }
        }
    }
}

/// Removes the state directories left in `base` by processes that no longer run (killed
/// before they could remove their own). Linux only: elsewhere nothing tells us a pid is gone.
fn remove_abandoned(base: &Path, own_pid: u32) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != own_pid && !Path::new(&format!("/proc/{pid}")).exists() {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    tracing::info!(dir = %entry.path().display(), "removed the state directory of a process that is gone")
                }
                Err(e) => {
                    tracing::warn!(dir = %entry.path().display(), error = %e, "could not remove an abandoned state directory")
                }
            }
        }
    }
}

/// A cached live value.
struct Entry {
    cell: Cell,
    kg: KeyGroup,
    /// Estimated bytes, as counted in the cache's account.
    size: u32,
    /// Changed since it was last written to disk.
    dirty: bool,
    /// A version may be on disk (a removal must delete it there too).
    on_disk: bool,
    /// Touched since the last eviction sweep passed it.
    hot: bool,
}

type Table = FastMap<(Key, Namespace), Entry>;

/// The keyed state of one operator instance in the disk backend.
pub struct DiskStore {
    shared: Arc<Shared>,
    /// Names this store's keyspaces.
    id: u64,
    /// `None` only while dropping.
    ks: Option<fjall::Keyspace>,
    key_groups: Range<KeyGroup>,
    names: Vec<String>,
    codecs: Vec<Arc<dyn CellCodec>>,
    /// Live values, one table per state.
    cache: Vec<Table>,
    /// Estimated bytes of a new value, per state (learned from the values encoded so far).
    avg_size: Vec<u32>,
    /// This store's share of `shared.cached`.
    own_bytes: usize,
    /// The first I/O or decoding error, reported by `check` and snapshots.
    error: Option<Error>,
    /// What changed since the last checkpoints (incremental checkpoints only).
    changes: Option<ChangeLog>,
    /// A restore still being written into the LSM (`None` once it is all there).
    lazy: Option<Box<BackgroundRestore<Result<()>>>>,
    lazy_min_bytes: usize,
    /// Estimated bytes of the cached values changed since they were last written to disk.
    dirty_bytes: usize,
    /// When `dirty_bytes` passes this, they are all written out.
    max_dirty_bytes: usize,
}

/// The least `max_dirty_bytes` a store gets by default, whatever its budget.
const MIN_DIRTY_BYTES: usize = 64 << 10;

/// Restores of at least this many bytes are written into the LSM in the background while
/// the task runs; smaller ones before it starts.
pub const LAZY_RESTORE_MIN_BYTES: usize = 1 << 20;

/// Writes one restored key group's values into keyspace `ks` (in batches of about 8 MiB).
fn write_restored(
    db: &fjall::Database,
    ks: &fjall::Keyspace,
    names: &[String],
    kg: KeyGroup,
    bytes: &[u8],
) -> Result<()> {
    let write_err =
        |e: fjall::Error| Error::state("disk state backend", format!("writing state: {e}"));
    let mut batch = db.batch();
    let mut batched = 0usize;
    read_key_group(bytes, names, &mut |visit| {
        let Visit::Value { id, key, ns, value } = visit else {
            return Ok(());
        };
        batched += value.len() + 32;
        batch.insert(ks, disk_key(kg, id, &key, ns), value);
        if batched >= 8 << 20 {
            std::mem::replace(&mut batch, db.batch())
                .commit()
                .map_err(write_err)?;
            batched = 0;
        }
        Ok(())
    })?;
    batch.commit().map_err(write_err)
}

fn disk_key(kg: KeyGroup, state: StateId, key: &Key, ns: Namespace) -> Vec<u8> {
    let mut k = Vec::with_capacity(32);
    k.extend_from_slice(&kg.to_be_bytes());
    k.extend_from_slice(&(state as u16).to_be_bytes());
    // Serializing a `Key` into a Vec cannot fail (no maps, no non-string keys).
    let _ = bincode::serialize_into(&mut k, key);
    k.extend_from_slice(&ns.start.to_le_bytes());
    k.extend_from_slice(&ns.end.to_le_bytes());
    k
}

/// Marks a cached value changed, counting it in `dirty_bytes` the first time.
#[inline]
fn set_dirty(e: &mut Entry, dirty_bytes: &mut usize) {
    if !e.dirty {
        e.dirty = true;
        *dirty_bytes += e.size as usize;
    }
}

/// Takes `removed` bytes off a store's share (`own`) of the cache's account.
fn release(own: &mut usize, shared: &Shared, removed: usize) {
    let removed = removed.min(*own);
    *own -= removed;
    shared.cached.fetch_sub(removed, Ordering::Relaxed);
}

/// Estimated resident bytes of a value whose encoding is `encoded` bytes.
fn estimate(key: &Key, encoded: usize) -> u32 {
    let key_heap = match key {
        Key::Str(s) => s.len() + 16,
        Key::Composite(parts) => parts.len() * 32 + 16,
        _ => 0,
    };
    (ENTRY_OVERHEAD + key_heap + HEAP_PER_ENCODED_BYTE * encoded).min(u32::MAX as usize) as u32
}

impl DiskStore {
    fn ks(&self) -> &fjall::Keyspace {
        // Present from creation until drop.
        self.ks
            .as_ref()
            .expect("keyspace is open until the store is dropped")
    }

    fn fail(&mut self, e: Error) {
        if self.error.is_none() {
            tracing::error!(error = %e, "disk state backend");
            self.error = Some(e);
        }
    }

    /// The value at an address read from disk, decoded (`None`: not there, or an error that
    /// is now kept for `check`).
    fn read(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &Key,
        ns: Namespace,
    ) -> Option<(Cell, u32)> {
        let got = self.ks().get(disk_key(kg, state, key, ns));
        match got {
            Ok(Some(bytes)) => match self.codecs[state].decode(&bytes) {
                Ok(cell) => Some((cell, estimate(key, bytes.len()))),
                Err(e) => {
                    self.fail(Error::state(&self.names[state], e));
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                self.fail(Error::state(
                    &self.names[state],
                    format!("reading state: {e}"),
                ));
                None
            }
        }
    }

    fn account(&mut self, added: u32) {
        self.own_bytes += added as usize;
        self.shared
            .cached
            .fetch_add(added as usize, Ordering::Relaxed);
    }

    fn unaccount(&mut self, removed: usize) {
        release(&mut self.own_bytes, &self.shared, removed);
    }

    /// Makes room when the cache (all stores) is over budget: evicts this store's values
    /// until the total is 85 % of the budget or this store holds nothing.
    /// Also writes the changed values out when they pass `max_dirty_bytes`.
    #[inline]
    fn make_room(&mut self) {
        if self.dirty_bytes > self.max_dirty_bytes
            && self.error.is_none()
            && let Err(e) = self.flush()
        {
            self.fail(e);
        }
        let total = self.shared.cached.load(Ordering::Relaxed);
        if total > self.shared.cache_budget && self.own_bytes > 0 {
            let goal = total - self.shared.cache_budget * 85 / 100;
            self.evict(goal);
        }
    }

    /// Evicts about `goal` bytes of values not touched since the last sweep, writing the
    /// changed ones to disk in one batch.
    fn evict(&mut self, goal: usize) {
        let Some(ks) = self.ks.clone() else {
            return;
        };
        let mut batch = self.shared.db().batch();
        let mut freed = 0usize;
        let mut evicted = 0u64;
        let mut error = None;
        // Two sweeps at most: the first may only clear `hot` marks.
        for _ in 0..2 {
            for (state, table) in self.cache.iter_mut().enumerate() {
                let codec = &self.codecs[state];
                let avg = &mut self.avg_size[state];
                let changes = self.changes.as_ref();
                let dirty_bytes = &mut self.dirty_bytes;
                table.retain(|(key, ns), e| {
                    if freed >= goal || error.is_some() {
                        return true;
                    }
                    if e.hot {
                        e.hot = false;
                        return true;
                    }
                    if e.dirty {
                        let mut value = Vec::with_capacity(e.size as usize);
                        if let Err(err) = codec.encode(&e.cell, &mut value) {
                            error = Some(err);
                            return true;
                        }
                        *avg = (*avg * 7 + estimate(key, value.len())) / 8;
                        let k = disk_key(e.kg, state, key, *ns);
                        if let Some(c) = changes {
                            c.mark_value(&k);
                        }
                        batch.insert(&ks, k, value);
                        *dirty_bytes = dirty_bytes.saturating_sub(e.size as usize);
                    }
                    freed += e.size as usize;
                    evicted += 1;
                    false
                });
            }
            if freed >= goal {
                break;
            }
        }
        if let Some(e) = error {
            self.fail(e);
        }
        if let Err(e) = batch.commit() {
            self.fail(Error::state(
                "disk state backend",
                format!("writing state: {e}"),
            ));
        }
        self.unaccount(freed);
        self.shared.evicted.fetch_add(evicted, Ordering::Relaxed);
    }

    /// Writes every changed value to disk (they stay cached, now clean).
    fn flush(&mut self) -> Result<()> {
        let Some(ks) = self.ks.clone() else {
            return Ok(());
        };
        let mut batch = self.shared.db().batch();
        let mut grown = 0i64;
        for (state, table) in self.cache.iter_mut().enumerate() {
            for ((key, ns), e) in table.iter_mut().filter(|(_, e)| e.dirty) {
                let mut value = Vec::with_capacity(e.size as usize);
                self.codecs[state]
                    .encode(&e.cell, &mut value)
                    .map_err(|err| Error::state(&self.names[state], err))?;
                let size = estimate(key, value.len());
                grown += i64::from(size) - i64::from(e.size);
                e.size = size;
                let k = disk_key(e.kg, state, key, *ns);
                if let Some(c) = &self.changes {
                    c.mark_value(&k);
                }
                batch.insert(&ks, k, value);
                e.dirty = false;
                e.on_disk = true;
            }
        }
        batch
            .commit()
            .map_err(|e| Error::state("disk state backend", format!("writing state: {e}")))?;
        self.dirty_bytes = 0;
        if grown >= 0 {
            self.account(grown.min(i64::from(u32::MAX)) as u32);
        } else {
            self.unaccount(grown.unsigned_abs() as usize);
        }
        Ok(())
    }

    /// The cached entry of an address, read from disk into the cache when it is only there.
    fn cached(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &Key,
        ns: Namespace,
    ) -> Option<(&mut Entry, &mut usize)> {
        self.ready(kg);
        self.make_room();
        let lookup = (key.clone(), ns);
        if !self.cache[state].contains_key(&lookup) {
            let (cell, size) = self.read(state, kg, key, ns)?;
            let entry = self.new_entry(state, kg, cell, true, Some(size));
            self.account(entry.size);
            self.cache[state].insert(lookup.clone(), entry);
        }
        let e = self.cache[state].get_mut(&lookup)?;
        Some((e, &mut self.dirty_bytes))
    }

    /// A clean cache entry (see `set_dirty`).
    fn new_entry(
        &self,
        state: StateId,
        kg: KeyGroup,
        cell: Cell,
        on_disk: bool,
        size: Option<u32>,
    ) -> Entry {
        Entry {
            cell,
            kg,
            size: size.unwrap_or(self.avg_size[state]),
            // Made dirty (and counted) by whoever changes it.
            dirty: false,
            on_disk,
            hot: true,
        }
    }
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        if let Some(lazy) = self.lazy.take() {
            lazy.stop();
        }
        let own = self.own_bytes;
        self.unaccount(own);
        if let Some(ks) = self.ks.take() {
            if let Err(e) = self.shared.db().delete_keyspace(ks) {
                tracing::warn!(error = %e, "could not delete a state store's keyspace");
            }
        }
    }
}

impl KeyedStore for DiskStore {
    fn register(&mut self, name: &str, codec: Arc<dyn CellCodec>) -> StateId {
        if let Some(i) = self.names.iter().position(|n| n == name) {
            return i;
        }
        self.names.push(name.to_string());
        self.codecs.push(codec);
        self.cache.push(Table::default());
        self.avg_size.push(estimate(&Key::Null, 16));
        self.names.len() - 1
    }

    fn get(&mut self, state: StateId, kg: KeyGroup, key: &Key, ns: Namespace) -> Option<&Cell> {
        let (e, _) = self.cached(state, kg, key, ns)?;
        e.hot = true;
        Some(&e.cell)
    }

    fn get_mut(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &Key,
        ns: Namespace,
    ) -> Option<&mut Cell> {
        let (e, dirty_bytes) = self.cached(state, kg, key, ns)?;
        e.hot = true;
        // The caller may change it.
        set_dirty(e, dirty_bytes);
        Some(&mut e.cell)
    }

    fn get_or_insert_with(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &Key,
        ns: Namespace,
        init: &mut dyn FnMut() -> Cell,
    ) -> &mut Cell {
        self.ready(kg);
        self.make_room();
        let lookup = (key.clone(), ns);
        if !self.cache[state].contains_key(&lookup) {
            let entry = match self.read(state, kg, key, ns) {
                Some((cell, size)) => self.new_entry(state, kg, cell, true, Some(size)),
                None => self.new_entry(state, kg, init(), false, None),
            };
            self.account(entry.size);
            self.cache[state].insert(lookup.clone(), entry);
        }
        let e = match self.cache[state].entry(lookup) {
            MapEntry::Occupied(o) => o.into_mut(),
            // Inserted above; a fresh value (unaccounted, size 0) keeps this total.
            MapEntry::Vacant(v) => v.insert(Entry {
                cell: init(),
                kg,
                size: 0,
                dirty: false,
                on_disk: true,
                hot: true,
            }),
        };
        e.hot = true;
        set_dirty(e, &mut self.dirty_bytes);
        &mut e.cell
    }

    fn put(&mut self, state: StateId, kg: KeyGroup, key: Key, ns: Namespace, value: Cell) {
        self.ready(kg);
        self.make_room();
        match self.cache[state].entry((key, ns)) {
            MapEntry::Occupied(o) => {
                let e = o.into_mut();
                e.cell = value;
                set_dirty(e, &mut self.dirty_bytes);
                e.hot = true;
            }
            MapEntry::Vacant(v) => {
                // Whether an older version is on disk is unknown: a later removal deletes it.
                let size = self.avg_size[state];
                v.insert(Entry {
                    cell: value,
                    kg,
                    size,
                    dirty: true,
                    on_disk: true,
                    hot: true,
                });
                self.dirty_bytes += size as usize;
                self.account(size);
            }
        }
    }

    fn remove(&mut self, state: StateId, kg: KeyGroup, key: &Key, ns: Namespace) -> Option<Cell> {
        self.ready(kg);
        let (cell, on_disk) = match self.cache[state].remove(&(key.clone(), ns)) {
            Some(e) => {
                if e.dirty {
                    self.dirty_bytes = self.dirty_bytes.saturating_sub(e.size as usize);
                }
                self.unaccount(e.size as usize);
                (e.cell, e.on_disk)
            }
            None => (self.read(state, kg, key, ns)?.0, true),
        };
        if on_disk {
            let k = disk_key(kg, state, key, ns);
            if let Some(c) = &self.changes {
                c.mark_value(&k);
            }
            if let Err(e) = self.ks().remove(k) {
                self.fail(Error::state(
                    &self.names[state],
                    format!("removing state: {e}"),
                ));
            }
        }
        Some(cell)
    }

    fn len(&mut self) -> usize {
        self.ready_all();
        if let Err(e) = self.flush() {
            self.fail(e);
            return 0;
        }
        self.ks().iter().count()
    }

    fn key_groups(&self) -> Range<KeyGroup> {
        self.key_groups.clone()
    }

    fn check(&mut self) -> Result<()> {
        match &self.error {
            Some(e) => Err(Error::Checkpoint(format!("disk state backend: {e}"))),
            None => Ok(()),
        }
    }

    fn timer_service(&self) -> Result<TimerService> {
        let open = |domain: &str| {
            let name = format!("timers-{}-{domain}", self.id);
            let memtable = (self.shared.memory / 64).max(1 << 20);
            self.shared
                .db()
                .keyspace(&name, || keyspace_options(memtable))
                .map(|ks| TimerSpill::new(self.shared.db().clone(), ks))
                .map_err(|e| Error::state("disk state backend", e))
        };
        // An eighth of the budget for each domain's earliest timers (processing-time timers
        // are rare in keyed jobs; the two rarely fill together).
        let limit = (self.shared.memory / 8) as usize / super::timers::TIMER_BYTES;
        Ok(TimerService::spilling(
            open("event")?,
            open("processing")?,
            limit,
            self.changes.clone(),
        ))
    }

    fn prepare_snapshot(&mut self) -> Result<()> {
        self.ready_all();
        self.check()?;
        self.flush()
    }

    fn finish_restore(&mut self) -> Result<()> {
        self.ready_all();
        self.check()
    }

    fn snapshot_key_group(&self, kg: KeyGroup, out: &mut Vec<u8>) -> Result<()> {
        if let Some(e) = &self.error {
            return Err(Error::Checkpoint(format!("disk state backend: {e}")));
        }
        if !self.key_groups.contains(&kg) {
            return Ok(());
        }
        write_key_group(
            &self.shared.db().snapshot(),
            self.ks(),
            &self.names,
            kg,
            out,
        )
    }

    fn snapshot_view(
        &mut self,
        barrier: &Barrier,
    ) -> Result<Option<(Box<dyn KeyGroupView>, PathBuf)>> {
        self.ready_all();
        self.check()?;
        self.flush()?;
        // After the flush (its marks are in the epoch sealed now), before the view.
        let increment = match &self.changes {
            Some(c) => Some(c.seal(barrier)?),
            None => None,
        };
        let view = DiskView {
            snapshot: self.shared.db().snapshot(),
            ks: self.ks().clone(),
            names: self.names.clone(),
            key_groups: self.key_groups.clone(),
            increment,
            _shared: self.shared.clone(),
        };
        Ok(Some((Box::new(view), self.shared.spool_dir())))
    }

    fn restore_key_groups(&mut self, groups: Vec<(KeyGroup, Bytes)>) -> Result<()> {
        let Some(ks) = self.ks.clone() else {
            return Ok(());
        };
        for (kg, _) in &groups {
            if !self.key_groups.contains(kg) {
                return Err(Error::Checkpoint(format!(
                    "key group {kg} restored into a store for key groups {:?}",
                    self.key_groups
                )));
            }
        }
        // One restore at a time: what an earlier one left pending goes in first.
        self.ready_all();
        // A type mismatch between the snapshot and the job's states shows here, before
        // the task starts.
        for (i, (_, bytes)) in groups.iter().enumerate() {
            check_key_group(&self.names, &self.codecs, bytes, i == 0)?;
        }
        let total: usize = groups.iter().map(|(_, b)| b.len()).sum();
        let nothing_cached = self.cache.iter().all(|t| t.is_empty());
        if total >= self.lazy_min_bytes && nothing_cached {
            self.restore_lazily(groups);
            return Ok(());
        }
        for (kg, bytes) in groups {
            // A restored value replaces a cached one.
            let DiskStore {
                shared,
                names,
                cache,
                own_bytes,
                dirty_bytes,
                ..
            } = self;
            read_key_group(&bytes, names, &mut |visit| {
                if let Visit::Value { id, key, ns, .. } = visit
                    && let Some(e) = cache[id].remove(&(key, ns))
                {
                    if e.dirty {
                        *dirty_bytes = dirty_bytes.saturating_sub(e.size as usize);
                    }
                    release(own_bytes, shared, e.size as usize);
                }
                Ok(())
            })?;
            write_restored(self.shared.db(), &ks, &self.names, kg, &bytes)?;
        }
        Ok(())
    }
}

impl DiskStore {
    /// Leaves `groups` to a background worker and to the first accesses (see
    /// `background`).
    fn restore_lazily(&mut self, groups: Vec<(KeyGroup, Bytes)>) {
        let Some(ks) = self.ks.clone() else {
            return;
        };
        let (shared, names) = (self.shared.clone(), self.names.clone());
        let load: Arc<Load<Result<()>>> =
            Arc::new(move |kg, bytes: &Bytes| write_restored(shared.db(), &ks, &names, kg, bytes));
        self.lazy = BackgroundRestore::start(self.key_groups.clone(), groups, load).map(Box::new);
    }

    /// Makes sure key group `kg` is in the LSM (the cheap check on every access).
    #[inline]
    fn ready(&mut self, kg: KeyGroup) {
        if self.lazy.is_some() {
            self.ready_slow(usize::from(kg.saturating_sub(self.key_groups.start)));
        }
    }

    #[cold]
    fn ready_slow(&mut self, slot: usize) {
        let Some(mut lazy) = self.lazy.take() else {
            return;
        };
        let done = lazy.ready(slot, &mut |_, r| match r {
            Some(Ok(())) => {}
            Some(Err(e)) => self.fail(e),
            None => self.fail(Error::Checkpoint(
                "the state restore worker stopped early".into(),
            )),
        });
        if !done {
            self.lazy = Some(lazy);
        }
    }

    /// Waits until every restored key group is in the LSM.
    fn ready_all(&mut self) {
        while let Some(slot) = self.lazy.as_ref().and_then(|l| l.first_pending()) {
            self.ready_slow(slot);
        }
    }
}

/// The state of this instance: what the store held when it was taken, read from a
/// consistent view of the LSM tree while the task goes on changing it (the asynchronous
/// part of a checkpoint).
struct DiskView {
    snapshot: fjall::Snapshot,
    ks: fjall::Keyspace,
    names: Vec<String>,
    key_groups: Range<KeyGroup>,
    /// With incremental checkpoints: what the snapshot holds.
    increment: Option<Increment>,
    /// Keeps the database (and its directory) while the view is read.
    _shared: Arc<Shared>,
}

impl KeyGroupView for DiskView {
    fn key_groups(&self) -> Range<KeyGroup> {
        self.key_groups.clone()
    }

    fn write_key_group(&self, kg: KeyGroup, out: &mut Vec<u8>) -> Result<()> {
        write_key_group(&self.snapshot, &self.ks, &self.names, kg, out)
    }

    fn base(&self) -> Option<CheckpointId> {
        self.increment.as_ref().and_then(|i| i.base)
    }

    fn shared(&self) -> bool {
        self.increment.as_ref().is_some_and(|i| i.shared)
    }

    fn write_changes(
        &self,
        kg: KeyGroup,
        values: &mut Vec<u8>,
        removed: &mut Vec<u8>,
        timers: &mut Vec<(TimeDomain, Timer)>,
    ) -> Result<()> {
        use fjall::Readable;
        let epochs = self.increment.as_ref().map_or(&[][..], |i| &i.epochs[..]);
        let marks = marks_of(&self.snapshot, epochs, kg)?;
        let (mut present, mut absent) = (
            GroupWriter::new(values, &self.names),
            GroupWriter::new(removed, &self.names),
        );
        let mut key = Vec::with_capacity(64);
        for mark in &marks {
            match mark.first() {
                Some(&VALUE_MARK) if mark.len() >= 3 + 16 => {
                    let state = u16::from_be_bytes([mark[1], mark[2]]);
                    key.clear();
                    key.extend_from_slice(&kg.to_be_bytes());
                    key.extend_from_slice(&mark[1..]);
                    let got = self.snapshot.get(&self.ks, &key).map_err(|e| {
                        Error::state("disk state backend", format!("reading state: {e}"))
                    })?;
                    match got {
                        Some(v) => present.add(state, &mark[3..], &v)?,
                        None => absent.add(state, &mark[3..], &[])?,
                    }
                }
                Some(&TIMER_MARK) => timers.push(decode_timer_mark(mark)?),
                _ => {
                    return Err(Error::state(
                        "disk state backend",
                        "a change mark is damaged",
                    ));
                }
            }
        }
        present.finish();
        absent.finish();
        Ok(())
    }
}

/// Writes one key group's values in the heap backend's format (see `values_format`), given
/// in order of state.
struct GroupWriter<'a> {
    out: &'a mut Vec<u8>,
    names: &'a [String],
    states_at: usize,
    states: u32,
    /// The state being written, where its count goes, and its count so far.
    current: Option<(u16, usize, u64)>,
}

impl<'a> GroupWriter<'a> {
    fn new(out: &'a mut Vec<u8>, names: &'a [String]) -> Self {
        let states_at = out.len();
        out.extend_from_slice(&0u32.to_le_bytes());
        GroupWriter {
            out,
            names,
            states_at,
            states: 0,
            current: None,
        }
    }

    /// Adds a value: `key_ns` is the key (bincode) and namespace (two i64 LE) as the store
    /// keeps them.
    fn add(&mut self, state: u16, key_ns: &[u8], value: &[u8]) -> Result<()> {
        if self.current.is_none_or(|(s, _, _)| s != state) {
            self.end_state();
            let name = self.names.get(usize::from(state)).ok_or_else(|| {
                Error::state(
                    "disk state backend",
                    format!("a stored value of unknown state {state}"),
                )
            })?;
            put_bytes(self.out, name.as_bytes());
            self.current = Some((state, self.out.len(), 0));
            self.out.extend_from_slice(&0u64.to_le_bytes());
            self.states += 1;
        }
        self.out.extend_from_slice(key_ns);
        put_bytes(self.out, value);
        if let Some((_, _, n)) = self.current.as_mut() {
            *n += 1;
        }
        Ok(())
    }

    fn end_state(&mut self) {
        if let Some((_, at, n)) = self.current.take() {
            self.out[at..at + 8].copy_from_slice(&n.to_le_bytes());
        }
    }

    fn finish(mut self) {
        self.end_state();
        let at = self.states_at;
        self.out[at..at + 4].copy_from_slice(&self.states.to_le_bytes());
    }
}

/// Writes key group `kg` of keyspace `ks` as of `snapshot` in the heap backend's format
/// (see `values_format`).
fn write_key_group(
    snapshot: &fjall::Snapshot,
    ks: &fjall::Keyspace,
    names: &[String],
    kg: KeyGroup,
    out: &mut Vec<u8>,
) -> Result<()> {
    use fjall::Readable;
    // States come in id order since the id follows the key group in every disk key.
    let mut w = GroupWriter::new(out, names);
    let read_err =
        |e: fjall::Error| Error::state("disk state backend", format!("reading state: {e}"));
    for item in snapshot.prefix(ks, kg.to_be_bytes()) {
        let (k, v) = item.into_inner().map_err(read_err)?;
        if k.len() < 4 + 16 {
            return Err(Error::state(
                "disk state backend",
                "a stored key is too short",
            ));
        }
        // Key (bincode) and namespace (two i64 LE) are stored as the snapshot writes them.
        w.add(u16::from_be_bytes([k[2], k[3]]), &k[4..], &v)?;
    }
    w.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::codec::ByteReader;
    use crate::state::{MemoryStateBackend, codec};

    const MAX_P: u16 = 128;

    fn backend(budget: u64, dir: &Path) -> DiskStateBackend {
        DiskStateBackend::new(DiskOptions {
            managed_memory: budget,
            local_dir: Some(dir.to_path_buf()),
            incremental: false,
            ..Default::default()
        })
    }

    fn count_of(store: &mut dyn KeyedStore, state: StateId, k: i64) -> Option<i64> {
        let key = Key::Int(k);
        store
            .get(state, key.key_group(MAX_P), &key, Namespace::VOID)
            .and_then(|c| c.downcast_ref::<i64>().copied())
    }

    /// Adds 1 to key `k`'s counter the way keyed operators do.
    fn bump(store: &mut dyn KeyedStore, state: StateId, k: i64) {
        let key = Key::Int(k);
        let cell = store.get_or_insert_with(
            state,
            key.key_group(MAX_P),
            &key,
            Namespace::VOID,
            &mut || Box::new(0i64),
        );
        if let Some(v) = cell.downcast_mut::<i64>() {
            *v += 1;
        }
    }

    #[test]
    fn values_survive_eviction_and_the_cache_stays_within_budget() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::state("test", e))?;
        // A 4 MiB budget: 2 MiB of live values, about 15,000 entries, for 100,000 keys.
        let b = backend(4 << 20, dir.path());
        let mut s = b.create_store(0..MAX_P, MAX_P)?;
        let count = s.register("count", codec::<i64>());
        for round in 0..3 {
            for k in 0..100_000 {
                bump(s.as_mut(), count, k);
            }
            assert!(
                b.cached_bytes() <= 2 << 20,
                "round {round}: {} bytes cached",
                b.cached_bytes()
            );
        }
        for k in (0..100_000).step_by(997) {
            assert_eq!(count_of(s.as_mut(), count, k), Some(3), "key {k}");
        }
        assert_eq!(count_of(s.as_mut(), count, 100_001), None);
        assert_eq!(s.len(), 100_000);
        assert!(
            b.evicted_values() > 200_000,
            "{} evicted",
            b.evicted_values()
        );
        s.check()
    }

    #[test]
    fn changed_values_are_written_out_before_they_pass_their_bound() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::state("test", e))?;
        // A budget that caches every value: only the bound on changed ones writes them out.
        let b = DiskStateBackend::new(DiskOptions {
            managed_memory: 64 << 20,
            local_dir: Some(dir.path().to_path_buf()),
            max_dirty_bytes: Some(32 << 10),
            ..Default::default()
        });
        let mut s = b.open_store(0..MAX_P, MAX_P)?;
        let count = s.register("count", codec::<i64>());
        let mut most = 0;
        for round in 0..2 {
            for k in 0..20_000 {
                bump(&mut s, count, k);
                most = most.max(s.dirty_bytes);
            }
            assert_eq!(b.evicted_values(), 0, "round {round}: nothing evicted");
        }
        // At most one value past the bound.
        assert!(most <= (32 << 10) + 256, "{most} changed bytes cached");
        // The cache's values went to disk as they passed it: the LSM holds (nearly) all of them.
        let on_disk = s.ks().len().map_err(|e| Error::state("test", e))?;
        assert!(on_disk > 19_000, "{on_disk} values on disk");
        assert_eq!(
            s.dirty_bytes,
            s.cache[count]
                .values()
                .filter(|e| e.dirty)
                .map(|e| e.size as usize)
                .sum::<usize>()
        );
        for k in (0..20_000).step_by(101) {
            assert_eq!(count_of(&mut s, count, k), Some(2), "key {k}");
        }
        // Removing a changed value takes it off the count.
        s.flush()?;
        bump(&mut s, count, 7);
        assert!(s.dirty_bytes > 0);
        let key = Key::Int(7);
        s.remove(count, key.key_group(MAX_P), &key, Namespace::VOID);
        assert_eq!(s.dirty_bytes, 0);
        s.check()
    }

    #[test]
    fn removal_deletes_cached_and_evicted_values() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::state("test", e))?;
        let b = backend(2 << 20, dir.path());
        let mut s = b.create_store(0..MAX_P, MAX_P)?;
        let count = s.register("count", codec::<i64>());
        for k in 0..50_000 {
            bump(s.as_mut(), count, k);
        }
        for k in (0..50_000).step_by(2) {
            let key = Key::Int(k);
            let gone = s.remove(count, key.key_group(MAX_P), &key, Namespace::VOID);
            assert!(gone.is_some(), "key {k}");
        }
        assert_eq!(s.len(), 25_000);
        assert_eq!(count_of(s.as_mut(), count, 2), None);
        assert_eq!(count_of(s.as_mut(), count, 3), Some(1));
        s.check()
    }

    /// Fills a store of either backend: counters for `keys`, a name for every third key and a
    /// window-scoped value for every fifth.
    fn fill(s: &mut dyn KeyedStore, keys: i64) {
        let count = s.register("count", codec::<i64>());
        let name = s.register("name", codec::<String>());
        for k in 0..keys {
            let key = Key::Int(k);
            let kg = key.key_group(MAX_P);
            s.put(count, kg, key.clone(), Namespace::VOID, Box::new(k * 3));
            if k % 3 == 0 {
                s.put(
                    name,
                    kg,
                    key.clone(),
                    Namespace::VOID,
                    Box::new(format!("k{k}")),
                );
            }
            if k % 5 == 0 {
                let ns = Namespace {
                    start: k,
                    end: k + 10,
                };
                s.put(count, kg, key, ns, Box::new(-k));
            }
        }
    }

    /// (state, key, namespace, encoded value)
    type StoredValue = (String, Key, Namespace, Vec<u8>);

    /// The key groups of a store, decoded into a sorted list of (state, key, ns, value bytes).
    fn contents(s: &mut dyn KeyedStore) -> Result<Vec<StoredValue>> {
        s.prepare_snapshot()?;
        let mut all = Vec::new();
        for kg in s.key_groups() {
            let mut out = Vec::new();
            s.snapshot_key_group(kg, &mut out)?;
            let mut r = ByteReader::new(&out, "test");
            for _ in 0..r.u32()? {
                let name = String::from_utf8_lossy(r.bytes()?).into_owned();
                for _ in 0..r.u64()? {
                    let key: Key = r.value()?;
                    let ns = Namespace {
                        start: r.i64()?,
                        end: r.i64()?,
                    };
                    all.push((name.clone(), key, ns, r.bytes()?.to_vec()));
                }
            }
        }
        all.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
        Ok(all)
    }

    fn snapshot_all(s: &mut dyn KeyedStore) -> Result<Vec<(KeyGroup, Bytes)>> {
        s.prepare_snapshot()?;
        let mut groups = Vec::new();
        for kg in s.key_groups() {
            let mut out = Vec::new();
            s.snapshot_key_group(kg, &mut out)?;
            groups.push((kg, Bytes::from(out)));
        }
        Ok(groups)
    }

    #[test]
    fn snapshots_move_between_the_backends_and_across_parallelisms() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::state("test", e))?;
        let disk = backend(1 << 20, dir.path());
        let heap = MemoryStateBackend::with_background_restore_min_bytes(usize::MAX);
        let mut from_heap = heap.create_store(0..MAX_P, MAX_P)?;
        fill(from_heap.as_mut(), 20_000);
        let expected = contents(from_heap.as_mut())?;
        // Heap → disk, split over two instances (another parallelism).
        let groups = snapshot_all(from_heap.as_mut())?;
        let mut halves = Vec::new();
        for range in [0..40, 40..MAX_P] {
            let mut s = disk.create_store(range.clone(), MAX_P)?;
            s.register("count", codec::<i64>());
            s.register("name", codec::<String>());
            let mine = groups
                .iter()
                .filter(|(kg, _)| range.contains(kg))
                .cloned()
                .collect();
            s.restore_key_groups(mine)?;
            halves.push(s);
        }
        let mut from_disk = Vec::new();
        for s in &mut halves {
            from_disk.extend(contents(s.as_mut())?);
        }
        from_disk.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
        assert_eq!(from_disk, expected);
        // Disk → heap, back to one instance.
        let mut back = heap.create_store(0..MAX_P, MAX_P)?;
        back.register("count", codec::<i64>());
        back.register("name", codec::<String>());
        let mut groups = Vec::new();
        for s in &mut halves {
            groups.extend(snapshot_all(s.as_mut())?);
        }
        back.restore_key_groups(groups)?;
        assert_eq!(contents(back.as_mut())?, expected);
        Ok(())
    }

    #[test]
    fn a_large_restore_goes_on_in_the_background_and_every_access_sees_its_group() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::state("test", e))?;
        let heap = MemoryStateBackend::with_background_restore_min_bytes(usize::MAX);
        let mut from_heap = heap.create_store(0..MAX_P, MAX_P)?;
        fill(from_heap.as_mut(), 80_000);
        let groups = snapshot_all(from_heap.as_mut())?;
        let total: usize = groups.iter().map(|(_, b)| b.len()).sum();
        assert!(
            total >= LAZY_RESTORE_MIN_BYTES,
            "{total} bytes: restored lazily"
        );
        let disk = backend(1 << 20, dir.path());
        let mut s = disk.create_store(0..MAX_P, MAX_P)?;
        let count = s.register("count", codec::<i64>());
        s.register("name", codec::<String>());
        s.restore_key_groups(groups)?;
        // At once: reads, read-modify-writes and removals of keys all over the key groups,
        // while the worker may still be writing others.
        for k in (0..80_000).step_by(997) {
            assert_eq!(count_of(s.as_mut(), count, k), Some(k * 3), "key {k}");
        }
        for k in (0..80_000).step_by(13) {
            bump(s.as_mut(), count, k);
        }
        for k in (0..80_000).step_by(101) {
            let key = Key::Int(k);
            s.remove(count, key.key_group(MAX_P), &key, Namespace::VOID);
        }
        // The same changes on the heap give the same state.
        for k in (0..80_000).step_by(13) {
            bump(from_heap.as_mut(), count, k);
        }
        for k in (0..80_000).step_by(101) {
            let key = Key::Int(k);
            from_heap.remove(count, key.key_group(MAX_P), &key, Namespace::VOID);
        }
        assert_eq!(contents(s.as_mut())?, contents(from_heap.as_mut())?);
        s.check()
    }

    #[test]
    fn a_deferred_snapshot_is_the_state_at_the_barrier_whatever_changes_after() -> Result<()> {
        use crate::state::{TimeDomain, snapshot_keyed, snapshot_keyed_state};
        let dir = tempfile::tempdir().map_err(|e| Error::state("test", e))?;
        // A small budget: values and timers live mostly on disk.
        let disk = backend(1 << 20, dir.path());
        let mut s = disk.create_store(0..MAX_P, MAX_P)?;
        let mut timers = s.timer_service()?;
        fill(s.as_mut(), 30_000);
        for k in 0..100_000 {
            let key = Key::Int(k % 30_000);
            timers.register(TimeDomain::EventTime, k, key, Namespace::VOID);
        }
        let expected = snapshot_keyed(s.as_mut(), &timers, MAX_P)?;
        let mut snap = snapshot_keyed_state(s.as_mut(), &timers, MAX_P, &Barrier::checkpoint(1))?;
        assert!(snap.keyed.is_empty() && snap.deferred.is_some(), "deferred");
        // After the barrier: values overwritten, removed and added (evicting to disk),
        // timers fired and registered.
        let count = s.register("count", codec::<i64>());
        for k in 0..40_000 {
            bump(s.as_mut(), count, k);
        }
        for k in (0..30_000).step_by(7) {
            let key = Key::Int(k);
            s.remove(count, key.key_group(MAX_P), &key, Namespace::VOID);
        }
        while timers.pop_due(TimeDomain::EventTime, 60_000).is_some() {}
        for k in 0..1_000 {
            timers.register(TimeDomain::EventTime, -k, Key::Int(k), Namespace::VOID);
        }
        assert!(disk.evicted_values() > 0);
        snap.resolve()?;
        assert_eq!(snap.keyed.len(), expected.len());
        assert!(snap.keyed == expected, "the deferred snapshot differs");
        s.check()
    }

    /// Decoded values, and timers with whether they are event-time ones.
    type Decoded = (Vec<StoredValue>, Vec<(bool, crate::state::Timer)>);

    /// The decoded values and timers of a snapshot's key groups.
    fn decoded(blobs: Vec<(KeyGroup, Bytes)>) -> Result<Decoded> {
        let mut h = MemoryStateBackend::default().create_store(0..MAX_P, MAX_P)?;
        h.register("count", codec::<i64>());
        h.register("name", codec::<String>());
        let mut t = TimerService::default();
        crate::state::restore_keyed(h.as_mut(), &mut t, &blobs)?;
        let mut timers = Vec::new();
        t.for_each(&mut |d, timer| timers.push((d == TimeDomain::EventTime, timer.clone())))?;
        timers.sort();
        Ok((contents(h.as_mut())?, timers))
    }

    #[test]
    fn incremental_snapshots_hold_what_changed_and_merge_into_the_whole_state() -> Result<()> {
        use crate::checkpoint::{OperatorSnapshot, SnapshotKind};
        use crate::state::{merge_key_group_chain, snapshot_keyed_state};
        let dir = tempfile::tempdir().map_err(|e| Error::state("test", e))?;
        // A small budget: values and timers live mostly on disk.
        let disk = DiskStateBackend::new(DiskOptions {
            managed_memory: 1 << 20,
            local_dir: Some(dir.path().to_path_buf()),
            incremental: true,
            ..Default::default()
        });
        let mut s = disk.create_store(0..MAX_P, MAX_P)?;
        let mut timers = s.timer_service()?;
        let barrier = |id, base| Barrier {
            base,
            ..Barrier::checkpoint(id)
        };
        let resolve = |mut snap: OperatorSnapshot| -> Result<Vec<(KeyGroup, Bytes)>> {
            snap.resolve()?;
            Ok(snap
                .keyed
                .into_iter()
                .map(|(kg, b)| (kg, Bytes::from(b)))
                .collect())
        };
        let bytes = |blobs: &[(KeyGroup, Bytes)]| blobs.iter().map(|(_, b)| b.len()).sum::<usize>();
        fill(s.as_mut(), 30_000);
        for k in 0..60_000 {
            timers.register(
                TimeDomain::EventTime,
                k,
                Key::Int(k % 30_000),
                Namespace::VOID,
            );
        }
        let snap = snapshot_keyed_state(s.as_mut(), &timers, MAX_P, &barrier(1, None))?;
        assert!(snap.shared && snap.base.is_none(), "the first one is whole");
        let whole = resolve(snap)?;

        // Changes: values bumped, removed and added (evicting to disk), timers fired,
        // registered and deleted.
        let count = s.register("count", codec::<i64>());
        for k in (0..30_000).step_by(100) {
            bump(s.as_mut(), count, k);
        }
        for k in (0..30_000).step_by(1_000) {
            let key = Key::Int(k);
            s.remove(count, key.key_group(MAX_P), &key, Namespace::VOID);
        }
        while timers.pop_due(TimeDomain::EventTime, 500).is_some() {}
        timers.register(TimeDomain::EventTime, 100_000, Key::Int(7), Namespace::VOID);
        timers.register(TimeDomain::ProcessingTime, 5, Key::Int(8), Namespace::VOID);
        let snap = snapshot_keyed_state(s.as_mut(), &timers, MAX_P, &barrier(2, Some(1)))?;
        assert_eq!(snap.base, Some(1));
        let second = resolve(snap)?;
        for k in (0..30_000).step_by(300) {
            bump(s.as_mut(), count, k);
        }
        for k in 40_000..40_100 {
            bump(s.as_mut(), count, k);
        }
        timers.delete(TimeDomain::EventTime, 100_000, Key::Int(7), Namespace::VOID);
        let snap = snapshot_keyed_state(s.as_mut(), &timers, MAX_P, &barrier(3, Some(2)))?;
        assert_eq!(snap.base, Some(2));
        let third = resolve(snap)?;
        assert!(disk.evicted_values() > 0);
        assert!(
            bytes(&second) * 20 < bytes(&whole) && bytes(&third) * 20 < bytes(&whole),
            "changes of about 1 % of the keys: {} and {} bytes, the whole state {}",
            bytes(&second),
            bytes(&third),
            bytes(&whole)
        );

        // The state as it is now, whole: a savepoint (which seals no epoch).
        let snap = snapshot_keyed_state(
            s.as_mut(),
            &timers,
            MAX_P,
            &Barrier {
                kind: SnapshotKind::Savepoint,
                ..barrier(4, Some(3))
            },
        )?;
        assert!(snap.base.is_none() && !snap.shared, "savepoints are whole");
        let reference = resolve(snap)?;
        let find = |blobs: &[(KeyGroup, Bytes)], kg: KeyGroup| {
            blobs.iter().find(|(k, _)| *k == kg).map(|(_, b)| b.clone())
        };
        let mut merged = Vec::new();
        for kg in 0..MAX_P {
            let changes: Vec<Bytes> = [&second, &third]
                .iter()
                .filter_map(|c| find(c, kg))
                .collect();
            let changes: Vec<&[u8]> = changes.iter().map(|b| &b[..]).collect();
            if let Some(m) = merge_key_group_chain(find(&whole, kg).as_deref(), &changes)? {
                merged.push((kg, Bytes::from(m)));
            }
        }
        let (got, want) = (decoded(merged)?, decoded(reference)?);
        assert_eq!(got.0.len(), want.0.len(), "values");
        assert_eq!(got.1.len(), want.1.len(), "timers");
        assert!(got == want, "the merged chain differs from the whole state");

        // A base this store did not take part in (a restart): whole again. The changes
        // of the savepoint's time are in it, not lost.
        let snap = snapshot_keyed_state(s.as_mut(), &timers, MAX_P, &barrier(5, Some(99)))?;
        assert!(snap.base.is_none() && snap.shared);
        s.check()
    }

    #[test]
    fn a_disk_store_fills_to_the_same_snapshot_as_the_heap_store() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::state("test", e))?;
        let disk = backend(1 << 20, dir.path());
        let mut d = disk.create_store(0..MAX_P, MAX_P)?;
        fill(d.as_mut(), 30_000);
        let mut h = MemoryStateBackend::default().create_store(0..MAX_P, MAX_P)?;
        fill(h.as_mut(), 30_000);
        assert_eq!(contents(d.as_mut())?, contents(h.as_mut())?);
        Ok(())
    }

    #[test]
    fn a_restore_of_another_value_type_fails() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::state("test", e))?;
        let disk = backend(1 << 20, dir.path());
        let mut d = disk.create_store(0..MAX_P, MAX_P)?;
        fill(d.as_mut(), 100);
        let groups = snapshot_all(d.as_mut())?;
        let mut other = disk.create_store(0..MAX_P, MAX_P)?;
        other.register("count", codec::<i64>());
        // "name" held strings.
        other.register("name", codec::<(i64, i64, i64)>());
        assert!(other.restore_key_groups(groups).is_err());
        Ok(())
    }

    #[test]
    fn the_directory_goes_with_the_backend_and_abandoned_ones_are_removed() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::state("test", e))?;
        // A directory left by a process that cannot be running (pid above the kernel's max).
        let stale = dir.path().join(format!("{DIR_PREFIX}4294967294-0"));
        std::fs::create_dir_all(&stale).map_err(|e| Error::state("test", e))?;
        let b = backend(1 << 20, dir.path());
        let mut s = b.create_store(0..MAX_P, MAX_P)?;
        fill(s.as_mut(), 10);
        let listed = || -> Vec<String> {
            std::fs::read_dir(dir.path())
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        if Path::new("/proc/self").exists() {
            assert!(!stale.exists(), "abandoned directory removed");
        }
        assert_eq!(listed().len(), 1, "{:?}", listed());
        drop(s);
        drop(b);
        assert!(listed().is_empty(), "{:?}", listed());
        Ok(())
    }
}
