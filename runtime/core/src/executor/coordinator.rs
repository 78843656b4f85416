//! The checkpoint coordinator, the job master's checkpointing half: triggers a checkpoint or
//! savepoint by injecting barriers at the sources, collects every task's acknowledgement and
//! state, writes state files and `_metadata` to checkpoint storage, completes or abandons
//! the checkpoint, and retires old ones.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, unbounded};

use crate::checkpoint::format::{
    METADATA_FORMAT, OperatorMetadata, SHARED_DIR, SubtaskMetadata, shared_file_checkpoint,
};
use crate::checkpoint::restore::{self, checkpoint_ids};
use crate::checkpoint::writer::StateHandles;
use crate::checkpoint::{
    Barrier, CheckpointId, CheckpointMetadata, CheckpointStorage, FORMAT_VERSION, SnapshotKind,
};
use crate::error::{Error, Result};
use crate::graph::NodeId;
use crate::operator::now_millis;
use crate::task::{TaskControl, TaskStates};

use super::deploy::*;
use super::job::*;
use super::master::*;

/// The result of writing one task's snapshot.
pub(super) struct Upload {
    pub(super) id: CheckpointId,
    pub(super) result: Result<StateHandles>,
}

/// A checkpoint or savepoint in flight.
pub(super) struct Pending {
    pub(super) barrier: Barrier,
    pub(super) started: Instant,
    pub(super) storage: CheckpointStorage,
    /// Directory of the checkpoint within `storage`.
    pub(super) dir: String,
    pub(super) acked: Vec<bool>,
    /// Task snapshots this master is still writing.
    pub(super) uploads: usize,
    pub(super) subtasks: HashMap<NodeId, Vec<SubtaskMetadata>>,
    pub(super) reply: Option<Sender<Result<String>>>,
    /// The longest synchronous part of a task's snapshot so far.
    pub(super) sync: Duration,
}

impl Pending {
    /// Records the handles of a task's written snapshot.
    pub(super) fn add(&mut self, handles: StateHandles) {
        for (node, meta) in handles {
            self.subtasks.entry(node).or_default().push(meta);
        }
    }
}

/// How long the end of a job waits for the state files of checkpoints it gave up, so that
/// none lands after their directory is deleted.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// An attempt's checkpoints: those in flight, and those given up (failed or abandoned)
/// whose state files are still being written. A given-up checkpoint's directory is deleted
/// when its last upload returns: deleted earlier, a file landing afterwards would leave an
/// incomplete directory behind, one that `retire` would otherwise count as retained.
#[derive(Default)]
pub(super) struct InFlight {
    pub(super) pending: Vec<Pending>,
    dropped: Vec<Pending>,
}

impl InFlight {
    /// Gives a checkpoint up: its directory goes now, or when its last upload returns.
    fn drop_checkpoint(&mut self, p: Pending) {
        if p.uploads == 0 {
            let _ = p.storage.delete_dir(&p.dir);
        } else {
            self.dropped.push(p);
        }
    }

    /// A task's snapshot is written: its handles go to the checkpoint. The error when its
    /// checkpoint is still pending (to fail it).
    pub(super) fn uploaded(&mut self, up: Upload) -> Option<Error> {
        if let Some(p) = self.pending.iter_mut().find(|p| p.barrier.id == up.id) {
            p.uploads = p.uploads.saturating_sub(1);
            return match up.result {
                Ok(handles) => {
                    p.add(handles);
                    None
                }
                Err(e) => Some(e),
            };
        }
        if let Some(i) = self.dropped.iter().position(|p| p.barrier.id == up.id) {
            self.dropped[i].uploads = self.dropped[i].uploads.saturating_sub(1);
            if self.dropped[i].uploads == 0 {
                let p = self.dropped.remove(i);
                let _ = p.storage.delete_dir(&p.dir);
            }
        }
        None
    }

