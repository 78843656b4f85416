//! What changed in a disk-backend store since a checkpoint: the bookkeeping behind
//! incremental checkpoints (`execution.checkpointing.incremental`).
//!
//! Every address whose value is written to or removed from the LSM tree (a cache eviction,
//! the flush before a snapshot, a removal) and every timer registered, deleted or fired is
//! marked in the current *epoch*: a keyspace of its own holding only keys, `kg (u16 BE) ·
//! 0 · state (u16 BE) · key · namespace` for values and `kg (u16 BE) · 1 · domain · timer`
//! for timers, so one key group's marks are one key range. A checkpoint's snapshot seals the
//! epoch under the checkpoint's id and opens the next. When the barrier names a base (the
//! newest complete checkpoint) that this store took part in, the snapshot holds only the
//! addresses marked in the epochs after the base, each with its value as of the snapshot
//! or as removed: what changed, however often it changed. Sealed epochs up to the base are
//! dropped, since the jobmanager never goes back to an older base.
//!
//! After [`MAX_CHAIN`] snapshots of changes in a row, a whole one starts a new chain, so a
//! restore never reads a long history.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::TimeDomain;
use super::timer_spill;
use super::timers::Timer;
use crate::checkpoint::{Barrier, CheckpointId, FINAL_CHECKPOINT, SnapshotKind};
use crate::error::{Error, Result};

/// Snapshots of changes after a whole one, at most, before the next whole one.
pub(crate) const MAX_CHAIN: u32 = 8;

/// Epochs kept at most when no barrier names a base (checkpoints that keep failing): the
/// oldest go, and with them the snapshots that could build on them.
const MAX_EPOCHS: usize = 64;

/// Marks buffered before they are written (about 40 bytes each).
const BUFFERED_MARKS: usize = 16 * 1024;

/// Kind byte of a value's mark.
pub(crate) const VALUE_MARK: u8 = 0;
/// Kind byte of a timer's mark.
pub(crate) const TIMER_MARK: u8 = 1;

/// The change log of one store, shared with its timer service.
#[derive(Clone)]
pub(crate) struct ChangeLog(Arc<Mutex<Inner>>);

struct Inner {
    db: fjall::Database,
    /// Prefix of the epochs' keyspace names.
    name: String,
    max_parallelism: u16,
    memtable: u64,
    /// The epoch marks go to now; made by the first mark after a seal, so that making it
    /// is not part of a snapshot's synchronous part.
    open: Option<fjall::Keyspace>,
    next_epoch: u64,
    /// Epochs sealed by checkpoints' snapshots, by checkpoint id.
    sealed: BTreeMap<CheckpointId, fjall::Keyspace>,
    /// Marks not yet written.
    buffered: Vec<Vec<u8>>,
    /// Checkpoints this store took a snapshot for, with how many snapshots of changes that
    /// snapshot is from a whole one.
    taken: BTreeMap<CheckpointId, u32>,
    error: Option<String>,
}

/// How a store's snapshot for a checkpoint is written.
pub(crate) struct Increment {
    /// The snapshot holds the changes since this checkpoint (`None`: whole).
    pub base: Option<CheckpointId>,
    /// The epochs marking those changes.
    pub epochs: Vec<fjall::Keyspace>,
    /// The snapshot may be a base of later ones (it goes to the shared directory).
    pub shared: bool,
}

fn state_err(e: impl std::fmt::Display) -> Error {
    Error::state(
        "disk state backend",
        format!("incremental checkpoints: {e}"),
    )
}

