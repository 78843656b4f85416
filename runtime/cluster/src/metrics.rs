//! What the jobmanager reports to Prometheus (its reporter on `metrics.reporter.prom.port`
//! and `GET /metrics` on the REST port): the cluster, every job, and its own process. The
//! tasks' metrics come from the taskmanagers' own endpoints, as in Flink.

use std::time::Instant;

use flink_rs_core::error::{Error, Result};
use flink_rs_metrics::reporter::{self, Collect};
use flink_rs_metrics::scopes::{self, ClusterView, JobView};
use flink_rs_metrics::{Families, Reporter};
use flink_rs_rest_api::JobStatus;

use crate::jobmanager::JobManager;

/// The jobmanager's scrape.
pub(crate) fn jobmanager_families(jm: &JobManager) -> Families {
    let now = Instant::now();
    let mut out = Families::default();
    scopes::process(&mut out, jm.rates(), "jobmanager", now);
    let tms = jm.taskmanagers();
    let jobs = jm.jobs();
    scopes::cluster(
        &mut out,
        &ClusterView {
            taskmanagers: tms.len(),
            slots_total: tms.iter().map(|t| t.slots).sum(),
            slots_available: tms.iter().map(|t| t.free_slots).sum(),
            running_jobs: jobs
                .iter()
                .filter(|j| j.status().0 == JobStatus::Running)
                .count(),
        },
    );
    let wall = flink_rs_core::operator::now_millis();
    for j in &jobs {
        let stats = j.handle().checkpoint_stats();
        scopes::job(
            &mut out,
            &JobView {
                job_id: &j.id,
                job_name: &j.name,
                status: j.status().0,
                uptime_ms: wall - j.start_ms,
                checkpoints: &stats,
            },
        );
    }
    out
}

/// Starts the Prometheus reporter of a cluster process on `ports` (a port or a range) and
/// announces its address on standard error; a bad port is an error naming the key.
pub(crate) fn start_reporter(ports: &str, host: &str, collect: Collect) -> Result<Reporter> {
    let r = Reporter::start(ports, host, collect).map_err(|e| Error::Config {
        key: reporter::PORT_KEY.into(),
        message: e.to_string(),
    })?;
    eprintln!("{}", r.announcement());
    Ok(r)
}