    /// Whether checkpoint `id` is pending or still being given up (not for `retire`).
    fn holds(&self, id: CheckpointId) -> bool {
        self.pending
            .iter()
            .chain(&self.dropped)
            .any(|p| p.barrier.id == id)
    }

    /// At the end of a job (nothing pending any more): waits for the uploads of the
    /// checkpoints given up, then deletes what is left of them.
    pub(super) fn settle(&mut self, uploads: &Receiver<Upload>) {
        let give_up = Instant::now() + SETTLE_TIMEOUT;
        while !self.dropped.is_empty() {
            match uploads.recv_deadline(give_up) {
                Ok(up) => {
                    self.uploaded(up);
                }
                Err(_) => break,
            }
        }
        for p in self.dropped.drain(..) {
            tracing::warn!(
                checkpoint = p.barrier.id,
                uploads = p.uploads,
                "state files of an abandoned checkpoint still being written; deleting its directory now"
            );
            let _ = p.storage.delete_dir(&p.dir);
        }
    }
}

/// Keeps the newest `keep` complete checkpoints of `job` up to `newest` and deletes the
/// other directories up to it: older complete ones, and incomplete ones (given up, or left
/// by a process that died) that are not `in_flight`. Only complete checkpoints count as
/// retained, as in Flink. When storage cannot tell whether a checkpoint is complete,
/// nothing is deleted.
///
/// Then the files that incremental checkpoints share (`{job}/shared/`) go when nothing
/// refers to them any more: no retained checkpoint (as their `_metadata` says, so this
/// holds across a jobmanager's restart), no checkpoint in flight (`in_flight`, and files
/// written after `newest`), and nothing in `protected` (the files of the bases that
/// checkpoints in flight build on).
fn retire(
    storage: &CheckpointStorage,
    job: &str,
    newest: CheckpointId,
    keep: usize,
    in_flight: impl Fn(CheckpointId) -> bool,
    protected: &HashSet<String>,
) {
    let ids = match checkpoint_ids(storage, job) {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list checkpoints");
            return;
        }
    };
    let mut kept = 0;
    let mut referenced: HashSet<String> = protected.clone();
    // Whether every checkpoint that may refer to a shared file was read.
    let mut all_read = true;
    for id in ids {
        let dir = format!("{job}/chk-{id}");
        if id > newest || in_flight(id) {
            // Newer or still in flight: any _metadata it has refers to what it needs.
            match storage.get(&format!("{dir}/_metadata")) {
                Ok(Some(m)) => note_shared(&m, &dir, &mut referenced, &mut all_read),
                Ok(None) => {}
                Err(_) => all_read = false,
            }
            continue;
        }
        if kept < keep {
            match storage.get(&format!("{dir}/_metadata")) {
                Ok(Some(m)) => {
                    kept += 1;
                    note_shared(&m, &dir, &mut referenced, &mut all_read);
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(checkpoint = id, error = %e, "cannot read a checkpoint's _metadata; retiring none");
                    return;
                }
            }
        }
        if let Err(e) = storage.delete_dir(&dir) {
            tracing::warn!(checkpoint = id, error = %e, "cannot delete old checkpoint");
        }
    }
    if !all_read {
        return;
    }
    let shared = format!("{job}/{SHARED_DIR}");
    let files = match storage.list_files(&shared) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the shared state files");
            return;
        }
    };
    for name in files {
        let path = format!("{SHARED_DIR}/{name}");
        let written_by = shared_file_checkpoint(&name);
        let settled = written_by.is_some_and(|id| id <= newest && !in_flight(id));
        if settled && !referenced.contains(&path) {
            if let Err(e) = storage.delete(&format!("{shared}/{name}")) {
                tracing::warn!(file = %path, error = %e, "cannot delete a shared state file");
            }
        }
    }
}

