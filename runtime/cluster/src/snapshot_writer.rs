//! A taskmanager writing its tasks' snapshots to checkpoint storage itself, so that state
//! never travels to the jobmanager (Flink's taskmanagers write their own state too): the
//! jobmanager says where each snapshot goes (a `Target`, before the trigger), the
//! taskmanager writes the state files there and sends back only their handles.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use flink_rs_core::checkpoint::format::{SharedFile, SubtaskMetadata};
use flink_rs_core::checkpoint::writer::{StateHandles, StateLayout};
use flink_rs_core::checkpoint::{CheckpointId, CheckpointStorage};
use flink_rs_core::error::{Error, Result};
use flink_rs_core::task::TaskStates;

use super::proto;

/// How long a snapshot waits for its target: the jobmanager sends it before triggering the
/// sources, but over another connection than the barrier that reaches this taskmanager.
const TARGET_WAIT: Duration = Duration::from_secs(10);

/// Targets kept per attempt: older ones are of checkpoints long over.
const TARGETS_KEPT: usize = 64;

/// Where the snapshots of an attempt go, as the jobmanager says: (storage URL, directory).
#[derive(Default)]
pub(crate) struct Targets {
    map: Mutex<BTreeMap<CheckpointId, (String, String)>>,
    changed: Condvar,
}

impl Targets {
    pub(crate) fn set(&self, id: CheckpointId, storage: String, dir: String) {
        if let Ok(mut m) = self.map.lock() {
            m.insert(id, (storage, dir));
            while m.len() > TARGETS_KEPT {
                m.pop_first();
            }
        }
        self.changed.notify_all();
    }

    /// The target of snapshot `id`, waiting up to `wait` for it to arrive.
    fn wait(&self, id: CheckpointId, wait: Duration) -> Option<(String, String)> {
        let until = Instant::now() + wait;
        let mut m = self.map.lock().ok()?;
        loop {
            if let Some(t) = m.get(&id) {
                return Some(t.clone());
            }
            let left = until.checked_duration_since(Instant::now())?;
            m = self.changed.wait_timeout(m, left).ok()?.0;
        }
    }
}

/// Writes the snapshots of one attempt's tasks on this taskmanager.
pub(crate) struct SnapshotWriter {
    layout: StateLayout,
    targets: Arc<Targets>,
    /// The job's storage options (credentials, endpoint).
    options: BTreeMap<String, String>,
    /// Storages opened so far, by URL.
    storages: HashMap<String, CheckpointStorage>,
}

impl SnapshotWriter {
    pub(crate) fn new(
        layout: StateLayout,
        targets: Arc<Targets>,
        options: BTreeMap<String, String>,
    ) -> Self {
        SnapshotWriter {
            layout,
            targets,
            options,
            storages: HashMap::new(),
        }
    }

    /// Writes instance `subtask`'s snapshot for `id` where the jobmanager said; `done`
    /// gets the handles (or the error) once every file is stored.
    pub(crate) fn write(
        &mut self,
        id: CheckpointId,
        subtask: usize,
        states: TaskStates,
        done: impl FnOnce(Result<StateHandles>) + Send + 'static,
    ) {
        let Some((url, dir)) = self.targets.wait(id, TARGET_WAIT) else {
            done(Err(Error::Checkpoint(format!(
                "the jobmanager did not say where snapshot {id} goes within {TARGET_WAIT:?}"
            ))));
            return;
        };
        let storage = match self.storages.get(&url) {
            Some(s) => s.clone(),
            None => match CheckpointStorage::open(&url, &self.options) {
                Ok(s) => {
                    self.storages.insert(url, s.clone());
                    s
                }
                Err(e) => {
                    done(Err(e));
                    return;
                }
            },
        };
        self.layout.write(id, subtask, states, &storage, &dir, done);
    }
}

