//! Keyed state: the [`StateBackend`] trait, the in-memory and on-disk backends, and the typed state handles
//! (value, list, map, reducing, aggregating) that operators and user functions use.
//!
//! State is addressed by (state id, key group, key, namespace). The namespace is the window for
//! window state and [`Namespace::VOID`] otherwise. Storage is partitioned by key group (the
//! unit checkpoints will store and rescaling will move), and a store only holds the key groups
//! of its subtask.

mod background;
mod changes;
mod codec;
mod config;
mod disk;
mod handles;
mod memory;
mod snapshot;
mod timer_spill;
mod timers;
mod values_format;

use std::any::Any;
use std::ops::Range;
use std::path::PathBuf;

pub use codec::{CellCodec, SerdeCodec, StateValue, codec};
pub use config::{StateBackendConfig, StateBackendKind, parse_memory_size};
pub use disk::{DEFAULT_MANAGED_MEMORY, DiskOptions, DiskStateBackend, DiskStore};
pub use handles::{
    AggregatingState, KeyedContext, ListState, MapState, ReducingState, StateRegistry,
    StateTtlConfig, TtlUpdate, ValueState,
};
pub use memory::{
    FastHasher, FastMap, LAZY_RESTORE_MIN_BYTES, MemoryStateBackend, MemoryStore, restore_progress,
};
pub use snapshot::{merge_key_group_chain, restore_keyed, snapshot_keyed, snapshot_keyed_state};
pub use timers::{TimeDomain, Timer, TimerService};

use std::sync::Arc;

use bytes::Bytes;

use crate::error::Result;

use crate::element::Timestamp;
use crate::key::{Key, KeyGroup};

/// Identifies one registered state within a store.
pub type StateId = usize;

/// The second half of a state address: a window `[start, end)`, or `VOID` outside windows.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Namespace {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Namespace {
    /// The namespace of state that is not scoped to a window.
    pub const VOID: Namespace = Namespace {
        start: i64::MIN,
        end: i64::MIN,
    };
}

/// A stored state value, type-erased so one store holds states of many types.
pub type Cell = Box<dyn Any + Send>;

/// Creates the per-subtask stores of keyed state.
pub trait StateBackend: Send + Sync + 'static {
    /// Short name for plans and logs (`memory`, `disk`).
    fn name(&self) -> &'static str;
    /// Whether state beyond a memory budget goes to disk. Operators that keep their own
    /// in-memory tables for speed (the sliced window aggregate) give way to store-based ones
    /// on such a backend.
    fn spills(&self) -> bool {
        false
    }
    /// A store for the key groups `key_groups` (of `max_parallelism`).
    fn create_store(
        &self,
        key_groups: Range<KeyGroup>,
        max_parallelism: u16,
    ) -> Result<Box<dyn KeyedStore>>;
}