/// Adds the shared files `_metadata` bytes `m` refer to; clears `all_read` when they
/// cannot be parsed (then no shared file may be deleted).
fn note_shared(m: &[u8], dir: &str, referenced: &mut HashSet<String>, all_read: &mut bool) {
    match CheckpointMetadata::parse(m, dir) {
        Ok(meta) => referenced.extend(meta.shared_files().map(|f| f.path.clone())),
        Err(e) => {
            tracing::warn!(checkpoint = %dir, error = %e, "unreadable _metadata; keeping every shared state file");
            *all_read = false;
        }
    }
}

impl Master {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn trigger(
        &mut self,
        attempt: &Attempt,
        pending: &mut Vec<Pending>,
        storage: CheckpointStorage,
        dir: String,
        kind: SnapshotKind,
        stop: bool,
        reply: Option<Sender<Result<String>>>,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        // Incremental: stores that took part in the newest complete checkpoint write only
        // their changes since.
        let base = match kind {
            SnapshotKind::Checkpoint if self.plan.graph.config.state_backend.incremental => {
                self.completed.keys().next_back().copied()
            }
            _ => None,
        };
        let barrier = Barrier {
            id,
            kind,
            stop,
            base,
        };
        let target: (Arc<str>, Arc<str>) = (storage.url().into(), dir.as_str().into());
        pending.push(Pending {
            barrier,
            started: Instant::now(),
            storage,
            dir,
            acked: vec![false; attempt.tasks.len()],
            uploads: 0,
            subtasks: HashMap::new(),
            reply,
            sync: Duration::ZERO,
        });
        self.shared.stats(|s| s.triggered += 1);
        if self.plan.remote.is_some() {
            // Taskmanagers write their tasks' snapshots themselves: where, first.
            attempt.broadcast(TaskControl::Target {
                id,
                storage: target.0,
                dir: target.1,
            });
        }
        for t in &attempt.sources {
            attempt.controls[*t].send(TaskControl::Trigger(barrier));
        }
    }

    pub(super) fn savepoint_storage(&self, dir: Option<&str>) -> Result<CheckpointStorage> {
        let cfg = &self.plan.graph.config.checkpoint;
        let dir = dir.or(cfg.savepoint_dir.as_deref()).ok_or_else(|| {
            Error::config(
                "state.savepoints.dir",
                "no savepoint directory given and none configured",
            )
        })?;
        CheckpointStorage::open(dir, &cfg.storage_options)
    }

    /// Starts writing a task's snapshot; its handles come back as an [`Upload`].
    pub(super) fn store_states(&self, p: &mut Pending, subtask: usize, states: TaskStates) {
        p.uploads += 1;
        let tx = self.upload_tx.clone();
        let id = p.barrier.id;
        self.layout
            .write(id, subtask, states, &p.storage, &p.dir, move |result| {
                let _ = tx.send(Upload { id, result });
            });
    }

    pub(super) fn metadata(
        &self,
        id: CheckpointId,
        kind: SnapshotKind,
        finished: bool,
        mut subtasks: HashMap<NodeId, Vec<SubtaskMetadata>>,
    ) -> CheckpointMetadata {
        let graph = &self.plan.graph;
        let operators = graph
            .nodes
            .iter()
            .filter_map(|n| {
                let mut subs = subtasks.remove(&n.id)?;
                subs.sort_by_key(|s| s.subtask);
                Some(OperatorMetadata {
                    uid: n.uid(),
                    name: n.name.clone(),
                    parallelism: n.parallelism,
                    state_layout: Some(n.state_layout().to_string()),
                    subtasks: subs,
                })
            })
            .collect();
        CheckpointMetadata {
            format: METADATA_FORMAT.into(),
            version: FORMAT_VERSION,
            job_id: self.plan.job_id.clone(),
            checkpoint_id: id,
            kind,
            timestamp_ms: now_millis(),
            max_parallelism: graph.config.max_parallelism,
            finished,
            operators,
        }
    }

