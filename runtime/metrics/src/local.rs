//! The scrape of a mini-cluster (`flink-rs run`): one process that is jobmanager and
//! taskmanager of one job.

use std::sync::Arc;
use std::time::Instant;

use flink_rs_core::executor::{CheckpointStats, JobStatus, TaskStats, split_task_name};

use crate::families::Families;
use crate::rates::Rates;
use crate::reporter::Collect;
use crate::scopes::{self, ClusterView, JobView, TaskScope};

type Reader<T> = Box<dyn Fn() -> T + Send + Sync>;

/// A job running in this process, read through its handle's functions.
pub struct LocalJob {
    pub job_id: String,
    pub job_name: String,
    /// When it started, epoch ms.
    pub start_ms: i64,
    pub tasks: Reader<Vec<TaskStats>>,
    pub checkpoints: Reader<CheckpointStats>,
    pub status: Reader<(JobStatus, Option<String>)>,
}

/// Each task with its vertex's index: vertices in the order their tasks are listed (the
/// plan's order).
pub fn with_vertices(tasks: Vec<TaskStats>) -> Vec<(usize, TaskStats)> {
    let mut names: Vec<String> = Vec::new();
    tasks
        .into_iter()
        .map(|t| {
            let v = split_task_name(&t.task).map_or(t.task.as_str(), |s| s.0);
            let i = match names.iter().position(|n| n == v) {
                Some(i) => i,
                None => {
                    names.push(v.to_string());
                    names.len() - 1
                }
            };
            (i, t)
        })
        .collect()
}

/// The scrape of a mini-cluster: its process, the cluster, the job and its tasks.
pub fn collect(job: LocalJob) -> Collect {
    let rates = Rates::default();
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    Arc::new(move || {
        let now = Instant::now();
        let mut out = Families::default();
        scopes::process(&mut out, &rates, "taskmanager", now);
        let status = (job.status)().0;
        let tasks = with_vertices((job.tasks)());
        // A mini-cluster has as many slots as its widest vertex needs.
        let slots = tasks
            .iter()
            .filter_map(|(_, t)| split_task_name(&t.task).map(|s| s.2))
            .max()
            .unwrap_or(1);
        scopes::cluster(
            &mut out,
            &ClusterView {
                taskmanagers: 1,
                slots_total: slots,
                slots_available: 0,
                running_jobs: usize::from(status == JobStatus::Running),
            },
        );
        let checkpoints = (job.checkpoints)();
        scopes::job(
            &mut out,
            &JobView {
                job_id: &job.job_id,
                job_name: &job.job_name,
                status,
                uptime_ms: flink_rs_core::operator::now_millis() - job.start_ms,
                checkpoints: &checkpoints,
            },
        );
        let scope = TaskScope {
            host: &host,
            tm_id: "local",
            job_id: &job.job_id,
            job_name: &job.job_name,
        };
        scopes::tasks(&mut out, &rates, now, &scope, &tasks);
        rates.prune(now);
        out
    })
}
