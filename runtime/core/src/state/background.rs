//! A restore that goes on while the task runs, shared by both backends: a worker thread
//! loads the restored key groups in order (the heap backend decodes them into tables, the
//! disk backend writes them into its LSM tree), and a task touching a key group first takes
//! what the worker finished, then loads the group itself if the worker has not started it,
//! or waits for the worker if it has. A restored task so processes again before all of its
//! state is loaded, and waits only for the key groups it touches.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::Receiver;

use super::restore_progress;
use crate::key::KeyGroup;

/// Loads a key group's blob.
pub(super) type Load<R> = dyn Fn(KeyGroup, &Bytes) -> R + Send + Sync;

/// A background restore in progress.
pub(super) struct BackgroundRestore<R> {
    /// By slot: the blob of a key group not loaded yet.
    pending: Vec<Option<Bytes>>,
    left: usize,
    /// Groups the worker has not taken yet.
    pub(super) queue: Arc<Mutex<VecDeque<(usize, Bytes)>>>,
    done: Receiver<(usize, R)>,
    load: Arc<Load<R>>,
    /// The store's first key group (slot 0).
    first: KeyGroup,
    started: Instant,
}

impl<R: Send + 'static> BackgroundRestore<R> {
    /// Starts loading `groups` into a store of `key_groups` (slot: the key group less
    /// the first); `None` when there is nothing to load.
    pub(super) fn start(
        key_groups: std::ops::Range<KeyGroup>,
        groups: Vec<(KeyGroup, Bytes)>,
        load: Arc<Load<R>>,
    ) -> Option<Self> {
        let first = key_groups.start;
        let mut pending: Vec<Option<Bytes>> = vec![None; key_groups.len().max(1)];
        let mut queue = VecDeque::with_capacity(groups.len());
        for (kg, bytes) in groups {
            let slot = usize::from(kg - first);
            pending[slot] = Some(bytes.clone());
            queue.push_back((slot, bytes));
        }
        let left = queue.len();
        if left == 0 {
            return None;
        }
        let queue = Arc::new(Mutex::new(queue));
        let (tx, rx) = crossbeam_channel::unbounded();
        let (worker_queue, worker_load) = (queue.clone(), load.clone());
        restore_progress::started();
        let spawned = std::thread::Builder::new()
            .name("restore-state".into())
            .spawn(move || {
                loop {
                    let next = worker_queue.lock().ok().and_then(|mut q| q.pop_front());
                    let Some((slot, bytes)) = next else { break };
                    let kg = first + slot as KeyGroup;
                    if tx.send((slot, worker_load(kg, &bytes))).is_err() {
                        break;
                    }
                }
                restore_progress::finished();
            });
        if let Err(e) = spawned {
            restore_progress::finished();
            // No worker: every group is loaded by the task when first touched.
            tracing::warn!(error = %e, "no state restore worker; restoring on access");
        }
        Some(BackgroundRestore {
            pending,
            left,
            queue,
            done: rx,
            load,
            first,
            started: Instant::now(),
        })
    }

    /// The blob of `slot` while it is not loaded.
    pub(super) fn pending(&self, slot: usize) -> Option<&Bytes> {
        self.pending.get(slot).and_then(Option::as_ref)
    }

    /// The first slot not loaded yet.
    pub(super) fn first_pending(&self) -> Option<usize> {
        self.pending.iter().position(Option::is_some)
    }

    /// Makes sure `slot` is loaded, handing `install` every group loaded meanwhile (`None`:
    /// the worker stopped before loading it). True when everything is loaded.
    pub(super) fn ready(&mut self, slot: usize, install: &mut dyn FnMut(usize, Option<R>)) -> bool {
        while let Ok((s, r)) = self.done.try_recv() {
            self.finished(s, Some(r), install);
        }
        if self.pending(slot).is_some() {
            let queued = self.queue.lock().ok().and_then(|mut q| {
                let at = q.iter().position(|(s, _)| *s == slot)?;
                q.remove(at)
            });
            match queued {
                Some((_, bytes)) => {
                    let r = (self.load)(self.first + slot as KeyGroup, &bytes);
                    self.finished(slot, Some(r), install);
                }
                // The worker is loading it: wait for it (and take what comes before).
                None => {
                    while self.pending(slot).is_some() {
                        match self.done.recv() {
                            Ok((s, r)) => self.finished(s, Some(r), install),
                            Err(_) => self.finished(slot, None, install),
                        }
                    }
                }
            }
        }
        if self.left == 0 {
            tracing::info!(
                key_groups = self.pending.len(),
                ms = self.started.elapsed().as_millis() as u64,
                "keyed state restored"
            );
        }
        self.left == 0
    }

    fn finished(&mut self, slot: usize, r: Option<R>, install: &mut dyn FnMut(usize, Option<R>)) {
        if self.pending.get_mut(slot).and_then(Option::take).is_some() {
            self.left -= 1;
        }
        install(slot, r);
    }

    /// Stops the worker after the group it is loading.
    pub(super) fn stop(&self) {
        if let Ok(mut q) = self.queue.lock() {
            q.clear();
        }
    }
}