    /// Incremental checkpoints: completes the handles of instances that wrote only their
    /// changes with the files of their base, so `_metadata` names every file of each.
    fn chain_to_bases(&self, subtasks: &mut HashMap<NodeId, Vec<SubtaskMetadata>>) -> Result<()> {
        let graph = &self.plan.graph;
        for (node, subs) in subtasks.iter_mut() {
            let uid = graph.nodes.get(*node).map(|n| n.uid()).unwrap_or_default();
            for st in subs.iter_mut() {
                let Some(base) = st.base else { continue };
                let earlier = self
                    .completed
                    .get(&base)
                    .and_then(|m| m.operators.iter().find(|o| o.uid == uid))
                    .and_then(|o| {
                        o.subtasks
                            .iter()
                            .find(|b| b.subtask == st.subtask && b.key_groups == st.key_groups)
                    })
                    .ok_or_else(|| {
                        Error::Checkpoint(format!(
                            "operator {uid} instance {} wrote its changes since checkpoint {base}, which this jobmanager does not hold",
                            st.subtask
                        ))
                    })?;
                if earlier.chain.is_empty() {
                    return Err(Error::Checkpoint(format!(
                        "operator {uid} instance {} wrote its changes since checkpoint {base}, where it has no whole snapshot",
                        st.subtask
                    )));
                }
                let mut chain = earlier.chain.clone();
                chain.append(&mut st.chain);
                st.chain = chain;
            }
        }
        Ok(())
    }

