//! Flink's metric names and labels (its Prometheus reporter's: `flink_<scope>_<name>`, the
//! scope's variables as labels), filled from the engine's counters.
//!
//! - task: `flink_taskmanager_job_task_*`, labels `host`, `tm_id`, `job_id`, `job_name`,
//!   `task_id`, `task_name`, `subtask_index`;
//! - operator: `flink_taskmanager_job_task_operator_*`, the task's labels and
//!   `operator_id`, `operator_name`. flink-rs counts per chain of operators (a vertex), so the
//!   operator of these metrics is the vertex: its input is the chain's head's, its output the
//!   tail's;
//! - job: `flink_jobmanager_job_*`, labels `job_id`, `job_name`;
//! - cluster: `flink_jobmanager_*`;
//! - process: `flink_jobmanager_Status_Process_*` / `flink_taskmanager_Status_Process_*`.

use std::time::Instant;

use flink_rs_core::executor::{CheckpointStats, JobStatus, TaskStats, split_task_name};

use crate::families::Families;
use crate::process;
use crate::rates::Rates;

/// A vertex's id: its index in the job's plan, as 32 hex digits (Flink's vertex ids are 32
/// hex digits). The REST API uses the same ids.
pub fn vertex_id(index: usize) -> String {
    format!("{index:032x}")
}

/// The per-second rates of a task's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TaskRates {
    pub records_in: f64,
    pub records_out: f64,
    pub bytes_in: f64,
    pub bytes_out: f64,
    /// Milliseconds per second waiting on full output channels.
    pub backpressured_ms: f64,
    /// Milliseconds per second waiting for input.
    pub idle_ms: f64,
    /// The rest of each second: processing (Flink's `busyTimeMsPerSecond`).
    pub busy_ms: f64,
}

impl TaskRates {
    /// The rates of task `s` of job `job_id`, remembered in `rates`.
    pub fn of(rates: &Rates, job_id: &str, s: &TaskStats, now: Instant) -> TaskRates {
        let r = rates.per_second(
            &format!("{job_id}/{}", s.task),
            now,
            &[
                s.records_in as f64,
                s.records_out as f64,
                s.bytes_in as f64,
                s.bytes_out as f64,
                s.backpressured.as_secs_f64() * 1000.0,
                s.idle.as_secs_f64() * 1000.0,
            ],
        );
        let backpressured_ms = r[4].min(1000.0);
        let idle_ms = r[5].min(1000.0 - backpressured_ms);
        TaskRates {
            records_in: r[0],
            records_out: r[1],
            bytes_in: r[2],
            bytes_out: r[3],
            backpressured_ms,
            idle_ms,
            busy_ms: (1000.0 - backpressured_ms - idle_ms).max(0.0),
        }
    }
}

/// Where tasks run: the labels every task metric carries besides its own.
#[derive(Debug, Clone, Copy)]
pub struct TaskScope<'a> {
    pub host: &'a str,
    pub tm_id: &'a str,
    pub job_id: &'a str,
    pub job_name: &'a str,
}