/// Handles as the control plane carries them.
pub(crate) fn handles_to_proto(handles: StateHandles) -> Vec<proto::StateHandle> {
    handles
        .into_iter()
        .map(|(node, m)| {
            // A taskmanager's handle names one file: in the snapshot's directory, or shared.
            let shared = m.chain.first().map(|f| f.path.clone());
            proto::StateHandle {
                node: node as u32,
                subtask: m.subtask as u32,
                key_group_start: u32::from(m.key_groups[0]),
                key_group_end: u32::from(m.key_groups[1]),
                shared: shared.is_some(),
                file: shared.or(m.file).unwrap_or_default(),
                size: m.size,
                crc32: m.crc32,
                operator_state: m.operator_state.unwrap_or(false),
                base: m.base.unwrap_or(0),
            }
        })
        .collect()
}

/// The jobmanager's side of [`handles_to_proto`].
pub(crate) fn handles_from_proto(
    handles: Vec<proto::StateHandle>,
    task_name: &str,
) -> Result<StateHandles> {
    handles
        .into_iter()
        .map(|h| {
            let kg = |v: u32| {
                u16::try_from(v).map_err(|_| {
                    Error::Network(format!(
                        "{task_name} sent a state handle with key group {v}, beyond 65535"
                    ))
                })
            };
            let file = (!h.file.is_empty()).then_some(h.file);
            let operator_state = file.as_ref().map(|_| h.operator_state);
            let (file, chain) = match file {
                Some(path) if h.shared => (
                    None,
                    vec![SharedFile {
                        path,
                        size: h.size,
                        crc32: h.crc32,
                    }],
                ),
                other => (other, Vec::new()),
            };
            Ok((
                h.node as usize,
                SubtaskMetadata {
                    subtask: h.subtask as usize,
                    key_groups: [kg(h.key_group_start)?, kg(h.key_group_end)?],
                    operator_state,
                    file,
                    size: h.size,
                    crc32: h.crc32,
                    base: Some(h.base).filter(|b| *b != 0),
                    chain,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_that_comes_late_is_waited_for_and_one_that_never_comes_is_an_error() {
        let targets = Arc::new(Targets::default());
        let t = targets.clone();
        let setter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            t.set(7, "s3://bucket/cp".into(), "job/chk-7".into());
        });
        let got = targets.wait(7, Duration::from_secs(5));
        assert_eq!(
            got,
            Some(("s3://bucket/cp".to_string(), "job/chk-7".to_string()))
        );
        let _ = setter.join();
        assert_eq!(targets.wait(8, Duration::from_millis(30)), None);
        for id in 100..100 + TARGETS_KEPT as u64 + 5 {
            targets.set(id, "u".into(), "d".into());
        }
        assert_eq!(
            targets.wait(7, Duration::ZERO),
            None,
            "old targets are dropped"
        );
    }

    #[test]
    fn handles_cross_the_control_plane_unchanged() {
        let handles: StateHandles = vec![
            (
                3,
                SubtaskMetadata {
                    subtask: 1,
                    key_groups: [64, 128],
                    file: Some("agg-1.state".into()),
                    size: 99,
                    crc32: 7,
                    operator_state: Some(false),
                    ..Default::default()
                },
            ),
            (
                4,
                SubtaskMetadata {
                    subtask: 1,
                    key_groups: [64, 128],
                    file: None,
                    size: 0,
                    crc32: 0,
                    operator_state: None,
                    ..Default::default()
                },
            ),
            (
                5,
                SubtaskMetadata {
                    subtask: 1,
                    key_groups: [64, 128],
                    file: None,
                    size: 12,
                    crc32: 5,
                    operator_state: Some(false),
                    base: Some(6),
                    chain: vec![SharedFile {
                        path: "shared/w-1-7.state".into(),
                        size: 12,
                        crc32: 5,
                    }],
                },
            ),
        ];
        let back = handles_from_proto(handles_to_proto(handles.clone()), "t").expect("decodes");
        assert_eq!(back, handles);
        let mut bad = handles_to_proto(handles);
        bad[0].key_group_end = 70_000;
        let e = handles_from_proto(bad, "agg (2/2)").expect_err("out of range");
        assert!(e.to_string().contains("agg (2/2)"), "{e}");
    }
}