/// The keyed state of one operator instance.
pub trait KeyedStore: Send {
    /// Registers (or finds) a state by name; `codec` encodes its values for snapshots.
    fn register(&mut self, name: &str, codec: Arc<dyn CellCodec>) -> StateId;
    /// The value at an address.
    fn get(&mut self, state: StateId, kg: KeyGroup, key: &Key, ns: Namespace) -> Option<&Cell>;
    /// The value at an address, mutably.
    fn get_mut(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &Key,
        ns: Namespace,
    ) -> Option<&mut Cell>;
    /// The value at an address, created by `init` when there is none: one lookup for the
    /// read-modify-write of every keyed operator's per-record path.
    fn get_or_insert_with(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &Key,
        ns: Namespace,
        init: &mut dyn FnMut() -> Cell,
    ) -> &mut Cell;
    /// Stores a value, replacing what was there.
    fn put(&mut self, state: StateId, kg: KeyGroup, key: Key, ns: Namespace, value: Cell);
    /// Removes and returns a value.
    fn remove(&mut self, state: StateId, kg: KeyGroup, key: &Key, ns: Namespace) -> Option<Cell>;
    /// Number of stored values over all states.
    fn len(&mut self) -> usize;
    /// True when nothing is stored.
    fn is_empty(&mut self) -> bool {
        self.len() == 0
    }
    /// The key groups this store holds.
    fn key_groups(&self) -> Range<KeyGroup>;
    /// Called on the task thread before a snapshot's [`snapshot_key_group`](Self::snapshot_key_group)
    /// calls: a backend with a write-back cache writes what changed.
    fn prepare_snapshot(&mut self) -> Result<()> {
        Ok(())
    }
    /// Encodes every value of key group `kg` (all states) into `out`; a consistent copy taken
    /// on the task thread, so the caller can upload it while processing goes on.
    fn snapshot_key_group(&self, kg: KeyGroup, out: &mut Vec<u8>) -> Result<()>;
    /// Loads what [`snapshot_key_group`](Self::snapshot_key_group) wrote (possibly by a store
    /// of another parallelism), one blob per key group. States must be registered first;
    /// values of states that are no longer registered are skipped. A backend may decode
    /// large restores in the background: every access waits for the key group it touches.
    fn restore_key_groups(&mut self, groups: Vec<(KeyGroup, Bytes)>) -> Result<()>;
    /// An error found while decoding restored state in the background (a key group that
    /// did not decode). Keyed operators call it before they emit anything, so a task never
    /// goes on without part of its state.
    fn check(&mut self) -> Result<()> {
        Ok(())
    }
    /// Decodes whatever restored state is still pending, and reports errors.
    fn finish_restore(&mut self) -> Result<()> {
        self.check()
    }
    /// The timer service of the operator that owns this store: all in memory, or (disk
    /// backend) spilling to the store's disk beyond its earliest timers.
    fn timer_service(&self) -> Result<TimerService> {
        Ok(TimerService::default())
    }
    /// Number of values stored in key group `kg` (a capacity hint for snapshots).
    fn key_group_len(&self, _kg: KeyGroup) -> usize {
        0
    }
    /// Called on the task thread at a snapshot: a consistent view of the state as it is now,
    /// which another thread can encode while this store goes on changing (the asynchronous
    /// part of a checkpoint). `None` when the backend has no such view: then the snapshot
    /// is encoded on the task thread ([`snapshot_key_group`](Self::snapshot_key_group)).
    /// With the view comes a local directory where the snapshot's state file is written
    /// before it is uploaded (so that it never has to fit in memory). `barrier` says which
    /// snapshot this is (with incremental checkpoints, the view may hold only what changed
    /// since its base).
    fn snapshot_view(
        &mut self,
        _barrier: &crate::checkpoint::Barrier,
    ) -> Result<Option<(Box<dyn KeyGroupView>, PathBuf)>> {
        Ok(None)
    }
}

/// A store's state as of a snapshot, readable off the task thread.
pub trait KeyGroupView: Send {
    /// The key groups it holds.
    fn key_groups(&self) -> Range<KeyGroup>;
    /// Encodes every value of key group `kg` as [`KeyedStore::snapshot_key_group`] does.
    fn write_key_group(&self, kg: KeyGroup, out: &mut Vec<u8>) -> Result<()>;
    /// Incremental checkpoints: the checkpoint whose snapshot this one adds to (then only
    /// [`write_changes`](Self::write_changes) is called); `None` when it is whole.
    fn base(&self) -> Option<crate::checkpoint::CheckpointId> {
        None
    }
    /// Incremental checkpoints: whether later snapshots may build on this one.
    fn shared(&self) -> bool {
        false
    }
    /// Incremental checkpoints: what changed in key group `kg` since the base: the values
    /// set (`values`, encoded as [`write_key_group`](Self::write_key_group) does), the
    /// values removed (`removed`, the same with empty values), and the timers whose
    /// presence may have changed.
    fn write_changes(
        &self,
        _kg: KeyGroup,
        _values: &mut Vec<u8>,
        _removed: &mut Vec<u8>,
        _timers: &mut Vec<(TimeDomain, Timer)>,
    ) -> Result<()> {
        Err(crate::error::Error::Checkpoint(
            "this state backend writes whole snapshots only".into(),
        ))
    }
}