    /// Writes `_metadata` (the completion marker) and retires old checkpoints.
    pub(super) fn complete(
        &mut self,
        mut p: Pending,
        inflight: &InFlight,
    ) -> Result<(String, bool)> {
        let id = p.barrier.id;
        if let Err(e) = self.chain_to_bases(&mut p.subtasks) {
            if let Some(reply) = p.reply.take() {
                let _ = reply.send(Err(Error::Checkpoint(e.to_string())));
            }
            return Err(e);
        }
        let meta = self.metadata(id, p.barrier.kind, false, p.subtasks);
        let size = meta.state_size();
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| Error::Checkpoint(format!("encoding _metadata: {e}")))?;
        let r = p
            .storage
            .put(&format!("{}/_metadata", p.dir), Bytes::from(json));
        let path = p.storage.url_of(&p.dir);
        if let Err(e) = r {
            if let Some(reply) = p.reply {
                let _ = reply.send(Err(Error::Checkpoint(format!("{path}: {e}"))));
            }
            return Err(e);
        }
        if p.barrier.stop
            && let Some(storage) = &self.plan.storage
        {
            // Before the sinks commit it: see `restore::STOP_SAVEPOINT`.
            let marker = serde_json::json!({ "id": id, "path": path }).to_string();
            let file = format!("{}/{}", self.plan.job_id, restore::STOP_SAVEPOINT);
            if let Err(e) = storage.put(&file, Bytes::from(marker)) {
                if let Some(reply) = p.reply {
                    let _ = reply.send(Err(Error::Checkpoint(format!("{path}: {e}"))));
                }
                return Err(e);
            }
        }
        if p.barrier.kind == SnapshotKind::Checkpoint
            && self.plan.graph.config.state_backend.incremental
        {
            self.completed.insert(id, Arc::new(meta.clone()));
            let keep = self.plan.graph.config.checkpoint.retained.max(1) + 2;
            while self.completed.len() > keep {
                self.completed.pop_first();
            }
        }
        let done = CompletedCheckpoint {
            id,
            kind: p.barrier.kind,
            path: path.clone(),
            timestamp_ms: meta.timestamp_ms,
            duration: p.started.elapsed(),
            state_size: size,
            full_size: meta.full_size(),
            sync_duration: p.sync,
        };
        tracing::info!(checkpoint = id, path = %path, bytes = size, ms = done.duration.as_millis() as u64, "checkpoint complete");
        let incremental = done.full_size > done.state_size;
        self.shared.stats(|s| {
            s.completed += 1;
            s.incremental += u64::from(incremental);
            s.latest = Some(done.clone());
            s.history.push(done);
            if s.history.len() > 16 {
                s.history.remove(0);
            }
        });
        if p.barrier.stop {
            // The job is stopped when its tasks have committed the savepoint and ended, and
            // the end is recorded: only then is the request answered (`Master::stop`).
            self.stop = Some(StopSavepoint {
                id,
                storage: p.storage.clone(),
                dir: p.dir.clone(),
                path: path.clone(),
                reply: p.reply.take(),
            });
        } else if let Some(reply) = p.reply {
            let _ = reply.send(Ok(path.clone()));
        }
        if p.barrier.kind == SnapshotKind::Checkpoint {
            self.retire(id, inflight);
        }
        Ok((path, p.barrier.stop))
    }

    /// Retires the checkpoints before `newest` beyond `state.checkpoints.num-retained`
    /// (see [`retire`]).
    pub(super) fn retire(&self, newest: CheckpointId, inflight: &InFlight) {
        if let Some(storage) = &self.plan.storage {
            let keep = self.plan.graph.config.checkpoint.retained.max(1);
            // The files of the bases that checkpoints in flight build on.
            let protected: HashSet<String> = inflight
                .pending
                .iter()
                .filter_map(|p| p.barrier.base)
                .filter_map(|b| self.completed.get(&b))
                .flat_map(|m| m.shared_files().map(|f| f.path.clone()))
                .collect();
            retire(
                storage,
                &self.plan.job_id,
                newest,
                keep,
                |id| inflight.holds(id),
                &protected,
            );
        }
    }

    /// Gives up every checkpoint in flight when its attempt ends: tells whoever waits for
    /// one (with `error`) and deletes what was written.
    pub(super) fn abandon(&self, inflight: &mut InFlight, error: impl Fn(CheckpointId) -> Error) {
        for p in std::mem::take(&mut inflight.pending) {
            if let Some(r) = &p.reply {
                let _ = r.send(Err(error(p.barrier.id)));
            }
            inflight.drop_checkpoint(p);
        }
    }

    pub(super) fn fail_checkpoint(
        &self,
        inflight: &mut InFlight,
        id: CheckpointId,
        why: &str,
        consecutive: &mut u32,
    ) {
        let Some(i) = inflight.pending.iter().position(|p| p.barrier.id == id) else {
            return;
        };
        let mut p = inflight.pending.remove(i);
        tracing::warn!(checkpoint = id, reason = why, "checkpoint failed");
        self.shared
            .stats(|s| s.checkpoint_failed(id, why.to_string()));
        if let Some(reply) = p.reply.take() {
            let _ = reply.send(Err(Error::Checkpoint(format!(
                "savepoint {id} failed: {why}"
            ))));
        } else {
            *consecutive += 1;
        }
        inflight.drop_checkpoint(p);
    }

    /// Every task finished: store their final states as a finished checkpoint (when
    /// checkpointing is configured), so a restart after this point restores the end state.
    pub(super) fn final_checkpoint(
        &mut self,
        attempt: &Attempt,
        inflight: &InFlight,
        finished: &mut [Option<TaskStates>],
    ) -> Result<()> {
        let Some(storage) = self.plan.storage.clone() else {
            return Ok(());
        };
        let id = self.next_id;
        self.next_id += 1;
        let dir = format!("{}/chk-{id}", self.plan.job_id);
        let (tx, rx) = unbounded();
        let mut p = Pending {
            barrier: Barrier::checkpoint(id),
            started: Instant::now(),
            storage: storage.clone(),
            dir: dir.clone(),
            acked: Vec::new(),
            uploads: 0,
            subtasks: HashMap::new(),
            reply: None,
            sync: Duration::ZERO,
        };
        let upload_tx = std::mem::replace(&mut self.upload_tx, tx);
        for (task, states) in finished.iter_mut().enumerate() {
            let (_, subtask, _) = attempt.tasks[task];
            if let Some(states) = states.take() {
                self.store_states(&mut p, subtask, states);
            }
        }
        let mut result = Ok(());
        for _ in 0..p.uploads {
            match rx.recv() {
                Ok(Upload { result: Ok(h), .. }) => p.add(h),
                Ok(Upload { result: Err(e), .. }) => result = result.and(Err(e)),
                Err(_) => break,
            }
        }
        self.upload_tx = upload_tx;
        result?;
        let meta = self.metadata(id, SnapshotKind::Checkpoint, true, p.subtasks);
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| Error::Checkpoint(format!("encoding _metadata: {e}")))?;
        storage.put(&format!("{dir}/_metadata"), Bytes::from(json))?;
        self.retire(id, inflight);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::api::StreamExecutionEnvironment;
    use crate::checkpoint::{CheckpointStorage, SnapshotKind};
    use crate::testing::SequenceSource;

    /// `_metadata` of checkpoint `id` whose one instance is made of shared files `chain`.
    fn incremental_metadata(id: u64, chain: &[&str]) -> Vec<u8> {
        use crate::checkpoint::format::{OperatorMetadata, SharedFile, SubtaskMetadata};
        let meta = crate::checkpoint::CheckpointMetadata {
            format: super::METADATA_FORMAT.into(),
            version: super::FORMAT_VERSION,
            job_id: "job".into(),
            checkpoint_id: id,
            kind: SnapshotKind::Checkpoint,
            timestamp_ms: 0,
            max_parallelism: 128,
            finished: false,
            operators: vec![OperatorMetadata {
                uid: "a".into(),
                name: "a".into(),
                parallelism: 1,
                state_layout: None,
                subtasks: vec![SubtaskMetadata {
                    key_groups: [0, 128],
                    chain: chain
                        .iter()
                        .map(|f| SharedFile {
                            path: format!("shared/{f}"),
                            size: 1,
                            crc32: 0,
                        })
                        .collect(),
                    ..Default::default()
                }],
            }],
        };
        serde_json::to_vec(&meta).expect("json")
    }

    #[test]
    fn shared_files_go_when_no_retained_or_pending_checkpoint_needs_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let job = dir.path().join("job");
        for (id, chain) in [
            (1, vec!["a-0-1.state"]),
            (2, vec!["a-0-1.state", "a-0-2.state"]),
            (3, vec!["a-0-1.state", "a-0-2.state", "a-0-3.state"]),
            (4, vec!["a-0-4.state"]),
        ] {
            let d = job.join(format!("chk-{id}"));
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join("_metadata"), incremental_metadata(id, &chain)).expect("write");
        }
        std::fs::create_dir_all(job.join("shared")).expect("mkdir");
        // 1–4 as their checkpoints name them; 5 written by a checkpoint that failed; 6 by
        // one in flight; 7 by one after the newest.
        for n in 1..=7 {
            std::fs::write(job.join(format!("shared/a-0-{n}.state")), b"x").expect("write");
        }
        let storage = CheckpointStorage::open(
            &dir.path().to_string_lossy(),
            &std::collections::BTreeMap::new(),
        )
        .expect("storage");
        // 4 just completed (a whole one); two are retained. Nothing in memory says what
        // refers to what: a jobmanager that just restarted retires the same way.
        let protected = std::collections::HashSet::new();
        super::retire(&storage, "job", 5, 2, |id| id == 6, &protected);
        let shared = |storage: &CheckpointStorage| {
            let mut f = storage.list_files("job/shared").expect("list");
            f.sort();
            f
        };
        assert_eq!(
            shared(&storage),
            [
                "a-0-1.state",
                "a-0-2.state",
                "a-0-3.state",
                "a-0-4.state",
                "a-0-6.state",
                "a-0-7.state"
            ],
            "chk-3 (retained) needs 1–3, chk-4 needs 4; 5 is nobody's"
        );
        // A checkpoint in flight builds on chk-3 while a whole chk-8 completes: chk-3 is
        // retired, its files stay for the one in flight.
        let d = job.join("chk-8");
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(
            d.join("_metadata"),
            incremental_metadata(8, &["a-0-8.state"]),
        )
        .expect("write");
        std::fs::write(job.join("shared/a-0-8.state"), b"x").expect("write");
        let protected: std::collections::HashSet<String> = [
            "shared/a-0-1.state",
            "shared/a-0-2.state",
            "shared/a-0-3.state",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        super::retire(&storage, "job", 8, 2, |_| false, &protected);
        assert!(!job.join("chk-3").exists(), "chk-3 retired");
        assert_eq!(
            shared(&storage),
            [
                "a-0-1.state",
                "a-0-2.state",
                "a-0-3.state",
                "a-0-4.state",
                "a-0-8.state"
            ]
        );
        // Once nothing builds on them, they go.
        super::retire(&storage, "job", 8, 2, |_| false, &Default::default());
        assert_eq!(shared(&storage), ["a-0-4.state", "a-0-8.state"]);
    }

    #[test]
    fn only_complete_checkpoints_count_as_retained_and_incomplete_ones_go() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (id, complete) in [(1, true), (2, true), (3, false), (4, true), (5, false)] {
            let d = dir.path().join(format!("job/chk-{id}"));
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join("op-0.state"), b"state").expect("write");
            if complete {
                std::fs::write(d.join("_metadata"), b"{}").expect("write");
            }
        }
        let storage = CheckpointStorage::open(
            &dir.path().to_string_lossy(),
            &std::collections::BTreeMap::new(),
        )
        .expect("storage");
        // 5 is still in flight; 4 just completed.
        super::retire(
            &storage,
            "job",
            4,
            2,
            |id| id == 5,
            &std::collections::HashSet::new(),
        );
        let mut left: Vec<String> = std::fs::read_dir(dir.path().join("job"))
            .expect("job dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        left.sort();
        assert_eq!(left, ["chk-2", "chk-4", "chk-5"]);
    }

    #[test]
    fn periodic_checkpoints_complete_with_metadata_and_only_the_retained_ones_stay() {
        let dir = tempfile::tempdir().expect("temp dir");
        // An incomplete checkpoint left by a process that died: neither restored nor
        // counted as retained, and deleted.
        let stray = dir.path().join("00000000000000000000000000000abc/chk-5");
        std::fs::create_dir_all(&stray).expect("mkdir");
        std::fs::write(stray.join("op-0.state"), b"partial").expect("write");
        let env = StreamExecutionEnvironment::new();
        let d = dir.path().to_string_lossy().to_string();
        env.configure(move |c| {
            c.job_id = Some("00000000000000000000000000000abc".into());
            c.checkpoint.dir = Some(d);
            c.checkpoint.interval = Some(Duration::from_millis(10));
            c.checkpoint.retained = 2;
        });
        let mut src = SequenceSource::new(3_000, 10);
        src.pause = Duration::from_millis(1);
        let _ = env.from_source(src, None).collect();
        let job = env.execute_async().expect("starts");
        let stats = job.checkpoint_stats_handle();
        job.wait().expect("finishes");
        let s = stats();
        assert!(s.completed >= 3, "{s:?}");
        assert_eq!(s.failed, 0, "{s:?}");
        assert!(s.restored.is_none(), "{s:?}");
        let latest = s.latest.expect("a latest checkpoint");
        assert_eq!(latest.kind, SnapshotKind::Checkpoint);
        assert!(latest.state_size > 0, "the source's position is state");
        let job_dir = dir.path().join("00000000000000000000000000000abc");
        let mut kept: Vec<String> = std::fs::read_dir(&job_dir)
            .expect("job dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("chk-"))
            .collect();
        kept.sort();
        assert_eq!(kept.len(), 2, "retained {kept:?}");
        assert!(!stray.exists(), "the incomplete checkpoint stays: {kept:?}");
        assert!(
            kept.iter()
                .all(|k| job_dir.join(k).join("_metadata").exists()),
            "every retained checkpoint is complete: {kept:?}"
        );
    }
}
