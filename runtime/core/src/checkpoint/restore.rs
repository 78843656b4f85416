//! Finding and loading a complete checkpoint or savepoint, and handing each new operator
//! instance exactly its share: the key groups it now owns and the operator state of every old
//! instance.
//!
//! Finding one reads `_metadata` and checks that every state file it names is there with
//! its size (object metadata, not contents): a jobmanager choosing what to restore never
//! loads state. A state file is read, and verified against its checksum, when the first new
//! instance that needs it restores: the files of the old instances whose key groups overlap
//! its own, and those that hold operator state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::format::{CheckpointMetadata, StateFile, SubtaskMetadata, decode_state_file_checked};
use super::{CheckpointId, CheckpointStorage, RestoredState};
use crate::error::{Error, Result};
use crate::key::key_group_range;

/// A complete checkpoint: its verified metadata, and its state files as they are read.
#[derive(Clone)]
pub struct RestoredCheckpoint {
    /// Where it was read from.
    pub url: String,
    pub metadata: CheckpointMetadata,
    storage: CheckpointStorage,
    dir: String,
    /// Incremental checkpoints: where the shared files are (the job's directory).
    shared: Option<(CheckpointStorage, String)>,
    files: Arc<FileCache>,
}

/// State files read so far, by path (`shared/…` for shared files).
type FileCache = Mutex<HashMap<String, Arc<StateFile>>>;

impl std::fmt::Debug for RestoredCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoredCheckpoint")
            .field("url", &self.url)
            .field("checkpoint_id", &self.metadata.checkpoint_id)
            .finish_non_exhaustive()
    }
}

impl RestoredCheckpoint {
    /// The checkpoint's id.
    pub fn id(&self) -> CheckpointId {
        self.metadata.checkpoint_id
    }

    /// Whether the checkpoint has state for operator `uid`.
    pub fn has_operator(&self, uid: &str) -> bool {
        self.metadata.operators.iter().any(|o| o.uid == uid)
    }

    /// The state of operator `uid` for new instance `subtask` of `parallelism`; `None` when
    /// the checkpoint has no entry for `uid`. Reads only the files this instance needs.
    pub fn state_for(
        &self,
        uid: &str,
        subtask: usize,
        parallelism: usize,
        max_parallelism: u16,
    ) -> Result<Option<RestoredState>> {
        let Some(op) = self.metadata.operators.iter().find(|o| o.uid == uid) else {
            return Ok(None);
        };
        let mine = key_group_range(max_parallelism, parallelism, subtask);
        let mut state = RestoredState {
            checkpoint_id: self.metadata.checkpoint_id,
            old_parallelism: op.parallelism,
            layout: op.state_layout.clone(),
            ..Default::default()
        };
        for st in &op.subtasks {
            let [s, e] = st.key_groups;
            let overlaps = s < mine.end && mine.start < e;
            if !overlaps && st.operator_state == Some(false) {
                continue;
            }
            if st.chain.len() > 1 {
                self.merge_chain(st, &mine, overlaps, &mut state)?;
                continue;
            }
            let Some(file) = self.file(st)? else {
                continue;
            };
            if overlaps {
                state.keyed.extend(
                    file.keyed
                        .iter()
                        .filter(|(kg, _)| mine.contains(kg))
                        .cloned(),
                );
            }
            if let Some(b) = &file.operator {
                state.operator.push((st.subtask, b.clone()));
            }
        }
        Ok(Some(state))
    }

    /// Old instance `st`'s state from its chain of incremental snapshots: each key group
    /// this instance owns merged from the whole snapshot and the changes after it, and the
    /// operator state of the newest.
    fn merge_chain(
        &self,
        st: &SubtaskMetadata,
        mine: &std::ops::Range<u16>,
        overlaps: bool,
        state: &mut RestoredState,
    ) -> Result<()> {
        let mut files = Vec::with_capacity(st.chain.len());
        for f in &st.chain {
            files.push(self.read(&f.path, true, f.size, f.crc32)?);
        }
        let blob = |f: &StateFile, kg: u16| -> Option<Bytes> {
            f.keyed
                .binary_search_by_key(&kg, |(k, _)| *k)
                .ok()
                .map(|i| f.keyed[i].1.clone())
        };
        if overlaps {
            let [s, e] = st.key_groups;
            for kg in s.max(mine.start)..e.min(mine.end) {
                let whole = blob(&files[0], kg);
                let changes: Vec<Bytes> = files[1..].iter().filter_map(|f| blob(f, kg)).collect();
                if changes.is_empty() {
                    state.keyed.extend(whole.map(|b| (kg, b)));
                    continue;
                }
                let changes: Vec<&[u8]> = changes.iter().map(|b| &b[..]).collect();
                let merged = crate::state::merge_key_group_chain(whole.as_deref(), &changes)
                    .map_err(|e| {
                        Error::SnapshotCorrupt(format!(
                            "{}: key group {kg} of instance {}: {e}",
                            self.url, st.subtask
                        ))
                    })?;
                state.keyed.extend(merged.map(|m| (kg, Bytes::from(m))));
            }
        }
        if let Some(b) = files.last().and_then(|f| f.operator.clone()) {
            state.operator.push((st.subtask, b));
        }
        Ok(())
    }

