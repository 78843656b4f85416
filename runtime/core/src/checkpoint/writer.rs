//! Writing one task's snapshot to checkpoint storage: a state file per operator that has
//! state, uploaded in the background, and back the handles (file, size, checksum, key-group
//! range) that `_metadata` records. Where the task runs writes: the embedded executor's job
//! master for its own tasks, a taskmanager for the tasks it hosts, so that state never
//! travels to the jobmanager.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::format::{
    SHARED_DIR, SharedFile, SpooledFile, SubtaskMetadata, encode_state_file, shared_file_name,
    spool_state_file,
};
use super::{CheckpointId, CheckpointStorage, OperatorSnapshot};
use crate::error::{Error, Result};
use crate::graph::{JobGraph, NodeId};
use crate::key::key_group_range;
use crate::task::TaskStates;

/// What `_metadata` records of one task's snapshot: per operator, its instance's handle.
pub type StateHandles = Vec<(NodeId, SubtaskMetadata)>;

/// What naming and placing state files needs of a job's operators.
#[derive(Debug, Clone)]
pub struct StateLayout {
    /// By node: the operator's uid and parallelism.
    operators: HashMap<NodeId, (String, usize)>,
    max_parallelism: u16,
}

impl StateLayout {
    pub fn of(graph: &JobGraph) -> Self {
        StateLayout {
            operators: graph
                .nodes
                .iter()
                .map(|n| (n.id, (n.uid(), n.parallelism)))
                .collect(),
            max_parallelism: graph.config.max_parallelism,
        }
    }

    /// Writes the snapshot `id` of instance `subtask` under `dir` of `storage` (file
    /// `{uid}-{subtask}.state` per operator with state; with incremental checkpoints, a
    /// state that later checkpoints may build on goes to the shared directory next to
    /// `dir` instead, as `{uid}-{subtask}-{id}.state`) and calls `done` with the handles
    /// once every file is stored, or with the first error. Keyed state whose encoding was
    /// deferred (the asynchronous part of a disk-backend snapshot) is encoded on a thread
    /// of its own, so the caller is not held up by it, into a local file that is uploaded
    /// in parts, so the snapshot is never held in memory whole.
    pub fn write(
        &self,
        id: CheckpointId,
        subtask: usize,
        states: TaskStates,
        storage: &CheckpointStorage,
        dir: &str,
        done: impl FnOnce(Result<StateHandles>) + Send + 'static,
    ) {
        if states.iter().all(|(_, s)| s.deferred.is_none()) {
            return self.write_encoded(id, subtask, states, storage, dir, done);
        }
        let (layout, storage, dir) = (self.clone(), storage.clone(), dir.to_string());
        // Shared with the thread: `done` runs once, there or here when it cannot start.
        let done = Arc::new(Mutex::new(Some(done)));
        let on_thread = done.clone();
        let spawned = std::thread::Builder::new()
            .name("snapshot-encode".into())
            .spawn(move || {
                let Some(done) = on_thread.lock().ok().and_then(|mut d| d.take()) else {
                    return;
                };
                layout.write_encoded(id, subtask, states, &storage, &dir, done);
            });
        if let Err(e) = spawned
            && let Some(done) = done.lock().ok().and_then(|mut d| d.take())
        {
            done(Err(Error::io("start a snapshot encoding thread", "", e)));
        }
    }

