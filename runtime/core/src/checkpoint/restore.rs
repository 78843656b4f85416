//! Finding and loading a complete checkpoint or savepoint, and handing each new operator
//! instance exactly its share: the key groups it now owns and the operator state of every old
//! instance. Everything is read and verified before anything is handed out.

use std::collections::HashMap;

use super::format::{CheckpointMetadata, StateFile, decode_state_file_checked};
use super::{CheckpointId, CheckpointStorage, RestoredState};
use crate::error::{Error, Result};
use crate::key::key_group_range;

/// A verified checkpoint, loaded into memory.
#[derive(Debug, Clone)]
pub struct RestoredCheckpoint {
    /// Where it was read from.
    pub url: String,
    pub metadata: CheckpointMetadata,
    files: HashMap<(String, usize), StateFile>,
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
    /// the checkpoint has no entry for `uid`.
    pub fn state_for(
        &self,
        uid: &str,
        subtask: usize,
        parallelism: usize,
        max_parallelism: u16,
    ) -> Option<RestoredState> {
        let op = self.metadata.operators.iter().find(|o| o.uid == uid)?;
        let mine = key_group_range(max_parallelism, parallelism, subtask);
        let mut state = RestoredState {
            checkpoint_id: self.metadata.checkpoint_id,
            old_parallelism: op.parallelism,
            ..Default::default()
        };
        for st in &op.subtasks {
            let Some(file) = self.files.get(&(uid.to_string(), st.subtask)) else {
                continue;
            };
            let [s, e] = st.key_groups;
            if s < mine.end && mine.start < e {
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
        Some(state)
    }
}

/// Loads and verifies the checkpoint in directory `dir` of `storage` ("" for its root).
pub fn load_checkpoint(storage: &CheckpointStorage, dir: &str) -> Result<RestoredCheckpoint> {
    let url = if dir.is_empty() {
        storage.url().to_string()
    } else {
        storage.url_of(dir)
    };
    let join = |name: &str| {
        if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        }
    };
    let meta_bytes = storage.get(&join("_metadata"))?.ok_or_else(|| {
        Error::SnapshotCorrupt(format!(
            "{url} has no _metadata: it is not a complete checkpoint or savepoint"
        ))
    })?;
    let metadata = CheckpointMetadata::parse(&meta_bytes, &url)?;
    let mut files = HashMap::new();
    for op in &metadata.operators {
        for st in &op.subtasks {
            let Some(name) = &st.file else { continue };
            let t0 = std::time::Instant::now();
            let bytes = storage.get_large(&join(name))?.ok_or_else(|| {
                Error::SnapshotCorrupt(format!("{url}: state file {name} is missing"))
            })?;
            if bytes.len() as u64 != st.size || crc32fast::hash(&bytes) != st.crc32 {
                return Err(Error::SnapshotCorrupt(format!(
                    "{url}: state file {name} does not match _metadata (size {} vs {}, or checksum)",
                    bytes.len(),
                    st.size
                )));
            }
            let t1 = std::time::Instant::now();
            // The whole-file checksum above covers the payload's own: not computed twice.
            let file = decode_state_file_checked(bytes, &format!("{url}/{name}"), false)?;
            tracing::debug!(
                file = %name,
                read_ms = (t1 - t0).as_millis() as u64,
                decode_ms = t1.elapsed().as_millis() as u64,
                "state file read"
            );
            files.insert((op.uid.clone(), st.subtask), file);
        }
    }
    Ok(RestoredCheckpoint {
        url,
        metadata,
        files,
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
}