/// Adds the task and operator metrics of `tasks` (`(vertex index, statistics)`) of one job.
pub fn tasks(
    out: &mut Families,
    rates: &Rates,
    now: Instant,
    scope: &TaskScope,
    tasks: &[(usize, TaskStats)],
) {
    for (vertex, s) in tasks {
        let (vertex_name, subtask, _) = split_task_name(&s.task).unwrap_or((&s.task, 0, 1));
        let id = vertex_id(*vertex);
        let subtask = subtask.to_string();
        let labels = [
            ("host", scope.host),
            ("tm_id", scope.tm_id),
            ("job_id", scope.job_id),
            ("job_name", scope.job_name),
            ("task_id", id.as_str()),
            ("task_name", vertex_name),
            ("subtask_index", subtask.as_str()),
        ];
        let r = TaskRates::of(rates, scope.job_id, s, now);
        let task = |out: &mut Families, name: &str, help: &str, v: f64| {
            out.gauge(
                &format!("flink_taskmanager_job_task_{name}"),
                &format!("{help} (scope: taskmanager_job_task)"),
                &labels,
                v,
            )
        };
        task(
            out,
            "numRecordsIn",
            "Records into the task",
            s.records_in as f64,
        );
        task(
            out,
            "numRecordsOut",
            "Records out of the task",
            s.records_out as f64,
        );
        task(
            out,
            "numBytesIn",
            "Bytes into the task (Arrow buffers)",
            s.bytes_in as f64,
        );
        task(
            out,
            "numBytesOut",
            "Bytes out of the task (Arrow buffers)",
            s.bytes_out as f64,
        );
        task(
            out,
            "numRecordsInPerSecond",
            "Records into the task per second",
            r.records_in,
        );
        task(
            out,
            "numRecordsOutPerSecond",
            "Records out of the task per second",
            r.records_out,
        );
        task(
            out,
            "numBytesInPerSecond",
            "Bytes into the task per second",
            r.bytes_in,
        );
        task(
            out,
            "numBytesOutPerSecond",
            "Bytes out of the task per second",
            r.bytes_out,
        );
        task(
            out,
            "isBackPressured",
            "1 while the task waits on a full output channel",
            f64::from(u8::from(s.blocked)),
        );
        task(
            out,
            "backPressuredTimeMsPerSecond",
            "Milliseconds per second waiting on full output channels",
            r.backpressured_ms,
        );
        task(
            out,
            "idleTimeMsPerSecond",
            "Milliseconds per second waiting for input",
            r.idle_ms,
        );
        task(
            out,
            "busyTimeMsPerSecond",
            "Milliseconds per second processing",
            r.busy_ms,
        );
        let mut op_labels = labels.to_vec();
        op_labels.push(("operator_id", id.as_str()));
        op_labels.push(("operator_name", vertex_name));
        let op = |out: &mut Families, name: &str, help: &str, v: f64| {
            out.gauge(
                &format!("flink_taskmanager_job_task_operator_{name}"),
                &format!("{help} (scope: taskmanager_job_task_operator)"),
                &op_labels,
                v,
            )
        };
        op(
            out,
            "numRecordsIn",
            "Records into the operator",
            s.records_in as f64,
        );
        op(
            out,
            "numRecordsOut",
            "Records out of the operator",
            s.records_out as f64,
        );
        op(
            out,
            "numRecordsInPerSecond",
            "Records into the operator per second",
            r.records_in,
        );
        op(
            out,
            "numRecordsOutPerSecond",
            "Records out of the operator per second",
            r.records_out,
        );
        if let Some(w) = s.input_watermark {
            op(
                out,
                "currentInputWatermark",
                "The operator's input watermark, epoch milliseconds",
                w as f64,
            );
        }
        if let Some(w) = s.watermark {
            op(
                out,
                "currentOutputWatermark",
                "The operator's last emitted watermark, epoch milliseconds",
                w as f64,
            );
        }
    }
}

/// A job as the jobmanager sees it.
#[derive(Debug, Clone, Copy)]
pub struct JobView<'a> {
    pub job_id: &'a str,
    pub job_name: &'a str,
    pub status: JobStatus,
    /// Milliseconds since the job started (Flink's `uptime`; 0 once it ended).
    pub uptime_ms: i64,
    pub checkpoints: &'a CheckpointStats,
}

/// Adds `flink_jobmanager_job_*` for one job.
pub fn job(out: &mut Families, j: &JobView) {
    let labels = [("job_id", j.job_id), ("job_name", j.job_name)];
    for (name, help, v) in job_values(j) {
        out.gauge(
            &format!("flink_jobmanager_job_{name}"),
            &format!("{help} (scope: jobmanager_job)"),
            &labels,
            v,
        );
    }
}

/// A job's metrics as Flink names them in the job scope (`uptime`, `numRestarts`, …), with
/// their help: the Prometheus families and `GET /jobs/{id}/metrics` both list these.
pub fn job_values(j: &JobView) -> Vec<(String, &'static str, f64)> {
    let mut out = Vec::new();
    let mut g = |name: &str, help: &'static str, v: f64| out.push((name.to_string(), help, v));
    let c = j.checkpoints;
    let running = j.status == JobStatus::Running;
    g(
        "uptime",
        "Milliseconds the job has been running",
        if running { j.uptime_ms as f64 } else { 0.0 },
    );
    g(
        "numRestarts",
        "Restarts after failures",
        f64::from(c.restarts),
    );
    g(
        "totalNumberOfCheckpoints",
        "Checkpoints triggered",
        c.triggered as f64,
    );
    g(
        "numberOfCompletedCheckpoints",
        "Checkpoints completed",
        c.completed as f64,
    );
    g(
        "numberOfFailedCheckpoints",
        "Checkpoints failed",
        c.failed as f64,
    );
    g(
        "numberOfInProgressCheckpoints",
        "Checkpoints in progress",
        c.triggered.saturating_sub(c.completed + c.failed) as f64,
    );
    if let Some(l) = &c.latest {
        g(
            "lastCheckpointDuration",
            "Milliseconds the latest completed checkpoint took",
            l.duration.as_millis() as f64,
        );
        g(
            "lastCheckpointSize",
            "Bytes the latest completed checkpoint wrote",
            l.state_size as f64,
        );
        g(
            "lastCheckpointFullSize",
            "Bytes of state the latest completed checkpoint is made of",
            l.full_size as f64,
        );
        g(
            "lastCompletedCheckpointId",
            "Id of the latest completed checkpoint",
            l.id as f64,
        );
    }
    for s in JobStatus::ALL {
        g(
            &format!("{}State", s.as_str()),
            "1 while the job is in this state",
            f64::from(u8::from(j.status == s)),
        );
    }
    out
}