impl ChangeLog {
    pub(crate) fn new(
        db: fjall::Database,
        store: u64,
        max_parallelism: u16,
        memtable: u64,
    ) -> Result<Self> {
        Ok(ChangeLog(Arc::new(Mutex::new(Inner {
            db,
            name: format!("changes-{store}-"),
            max_parallelism,
            memtable,
            open: None,
            next_epoch: 0,
            sealed: BTreeMap::new(),
            buffered: Vec::new(),
            taken: BTreeMap::new(),
            error: None,
        }))))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> Option<T> {
        self.0.lock().ok().map(|mut g| f(&mut g))
    }

    /// Calls `f` to mark something, unless no snapshot was taken yet: changes before the
    /// first snapshot are in it, and no later one can build on an earlier (so filling and
    /// restoring a store cost nothing here).
    fn mark(&self, f: impl FnOnce(u16) -> Vec<u8>) {
        self.with(|i| {
            if !i.taken.is_empty() {
                let mark = f(i.max_parallelism);
                i.buffer(mark);
            }
        });
    }

    /// Marks the value at `disk_key` (the store's key: `kg · state · key · namespace`).
    pub(crate) fn mark_value(&self, disk_key: &[u8]) {
        self.mark(|_| {
            let mut mark = Vec::with_capacity(disk_key.len() + 1);
            mark.extend_from_slice(&disk_key[..2]);
            mark.push(VALUE_MARK);
            mark.extend_from_slice(&disk_key[2..]);
            mark
        });
    }

    /// Marks a timer.
    pub(crate) fn mark_timer(&self, domain: TimeDomain, timer: &Timer) {
        self.mark(|mp| {
            let mut mark = Vec::with_capacity(48);
            mark.extend_from_slice(&timer.1.key_group(mp).to_be_bytes());
            mark.push(TIMER_MARK);
            mark.push(u8::from(domain == TimeDomain::ProcessingTime));
            mark.extend_from_slice(&timer_spill::encode(timer));
            mark
        });
    }

    /// The first error met writing marks.
    pub(crate) fn check(&self) -> Result<()> {
        match self.with(|i| i.error.clone()) {
            Some(None) => Ok(()),
            Some(Some(e)) => Err(state_err(e)),
            None => Err(state_err("lock poisoned")),
        }
    }

    /// Called on the task thread when the store's snapshot for `barrier` is taken, after
    /// the store wrote its cache out and before it pins its view: says what the snapshot
    /// holds, and starts the next epoch.
    pub(crate) fn seal(&self, barrier: &Barrier) -> Result<Increment> {
        let mut g = self.0.lock().map_err(|_| state_err("lock poisoned"))?;
        g.flush();
        if let Some(e) = g.error.clone() {
            return Err(state_err(e));
        }
        // Savepoints (self-contained) and the job's final snapshot are whole, and seal
        // nothing: their changes stay in the open epoch for the next checkpoint.
        if barrier.kind != SnapshotKind::Checkpoint || barrier.id == FINAL_CHECKPOINT {
            return Ok(Increment {
                base: None,
                epochs: Vec::new(),
                shared: false,
            });
        }
        // An epoch in which nothing was marked has no keyspace.
        if let Some(sealed) = g.open.take() {
            g.sealed.insert(barrier.id, sealed);
        }
        let base = barrier
            .base
            .filter(|b| *b < barrier.id && g.taken.get(b).is_some_and(|n| *n < MAX_CHAIN));
        let increment = match base {
            Some(b) => {
                let depth = g.taken.get(&b).copied().unwrap_or(0) + 1;
                g.taken.insert(barrier.id, depth);
                Increment {
                    base: Some(b),
                    epochs: g
                        .sealed
                        .range(b + 1..=barrier.id)
                        .map(|(_, ks)| ks.clone())
                        .collect(),
                    shared: true,
                }
            }
            None => {
                g.taken.insert(barrier.id, 0);
                Increment {
                    base: None,
                    epochs: Vec::new(),
                    shared: true,
                }
            }
        };
        // Never again a base at or before the barrier's: what only such bases need goes.
        if let Some(b) = barrier.base {
            g.forget_through(b);
        }
        while g.sealed.len() > MAX_EPOCHS {
            if let Some((&oldest, _)) = g.sealed.first_key_value() {
                g.forget_through(oldest);
            }
        }
        Ok(increment)
    }
}

impl Inner {
    fn buffer(&mut self, mark: Vec<u8>) {
        if self.open.is_none() {
            match open_epoch(&self.db, &self.name, self.next_epoch, self.memtable) {
                Ok(ks) => {
                    self.open = Some(ks);
                    self.next_epoch += 1;
                }
                Err(e) => {
                    if self.error.is_none() {
                        self.error = Some(e.to_string());
                    }
                    return;
                }
            }
        }
        self.buffered.push(mark);
        if self.buffered.len() >= BUFFERED_MARKS {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let Some(open) = &self.open else {
            return;
        };
        if self.buffered.is_empty() {
            return;
        }
        let mut batch = self.db.batch();
        for mark in self.buffered.drain(..) {
            batch.insert(open, mark, []);
        }
        if let Err(e) = batch.commit()
            && self.error.is_none()
        {
            self.error = Some(format!("writing changes: {e}"));
        }
    }

    /// Drops the epochs sealed at or before `id`, and the snapshots before `id` (no later
    /// snapshot can build on them: only on `id` or later).
    fn forget_through(&mut self, id: CheckpointId) {
        let keep = self.sealed.split_off(&(id + 1));
        for (_, ks) in std::mem::replace(&mut self.sealed, keep) {
            if let Err(e) = self.db.delete_keyspace(ks) {
                tracing::warn!(error = %e, "could not delete a change epoch");
            }
        }
        let keep = self.taken.split_off(&id);
        self.taken = keep;
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let open = self.open.take();
        for ks in std::mem::take(&mut self.sealed).into_values().chain(open) {
            if let Err(e) = self.db.delete_keyspace(ks) {
                tracing::warn!(error = %e, "could not delete a change epoch");
            }
        }
    }
}

fn open_epoch(db: &fjall::Database, name: &str, n: u64, memtable: u64) -> Result<fjall::Keyspace> {
    db.keyspace(&format!("{name}{n}"), || {
        fjall::KeyspaceCreateOptions::default()
            .manual_journal_persist(true)
            .max_memtable_size(memtable)
    })
    .map_err(state_err)
}

/// The marks of key group `kg` in `epochs` as of `snapshot`, without repeats, in order
/// (values by state, key and namespace; then timers), each without its key group.
pub(crate) fn marks_of(
    snapshot: &fjall::Snapshot,
    epochs: &[fjall::Keyspace],
    kg: u16,
) -> Result<std::collections::BTreeSet<Vec<u8>>> {
    use fjall::Readable;
    let mut marks = std::collections::BTreeSet::new();
    for ks in epochs {
        for item in snapshot.prefix(ks, kg.to_be_bytes()) {
            let k = item
                .key()
                .map_err(|e| state_err(format!("reading changes: {e}")))?;
            marks.insert(k[2..].to_vec());
        }
    }
    Ok(marks)
}

/// A timer's mark (without its key group) back as its domain and timer.
pub(crate) fn decode_timer_mark(mark: &[u8]) -> Result<(TimeDomain, Timer)> {
    let (domain, rest) = match mark {
        [TIMER_MARK, 0, rest @ ..] => (TimeDomain::EventTime, rest),
        [TIMER_MARK, 1, rest @ ..] => (TimeDomain::ProcessingTime, rest),
        _ => return Err(state_err("a timer's mark is damaged")),
    };
    let timer = timer_spill::decode(rest).map_err(state_err)?;
    Ok((domain, timer))
}
