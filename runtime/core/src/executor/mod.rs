//! Turns a [`JobGraph`] into running tasks in this process (the mini-cluster) and supervises
//! them: operators are chained, every chain runs once per parallel subtask on its own thread,
//! chains are connected by bounded channels, and a job master thread triggers checkpoints,
//! writes them to storage, restarts the job from the latest one after a failure, and takes
//! savepoints on request.
//!
//! One file per concept:
//! - [`job`]: the [`JobHandle`] a caller holds, job status and statistics, job ids;
//! - [`chaining`]: graph validation and operator chaining;
//! - [`deploy`]: attempts: task threads and channels, and the [`RemoteDeployer`] of clusters;
//! - [`master`]: the job master (attempts, restarts, the checkpoint interval);
//! - [`coordinator`]: the checkpoint coordinator (barriers, acknowledgements, storage).

mod chaining;
mod coordinator;
mod deploy;
mod job;
mod master;

pub use chaining::{chains, validate};
pub use deploy::*;
pub use job::*;

use std::sync::{Arc, Mutex};

use crossbeam_channel::unbounded;

use crate::checkpoint::restore::{self, checkpoint_ids};
use crate::checkpoint::writer::StateLayout;
use crate::checkpoint::{CheckpointStorage, FINAL_CHECKPOINT, RestoreFrom, load_checkpoint};
use crate::error::{Error, Result};
use crate::graph::JobGraph;

use coordinator::InFlight;
use master::*;

/// Starts a job in this process. Problems with the graph, its configuration or the
/// checkpoint it restores from are returned here, before anything runs.
pub fn execute(graph: JobGraph) -> Result<JobHandle> {
    execute_with(graph, None)
}

/// Runs a job whose tasks a cluster deploys (`remote`), or in this process (`None`). With a
/// cluster the first deployment happens on the job master thread (it may wait for slots), so
/// this returns at once with the job `Created`.
pub fn execute_with(graph: JobGraph, remote: Option<Arc<dyn RemoteDeployer>>) -> Result<JobHandle> {
    validate(&graph)?;
    graph.config.state_backend.validate()?;
    let cfg = graph.config.clone();
    let job_id = cfg.job_id.clone().unwrap_or_else(random_job_id);
    let storage = match (&cfg.checkpoint.dir, cfg.checkpoint.interval) {
        (Some(dir), _) => Some(CheckpointStorage::open(
            dir,
            &cfg.checkpoint.storage_options,
        )?),
        (None, Some(_)) => {
            let dir = std::env::temp_dir().join("flink-rs").join("checkpoints");
            Some(CheckpointStorage::open(
                &dir.display().to_string(),
                &cfg.checkpoint.storage_options,
            )?)
        }
        (None, None) => None,
    };
    let restored = match &cfg.restore {
        None => None,
        Some(RestoreFrom::Latest) => match &storage {
            Some(s) => match restore::latest_snapshot(s, &job_id)? {
                Some(c) => Some(c),
                // Never a quiet fresh start: the caller asked for state that is not there.
                None => {
                    return Err(Error::config(
                        "execution.savepoint.path",
                        format!(
                            "`latest`: no completed checkpoint of job {job_id} in {}",
                            s.url()
                        ),
                    ));
                }
            },
            None => {
                return Err(Error::config(
                    "execution.savepoint.path",
                    "`latest` needs state.checkpoints.dir",
                ));
            }
        },
        Some(RestoreFrom::Path(p)) => {
            let s = CheckpointStorage::open(p, &cfg.checkpoint.storage_options)?;
            Some(load_checkpoint(&s, "")?)
        }
    };
    let mut next_id = 1;
    if let Some(r) = &restored {
        if r.id() != FINAL_CHECKPOINT {
            next_id = r.id() + 1;
        }
    }
    if let Some(s) = &storage {
        if let Some(max) = checkpoint_ids(s, &job_id)?.first() {
            next_id = next_id.max(max + 1);
        }
    }
    let plan = Arc::new(Plan {
        chains: chains(&graph),
        graph,
        job_id: job_id.clone(),
        storage,
        remote,
    });
    let shared = Arc::new(Shared {
        stats: Mutex::new(CheckpointStats::default()),
        metrics: Mutex::new(Vec::new()),
        status: Mutex::new((JobStatus::Created, None)),
    });
    let restored = restored.map(Arc::new);
    if let Some(r) = &restored {
        shared.stats(|s| s.restored = Some(r.url.clone()));
    }
    let (upload_tx, upload_rx) = unbounded();
    let layout = StateLayout::of(&plan.graph);
    let first = if plan.remote.is_none() {
        let a = deploy(&plan, restored.as_deref(), &shared)?;
        shared.set_status(JobStatus::Running, None);
        Some(a)
    } else {
        None
    };
    let (cmd_tx, cmd_rx) = unbounded();
    let master_shared = shared.clone();
    let master = std::thread::Builder::new()
        .name("job-master".into())
        .spawn(move || {
            let status = master_shared.clone();
            let remote = plan.remote.clone();
            let job = plan.job_id.clone();
            let mut m = Master {
                plan,
                shared: master_shared,
                commands: cmd_rx,
                uploads: upload_rx,
                upload_tx,
                layout,
                next_id,
                first_id: next_id,
                initial: restored,
                graveyard: Vec::new(),
                given_up: InFlight::default(),
                completed: Default::default(),
                stop: None,
            };
            let result = match first {
                Some(a) => m.run(a),
                None => match m.first_remote_deploy() {
                    Ok(Some(a)) => m.run(a),
                    Ok(None) => Ok(JobOutcome::Cancelled),
                    Err(e) => Err(e),
                },
            };
            let (end, error) = match &result {
                Ok(JobOutcome::Cancelled) => (JobStatus::Canceled, None),
                Ok(_) => (JobStatus::Finished, None),
                Err(e) => (JobStatus::Failed, Some(e.to_string())),
            };
            // The cluster records the end durably before anyone can see it.
            if let Some(r) = &remote {
                r.job_ended(&job, end);
            }
            status.set_status(end, error);
            m.answer_stop(&result);
            result
        })
        .map_err(|e| Error::io("spawn job master thread", "", e))?;
    Ok(JobHandle {
        master,
        commands: cmd_tx,
        shared,
        job_id,
    })
}