/// The cluster as the jobmanager sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterView {
    pub taskmanagers: usize,
    pub slots_total: usize,
    pub slots_available: usize,
    pub running_jobs: usize,
}

/// Adds `flink_jobmanager_*` of the cluster.
pub fn cluster(out: &mut Families, c: &ClusterView) {
    let mut g = |name: &str, help: &str, v: usize| {
        out.gauge(
            &format!("flink_jobmanager_{name}"),
            &format!("{help} (scope: jobmanager)"),
            &[],
            v as f64,
        )
    };
    g(
        "numRegisteredTaskManagers",
        "Registered taskmanagers",
        c.taskmanagers,
    );
    g(
        "taskSlotsTotal",
        "Task slots of all taskmanagers",
        c.slots_total,
    );
    g("taskSlotsAvailable", "Free task slots", c.slots_available);
    g("numRunningJobs", "Jobs running", c.running_jobs);
}

/// Adds the process's CPU and memory under `flink_{component}_Status_Process_*`
/// (`component`: `jobmanager` or `taskmanager`; a mini-cluster is both, and reports as
/// `taskmanager`).
pub fn process(out: &mut Families, rates: &Rates, component: &str, now: Instant) {
    let Some(p) = process::read() else {
        return;
    };
    let load = rates.per_second("process/cpu", now, &[p.cpu_seconds])[0];
    let mut g = |name: &str, help: &str, v: f64| {
        out.gauge(
            &format!("flink_{component}_Status_Process_{name}"),
            &format!("{help} (scope: {component}_Status_Process)"),
            &[],
            v,
        )
    };
    g(
        "CPU_Time",
        "CPU time of the process (user and system), nanoseconds",
        p.cpu_seconds * 1e9,
    );
    g(
        "CPU_Load",
        "Cores the process kept busy recently (1.0 = one core)",
        load,
    );
    g("Memory_RSS", "Resident memory, bytes", p.rss_bytes as f64);
    g("Threads_Count", "Threads of the process", p.threads as f64);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn stats(task: &str, records: u64, bp_ms: u64, idle_ms: u64) -> TaskStats {
        TaskStats {
            task: task.into(),
            records_in: records,
            records_out: records / 2,
            bytes_in: records * 8,
            bytes_out: records * 4,
            backpressured: Duration::from_millis(bp_ms),
            blocked: bp_ms > 0,
            idle: Duration::from_millis(idle_ms),
            watermark: Some(1_000),
            input_watermark: None,
        }
    }

    #[test]
    fn task_metrics_carry_flinks_names_labels_and_rates() {
        let rates = Rates::default();
        let scope = TaskScope {
            host: "h",
            tm_id: "tm-1",
            job_id: "j",
            job_name: "q",
        };
        let t0 = Instant::now();
        let mut f = Families::default();
        tasks(
            &mut f,
            &rates,
            t0,
            &scope,
            &[(1, stats("A -> B (2/2)", 0, 0, 0))],
        );
        let mut f = Families::default();
        tasks(
            &mut f,
            &rates,
            t0 + Duration::from_secs(2),
            &scope,
            &[(1, stats("A -> B (2/2)", 2_000, 500, 1_000))],
        );
        let one = |name: &str| {
            let s = f.samples(name);
            assert_eq!(s.len(), 1, "{name}: {s:?}");
            s[0].clone()
        };
        let (labels, v) = one("flink_taskmanager_job_task_numRecordsIn");
        assert_eq!(v, 2_000.0);
        let get = |k: &str| {
            labels
                .iter()
                .find(|(l, _)| l == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert_eq!(get("task_name"), "A -> B");
        assert_eq!(get("subtask_index"), "1");
        assert_eq!(get("task_id"), vertex_id(1));
        assert_eq!(
            one("flink_taskmanager_job_task_numRecordsInPerSecond").1,
            1_000.0
        );
        assert_eq!(
            one("flink_taskmanager_job_task_backPressuredTimeMsPerSecond").1,
            250.0
        );
        assert_eq!(
            one("flink_taskmanager_job_task_idleTimeMsPerSecond").1,
            500.0
        );
        assert_eq!(
            one("flink_taskmanager_job_task_busyTimeMsPerSecond").1,
            250.0
        );
        assert_eq!(one("flink_taskmanager_job_task_isBackPressured").1, 1.0);
        assert_eq!(
            one("flink_taskmanager_job_task_operator_numRecordsOut").1,
            1_000.0
        );
        assert_eq!(
            one("flink_taskmanager_job_task_operator_currentOutputWatermark").1,
            1_000.0
        );
        assert!(
            f.samples("flink_taskmanager_job_task_operator_currentInputWatermark")
                .is_empty()
        );
    }

    #[test]
    fn job_metrics_follow_the_checkpoint_counters_and_state() {
        let c = CheckpointStats {
            triggered: 5,
            completed: 3,
            failed: 1,
            restarts: 2,
            ..CheckpointStats::default()
        };
        let mut f = Families::default();
        job(
            &mut f,
            &JobView {
                job_id: "j",
                job_name: "q",
                status: JobStatus::Running,
                uptime_ms: 1234,
                checkpoints: &c,
            },
        );
        let v = |n: &str| f.samples(n).first().map(|s| s.1);
        assert_eq!(
            v("flink_jobmanager_job_numberOfCompletedCheckpoints"),
            Some(3.0)
        );
        assert_eq!(
            v("flink_jobmanager_job_numberOfInProgressCheckpoints"),
            Some(1.0)
        );
        assert_eq!(v("flink_jobmanager_job_numRestarts"), Some(2.0));
        assert_eq!(v("flink_jobmanager_job_uptime"), Some(1234.0));
        assert_eq!(v("flink_jobmanager_job_RUNNINGState"), Some(1.0));
        assert_eq!(v("flink_jobmanager_job_FAILEDState"), Some(0.0));
        assert_eq!(v("flink_jobmanager_job_lastCheckpointDuration"), None);
    }

    /// docs/metrics.md lists exactly the metrics a scrape can carry: every scope, a job
    /// with a completed checkpoint, both kinds of process.
    #[test]
    fn docs_list_every_metric_and_nothing_else() {
        use flink_rs_core::checkpoint::SnapshotKind;
        use flink_rs_core::executor::CompletedCheckpoint;
        let rates = Rates::default();
        let now = Instant::now();
        let mut f = Families::default();
        process(&mut f, &rates, "jobmanager", now);
        process(&mut f, &rates, "taskmanager", now);
        cluster(&mut f, &ClusterView::default());
        let c = CheckpointStats {
            latest: Some(CompletedCheckpoint {
                id: 1,
                kind: SnapshotKind::Checkpoint,
                path: "file:///cp/chk-1".into(),
                timestamp_ms: 1,
                duration: Duration::from_millis(5),
                state_size: 10,
                full_size: 20,
                sync_duration: Duration::ZERO,
            }),
            ..CheckpointStats::default()
        };
        job(
            &mut f,
            &JobView {
                job_id: "j",
                job_name: "q",
                status: JobStatus::Running,
                uptime_ms: 1,
                checkpoints: &c,
            },
        );
        let scope = TaskScope {
            host: "h",
            tm_id: "tm",
            job_id: "j",
            job_name: "q",
        };
        let mut s = stats("A (1/1)", 1, 0, 0);
        s.input_watermark = Some(1);
        s.watermark = Some(1);
        tasks(&mut f, &rates, now, &scope, &[(0, s)]);
        let emitted: Vec<&str> = f.names().collect();
        let doc = include_str!("../../../docs/metrics.md");
        let mut documented: Vec<&str> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
            .filter(|n| n.starts_with("flink_"))
            .collect();
        documented.sort_unstable();
        assert_eq!(emitted, documented, "docs/metrics.md is out of date");
    }
}