    fn write_encoded(
        &self,
        id: CheckpointId,
        subtask: usize,
        states: TaskStates,
        storage: &CheckpointStorage,
        dir: &str,
        done: impl FnOnce(Result<StateHandles>) + Send + 'static,
    ) {
        let mut handles = Vec::with_capacity(states.len());
        let mut files = Vec::new();
        for (node, snap) in states {
            let Some((uid, parallelism)) = self.operators.get(&node) else {
                done(Err(Error::Checkpoint(format!(
                    "a snapshot names operator {node}, which the job does not have"
                ))));
                return;
            };
            let kgs = key_group_range(self.max_parallelism, *parallelism, subtask);
            let mut meta = SubtaskMetadata {
                subtask,
                key_groups: [kgs.start, kgs.end],
                file: None,
                size: 0,
                crc32: 0,
                operator_state: None,
                ..Default::default()
            };
            if !snap.is_empty() {
                meta.operator_state = Some(snap.operator.is_some());
                let shared = snap.shared;
                meta.base = snap.base;
                let rel = if shared {
                    let name = shared_file_name(uid, subtask, id);
                    let job_dir = dir.rsplit_once('/').map_or("", |(parent, _)| parent);
                    meta.chain = vec![SharedFile {
                        path: format!("{SHARED_DIR}/{name}"),
                        size: 0,
                        crc32: 0,
                    }];
                    if job_dir.is_empty() {
                        format!("{SHARED_DIR}/{name}")
                    } else {
                        format!("{job_dir}/{SHARED_DIR}/{name}")
                    }
                } else {
                    let name = format!("{uid}-{subtask}.state");
                    let rel = format!("{dir}/{name}");
                    meta.file = Some(name);
                    rel
                };
                match snap.deferred.as_ref().map(|d| d.spool_dir().to_path_buf()) {
                    // Encoded into a local file as it is read, then uploaded from there.
                    Some(spool) => match spool_to_file(&spool, snap) {
                        Ok((local, f)) => {
                            meta.size = f.size;
                            meta.crc32 = f.crc32;
                            files.push((rel, Payload::Spooled(local)));
                        }
                        Err(e) => {
                            done(Err(e));
                            return;
                        }
                    },
                    None => {
                        let file = encode_state_file(snap);
                        meta.size = file.size;
                        meta.crc32 = file.crc32;
                        files.push((rel, Payload::Memory(file.chunks)));
                    }
                }
                if let Some(f) = meta.chain.first_mut() {
                    (f.size, f.crc32) = (meta.size, meta.crc32);
                }
            }
            handles.push((node, meta));
        }
        if files.is_empty() {
            done(Ok(handles));
            return;
        }
        let join = Arc::new(Mutex::new(Join {
            left: files.len(),
            result: Ok(handles),
            done: Some(Box::new(done)),
        }));
        for (path, payload) in files {
            let join = join.clone();
            let uploaded = move |r| {
                if let Ok(mut j) = join.lock() {
                    j.uploaded(r)
                }
            };
            match payload {
                Payload::Memory(chunks) => storage.put_async(path, chunks, uploaded),
                Payload::Spooled(local) => {
                    let file = local.clone();
                    storage.put_file_async(path, local, move |r| {
                        let _ = std::fs::remove_file(&file);
                        uploaded(r)
                    })
                }
            }
        }
    }
}

/// A state file to upload: in memory, or written to a local file.
enum Payload {
    Memory(Vec<Bytes>),
    Spooled(PathBuf),
}