    /// The state file of old instance `st`, read and verified on first use.
    fn file(&self, st: &SubtaskMetadata) -> Result<Option<Arc<StateFile>>> {
        if let Some(f) = st.chain.first() {
            return self.read(&f.path, true, f.size, f.crc32).map(Some);
        }
        let Some(name) = &st.file else {
            return Ok(None);
        };
        self.read(name, false, st.size, st.crc32).map(Some)
    }

    /// State file `name` (in the checkpoint's directory, or `shared` ones in the job's),
    /// read and verified on first use.
    fn read(&self, name: &str, shared: bool, size: u64, crc: u32) -> Result<Arc<StateFile>> {
        let (storage, path) = self.path_of(name, shared)?;
        // Held while reading: instances restoring in parallel read each file once.
        let mut files = self
            .files
            .lock()
            .map_err(|_| Error::Checkpoint(format!("{}: a restore panicked", self.url)))?;
        if let Some(f) = files.get(&path) {
            return Ok(f.clone());
        }
        let url = &self.url;
        let t0 = std::time::Instant::now();
        let bytes = storage.get_large(&path)?.ok_or_else(|| {
            Error::SnapshotCorrupt(format!("{url}: state file {name} is missing"))
        })?;
        if bytes.len() as u64 != size || crc32fast::hash(&bytes) != crc {
            return Err(mismatch(url, name, bytes.len() as u64, size));
        }
        let t1 = std::time::Instant::now();
        // The whole-file checksum above covers the payload's own: not computed twice.
        let file = Arc::new(decode_state_file_checked(
            bytes,
            &format!("{url}/{name}"),
            false,
        )?);
        tracing::debug!(
            file = %name,
            read_ms = (t1 - t0).as_millis() as u64,
            decode_ms = t1.elapsed().as_millis() as u64,
            "state file read"
        );
        files.insert(path, file.clone());
        Ok(file)
    }

    /// Where file `name` is: the storage and the path within it.
    fn path_of(&self, name: &str, shared: bool) -> Result<(&CheckpointStorage, String)> {
        if !shared {
            return Ok((&self.storage, join(&self.dir, name)));
        }
        match &self.shared {
            Some((storage, job_dir)) => Ok((storage, join(job_dir, name))),
            None => Err(Error::SnapshotCorrupt(format!(
                "{}: names shared state file {name} but has no job directory around it",
                self.url
            ))),
        }
    }
}

/// The URL one level up from `url` (`s3://b/cp/job/chk-7` → `s3://b/cp/job`).
fn parent_url(url: &str) -> Option<&str> {
    let (parent, _) = url.trim_end_matches('/').rsplit_once('/')?;
    (!parent.ends_with(':') && !parent.ends_with("//") && !parent.is_empty()).then_some(parent)
}