/// Writes `snap` as a state file in local directory `spool` (a name of its own).
fn spool_to_file(spool: &Path, snap: OperatorSnapshot) -> Result<(PathBuf, SpooledFile)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(spool)
        .map_err(|e| Error::io("create directory", spool.display().to_string(), e))?;
    let local = spool.join(format!(
        "snapshot-{}.state",
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    match spool_state_file(&local, snap) {
        Ok(f) => Ok((local, f)),
        Err(e) => {
            let _ = std::fs::remove_file(&local);
            Err(e)
        }
    }
}

type Done = Box<dyn FnOnce(Result<StateHandles>) + Send>;

/// The uploads of one snapshot: `done` runs when the last returns.
struct Join {
    left: usize,
    result: Result<StateHandles>,
    done: Option<Done>,
}

impl Join {
    fn uploaded(&mut self, r: Result<()>) {
        if let Err(e) = r
            && self.result.is_ok()
        {
            self.result = Err(e);
        }
        self.left -= 1;
        if self.left == 0
            && let Some(done) = self.done.take()
        {
            done(std::mem::replace(&mut self.result, Ok(Vec::new())));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crossbeam_channel::bounded;

    use super::*;
    use crate::checkpoint::OperatorSnapshot;
    use crate::checkpoint::format::decode_state_file_checked;

    fn layout() -> StateLayout {
        StateLayout {
            operators: HashMap::from([(0, ("src".to_string(), 2)), (1, ("agg".to_string(), 2))]),
            max_parallelism: 128,
        }
    }

    #[test]
    fn every_file_is_stored_before_the_handles_come_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = CheckpointStorage::open(&dir.path().to_string_lossy(), &BTreeMap::new())
            .expect("storage");
        let states = vec![
            (
                0,
                OperatorSnapshot {
                    keyed: Vec::new(),
                    operator: Some(b"offset 42".to_vec()),
                    deferred: None,
                    ..Default::default()
                },
            ),
            (
                1,
                OperatorSnapshot {
                    keyed: vec![(64, b"a".to_vec()), (70, b"bc".to_vec())],
                    operator: None,
                    deferred: None,
                    ..Default::default()
                },
            ),
        ];
        let (tx, rx) = bounded(1);
        layout().write(3, 1, states, &storage, "job/chk-3", move |r| {
            let _ = tx.send(r);
        });
        let handles = rx.recv().expect("done").expect("written");
        assert_eq!(handles.len(), 2);
        let (node, agg) = &handles[1];
        assert_eq!(*node, 1);
        assert_eq!(agg.key_groups, [64, 128]);
        assert_eq!(agg.operator_state, Some(false));
        assert_eq!(agg.file.as_deref(), Some("agg-1.state"));
        let bytes = std::fs::read(dir.path().join("job/chk-3/agg-1.state")).expect("file");
        assert_eq!(bytes.len() as u64, agg.size);
        assert_eq!(crc32fast::hash(&bytes), agg.crc32);
        let file = decode_state_file_checked(bytes.into(), "agg-1.state", true).expect("decodes");
        assert_eq!(file.keyed.len(), 2);
        assert_eq!(handles[0].1.operator_state, Some(true));
    }

    #[test]
    fn a_deferred_snapshot_is_spooled_uploaded_in_parts_and_the_spool_file_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let spool = tempfile::tempdir().expect("spool dir");
        let storage = CheckpointStorage::open(&dir.path().to_string_lossy(), &BTreeMap::new())
            .expect("storage");
        // 40 MiB over three key groups: more than one 16 MiB part.
        let blob = |kg: u16| vec![kg as u8; 14 << 20];
        let deferred = crate::checkpoint::DeferredKeyed::new(spool.path().join("s"), move |emit| {
            for kg in [64, 65, 100] {
                emit(kg, blob(kg))?;
            }
            Ok(())
        });
        let snap = OperatorSnapshot {
            keyed: Vec::new(),
            operator: None,
            deferred: Some(deferred),
            ..Default::default()
        };
        let (tx, rx) = bounded(1);
        layout().write(9, 1, vec![(1, snap)], &storage, "job/chk-9", move |r| {
            let _ = tx.send(r);
        });
        let handles = rx.recv().expect("done").expect("written");
        let meta = &handles[0].1;
        let bytes = std::fs::read(dir.path().join("job/chk-9/agg-1.state")).expect("file");
        assert_eq!(bytes.len() as u64, meta.size);
        assert_eq!(crc32fast::hash(&bytes), meta.crc32);
        let file = decode_state_file_checked(bytes.into(), "agg-1.state", true).expect("decodes");
        let kgs: Vec<u16> = file.keyed.iter().map(|(kg, _)| *kg).collect();
        assert_eq!(kgs, [64, 65, 100]);
        assert!(file.keyed.iter().all(|(kg, b)| b[..] == blob(*kg)[..]));
        let left = std::fs::read_dir(spool.path().join("s"))
            .expect("spool")
            .count();
        assert_eq!(left, 0, "the spool file stays");
    }

    #[test]
    fn an_unknown_operator_and_a_failed_upload_are_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = CheckpointStorage::open(&dir.path().to_string_lossy(), &BTreeMap::new())
            .expect("storage");
        let snap = || OperatorSnapshot {
            keyed: vec![(0, b"x".to_vec())],
            operator: None,
            deferred: None,
            ..Default::default()
        };
        let (tx, rx) = bounded(2);
        let t = tx.clone();
        layout().write(1, 0, vec![(9, snap())], &storage, "d", move |r| {
            let _ = t.send(r);
        });
        let e = rx.recv().expect("done").expect_err("unknown operator");
        assert!(e.to_string().contains("operator 9"), "{e}");
        // A file where the checkpoint directory should be: the upload cannot succeed.
        std::fs::write(dir.path().join("blocked"), b"").expect("write");
        layout().write(1, 0, vec![(1, snap())], &storage, "blocked", move |r| {
            let _ = tx.send(r);
        });
        rx.recv().expect("done").expect_err("the upload fails");
    }
}