/// A state file that is not the one `_metadata` describes.
fn mismatch(url: &str, name: &str, size: u64, expected: u64) -> Error {
    Error::SnapshotCorrupt(format!(
        "{url}: state file {name} does not match _metadata (size {size} vs {expected}, or checksum)"
    ))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Opens the checkpoint in directory `dir` of `storage` ("" for its root): reads and checks
/// `_metadata`, and that each state file it names exists with the size it records (state
/// files themselves are read by [`RestoredCheckpoint::state_for`]).
pub fn load_checkpoint(storage: &CheckpointStorage, dir: &str) -> Result<RestoredCheckpoint> {
    let url = if dir.is_empty() {
        storage.url().to_string()
    } else {
        storage.url_of(dir)
    };
    let meta_bytes = storage.get(&join(dir, "_metadata"))?.ok_or_else(|| {
        Error::SnapshotCorrupt(format!(
            "{url} has no _metadata: it is not a complete checkpoint or savepoint"
        ))
    })?;
    let metadata = CheckpointMetadata::parse(&meta_bytes, &url)?;
    // Incremental checkpoints refer to files in the job's directory, one level up.
    let shared = if metadata.shared_files().next().is_none() {
        None
    } else if let Some((job_dir, _)) = dir.rsplit_once('/') {
        Some((storage.clone(), job_dir.to_string()))
    } else {
        let parent = parent_url(storage.url()).ok_or_else(|| {
            Error::SnapshotCorrupt(format!(
                "{url} is an incremental checkpoint, whose shared files are in its job's directory, but it has no parent directory"
            ))
        })?;
        Some((storage.open_other(parent)?, String::new()))
    };
    for f in metadata.shared_files() {
        let (s, job_dir) = shared.as_ref().ok_or_else(|| {
            Error::SnapshotCorrupt(format!("{url}: shared files without a job directory"))
        })?;
        match s.size(&join(job_dir, &f.path))? {
            None => {
                return Err(Error::SnapshotCorrupt(format!(
                    "{url}: shared state file {} is missing",
                    f.path
                )));
            }
            Some(size) if size != f.size => return Err(mismatch(&url, &f.path, size, f.size)),
            Some(_) => {}
        }
    }
    for op in &metadata.operators {
        for st in &op.subtasks {
            let Some(name) = &st.file else { continue };
            match storage.size(&join(dir, name))? {
                None => {
                    return Err(Error::SnapshotCorrupt(format!(
                        "{url}: state file {name} is missing"
                    )));
                }
                Some(size) if size != st.size => return Err(mismatch(&url, name, size, st.size)),
                Some(_) => {}
            }
        }
    }
    Ok(RestoredCheckpoint {
        url,
        metadata,
        storage: storage.clone(),
        dir: dir.to_string(),
        shared,
        files: Arc::default(),
    })
}

/// Checkpoint ids present under `{job_id}/` (complete or not), newest first.
pub fn checkpoint_ids(storage: &CheckpointStorage, job_id: &str) -> Result<Vec<CheckpointId>> {
    let mut ids: Vec<CheckpointId> = storage
        .list_dirs(job_id)?
        .iter()
        .filter_map(|d| d.strip_prefix("chk-")?.parse().ok())
        .collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    Ok(ids)
}

/// The file next to a job's checkpoints (`{job-id}/_stop-savepoint`) that names the
/// savepoint a stop-with-savepoint ended the job with (`{"id": …, "path": …}`). Written
/// before the sinks commit that savepoint, so that whoever starts the job again starts from
/// it, not from an older checkpoint that would repeat what it committed.
pub const STOP_SAVEPOINT: &str = "_stop-savepoint";

/// The savepoint a stop ended `job_id` with: (its id, its path).
pub fn stop_savepoint(
    storage: &CheckpointStorage,
    job_id: &str,
) -> Result<Option<(CheckpointId, String)>> {
    let file = format!("{job_id}/{STOP_SAVEPOINT}");
    let Some(bytes) = storage.get(&file)? else {
        return Ok(None);
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Checkpoint(format!("{} is unreadable: {e}", storage.url_of(&file))))?;
    match (v["id"].as_u64(), v["path"].as_str()) {
        (Some(id), Some(path)) => Ok(Some((id, path.to_string()))),
        _ => Err(Error::Checkpoint(format!(
            "{} names no savepoint: {v}",
            storage.url_of(&file)
        ))),
    }
}

/// The newest snapshot `job_id` can continue from: its latest complete checkpoint, or the
/// savepoint a stop ended it with when that is newer (ids of one job share one sequence).
pub fn latest_snapshot(
    storage: &CheckpointStorage,
    job_id: &str,
) -> Result<Option<RestoredCheckpoint>> {
    let latest = find_latest(storage, job_id)?;
    match stop_savepoint(storage, job_id)? {
        Some((id, path)) if latest.as_ref().is_none_or(|c| c.id() < id) => {
            load_checkpoint(&storage.open_other(&path)?, "").map(Some)
        }
        _ => Ok(latest),
    }
}

/// The newest complete, valid checkpoint of `job_id`; damaged or incomplete ones
/// ([`Error::SnapshotCorrupt`]) are reported and skipped, so a crash during a checkpoint
/// falls back to the one before. Any other failure (storage unreachable) is the error.
pub fn find_latest(
    storage: &CheckpointStorage,
    job_id: &str,
) -> Result<Option<RestoredCheckpoint>> {
    for id in checkpoint_ids(storage, job_id)? {
        match load_checkpoint(storage, &format!("{job_id}/chk-{id}")) {
            Ok(c) => return Ok(Some(c)),
            Err(e @ Error::SnapshotCorrupt(_)) => {
                tracing::warn!(checkpoint = id, error = %e, "skipping checkpoint")
            }
            // Storage that cannot be read now may hold this checkpoint intact: going back to
            // an older one would repeat what sinks committed after it.
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn storage(dir: &std::path::Path) -> CheckpointStorage {
        CheckpointStorage::open(&dir.to_string_lossy(), &BTreeMap::new()).expect("storage")
    }

    #[test]
    fn incomplete_checkpoints_are_skipped() {
        let dir = tempfile::tempdir().expect("temp dir");
        for id in [1, 2] {
            std::fs::create_dir_all(dir.path().join(format!("job/chk-{id}"))).expect("mkdir");
        }
        std::fs::write(dir.path().join("job/chk-2/_metadata"), b"{ not json").expect("write");
        let s = storage(dir.path());
        let e = load_checkpoint(&s, "job/chk-2").expect_err("damaged");
        assert!(matches!(e, Error::SnapshotCorrupt(_)), "{e:?}");
        let e = load_checkpoint(&s, "job/chk-1").expect_err("incomplete");
        assert!(matches!(e, Error::SnapshotCorrupt(_)), "{e:?}");
        assert!(find_latest(&s, "job").expect("skips both").is_none());
    }

    #[test]
    fn a_checkpoint_that_cannot_be_read_is_an_error_not_a_reason_to_go_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("job/chk-1")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("job/chk-2")).expect("mkdir");
        // A read that fails for another reason than absence or damage (as an unreachable
        // bucket would): a symbolic link to itself, which even root cannot open.
        let meta = dir.path().join("job/chk-2/_metadata");
        std::os::unix::fs::symlink(&meta, &meta).expect("symlink");
        let s = storage(dir.path());
        let e = find_latest(&s, "job").expect_err("the newest checkpoint is unreadable");
        assert!(!matches!(e, Error::SnapshotCorrupt(_)), "{e:?}");
    }

    /// Writes `job/chk-1` by hand: operator `op` at parallelism 2 of max parallelism 4,
    /// one keyed blob per key group (`kg-N`), and subtask 1 also with operator state.
    fn two_subtask_checkpoint(root: &std::path::Path) -> Result<()> {
        use super::super::format::{
            FORMAT_VERSION, METADATA_FORMAT, OperatorMetadata, encode_state_file,
        };
        use super::super::{OperatorSnapshot, SnapshotKind};
        let dir = root.join("job/chk-1");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("mkdir", &dir, e))?;
        let mut subtasks = Vec::new();
        for (subtask, kgs) in [(0usize, [0u16, 2]), (1, [2, 4])] {
            let snap = OperatorSnapshot {
                keyed: (kgs[0]..kgs[1])
                    .map(|kg| (kg, format!("kg-{kg}").into_bytes()))
                    .collect(),
                operator: (subtask == 1).then(|| b"position".to_vec()),
                ..Default::default()
            };
            let has_operator = snap.operator.is_some();
            let file = encode_state_file(snap);
            let name = format!("op-{subtask}.state");
            let bytes: Vec<u8> = file.chunks.iter().flat_map(|c| c.to_vec()).collect();
            let path = dir.join(&name);
            std::fs::write(&path, bytes).map_err(|e| Error::io("write", &path, e))?;
            subtasks.push(SubtaskMetadata {
                subtask,
                key_groups: kgs,
                file: Some(name),
                size: file.size,
                crc32: file.crc32,
                operator_state: Some(has_operator),
                ..Default::default()
            });
        }
        let meta = CheckpointMetadata {
            format: METADATA_FORMAT.into(),
            version: FORMAT_VERSION,
            job_id: "job".into(),
            checkpoint_id: 1,
            kind: SnapshotKind::Checkpoint,
            timestamp_ms: 0,
            max_parallelism: 4,
            finished: false,
            operators: vec![OperatorMetadata {
                uid: "op".into(),
                name: "op".into(),
                parallelism: 2,
                state_layout: None,
                subtasks,
            }],
        };
        let json = serde_json::to_vec(&meta).map_err(|e| Error::User(e.to_string()))?;
        let path = dir.join("_metadata");
        std::fs::write(&path, json).map_err(|e| Error::io("write", &path, e))
    }

    fn keyed(state: &RestoredState) -> Vec<(u16, String)> {
        state
            .keyed
            .iter()
            .map(|(kg, b)| (*kg, String::from_utf8_lossy(b).into_owned()))
            .collect()
    }

    /// Finding a checkpoint reads no state file, and an instance reads only the files of
    /// the old instances whose key groups it takes over, plus those with operator state.
    #[test]
    fn a_restore_reads_only_the_state_files_an_instance_needs() -> Result<()> {
        let root = tempfile::tempdir().map_err(|e| Error::io("temp dir", "", e))?;
        two_subtask_checkpoint(root.path())?;
        let s = storage(root.path());
        let c = find_latest(&s, "job")?.ok_or_else(|| Error::User("no checkpoint".into()))?;
        // Not read when found: replacing a file by garbage of the same size goes unnoticed.
        let f0 = root.path().join("job/chk-1/op-0.state");
        let len = std::fs::metadata(&f0)
            .map_err(|e| Error::io("stat", &f0, e))?
            .len();
        std::fs::write(&f0, vec![0u8; len as usize]).map_err(|e| Error::io("write", &f0, e))?;
        // Instance 1 of 2 owns key groups 2..4: old instance 1's file only.
        let one = c
            .state_for("op", 1, 2, 4)?
            .ok_or_else(|| Error::User("no state".into()))?;
        assert_eq!(keyed(&one), [(2, "kg-2".into()), (3, "kg-3".into())]);
        assert_eq!(one.operator, [(1, bytes::Bytes::from_static(b"position"))]);
        // Instance 0 needs old instance 0's file, which is damaged: an error naming it.
        let e = c.state_for("op", 0, 2, 4).expect_err("damaged file");
        assert!(matches!(e, Error::SnapshotCorrupt(_)), "{e:?}");
        assert!(e.to_string().contains("op-0.state"), "{e}");
        Ok(())
    }

    /// At another parallelism each new instance gets exactly its key groups, and every one
    /// the operator state of all old instances.
    #[test]
    fn a_restore_at_another_parallelism_splits_key_groups_and_shares_operator_state() -> Result<()>
    {
        let root = tempfile::tempdir().map_err(|e| Error::io("temp dir", "", e))?;
        two_subtask_checkpoint(root.path())?;
        let c = load_checkpoint(&storage(root.path()), "job/chk-1")?;
        let mut all = Vec::new();
        for subtask in 0..4 {
            let st = c
                .state_for("op", subtask, 4, 4)?
                .ok_or_else(|| Error::User("no state".into()))?;
            assert_eq!(st.old_parallelism, 2);
            assert_eq!(st.operator.len(), 1, "subtask {subtask}");
            all.extend(keyed(&st));
        }
        let expected: Vec<(u16, String)> = (0..4).map(|kg| (kg, format!("kg-{kg}"))).collect();
        assert_eq!(all, expected);
        assert!(c.state_for("other", 0, 4, 4)?.is_none());
        Ok(())
    }

    /// A state file shorter than `_metadata` says (a crash while writing it) makes the
    /// checkpoint damaged when it is found, so recovery skips it for the one before.
    #[test]
    fn a_truncated_state_file_is_found_without_reading_it() -> Result<()> {
        let root = tempfile::tempdir().map_err(|e| Error::io("temp dir", "", e))?;
        two_subtask_checkpoint(root.path())?;
        let f1 = root.path().join("job/chk-1/op-1.state");
        std::fs::write(&f1, b"short").map_err(|e| Error::io("write", &f1, e))?;
        let e = load_checkpoint(&storage(root.path()), "job/chk-1").expect_err("truncated");
        assert!(matches!(e, Error::SnapshotCorrupt(_)), "{e:?}");
        assert!(e.to_string().contains("does not match _metadata"), "{e}");
        assert!(find_latest(&storage(root.path()), "job")?.is_none());
        Ok(())
    }
}
