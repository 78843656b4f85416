//! `flink-rs jobmanager`: the gRPC endpoint taskmanagers register with, the REST API, and
//! the job masters of the submitted jobs.
//!
//! High availability without ZooKeeper: every submitted job is recorded next to its
//! checkpoints (`{state.checkpoints.dir}/{job-id}/_job.json`, script and settings). A
//! session jobmanager that starts finds the jobs there that had not ended and runs them
//! again from their latest completed checkpoint, so replacing a dead jobmanager (a compose
//! `restart: unless-stopped`) is enough to recover.
//!
//! An application-mode jobmanager (`--job FILE --job-id ID`, what the Kubernetes operator
//! runs) runs its own job only, whatever else is recorded under the same root, and starts
//! it from (see [`JobManager::start_application`]):
//! 1. the job's own newest snapshot: its latest completed checkpoint, or the savepoint a
//!    stop ended it with when that is newer (a stop commits the sinks, so an older
//!    checkpoint would repeat output; `checkpoint::restore::STOP_SAVEPOINT`);
//! 2. else `execution.savepoint.path` (the restore path holds until the first checkpoint
//!    after it);
//! 3. else nothing, which is only allowed when the job has no completed checkpoint at all:
//!    a damaged one is an error, never a silent start without state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Sender, bounded, unbounded};
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::config::{ClusterConfig, DEFAULT_BIND_HOST};
use super::proto::{self, from_task_manager, to_task_manager};
use super::taskmanager::decode_event;
use flink_rs_core::checkpoint::restore::{self, checkpoint_ids};
use flink_rs_core::checkpoint::{CheckpointStorage, SnapshotKind};
use flink_rs_core::error::{Error, Result};
use flink_rs_core::exchange::TaskMetrics;
use flink_rs_core::executor::{
    ControlTx, DeployRequest, JobHandle, JobStatus, RemoteAttempt, RemoteDeployer, TaskStats,
    chains, execute_with,
};
use flink_rs_core::graph::{NodeId, Partitioning};
use flink_rs_core::operator::now_millis;
use flink_rs_core::task::{TaskControl, TaskEvent};
use flink_rs_metrics::scopes::TaskRates;
use flink_rs_metrics::{Rates, reporter};

/// A registered taskmanager.
struct Tm {
    data_address: String,
    slots: usize,
    memory_bytes: u64,
    tx: mpsc::UnboundedSender<std::result::Result<proto::ToTaskManager, Status>>,
    last_seen: Instant,
    registered_ms: i64,
    session: u64,
}

/// Where the events of one deployed attempt go.
struct Route {
    job_id: String,
    events: Sender<TaskEvent>,
    metrics: Vec<Arc<TaskMetrics>>,
    names: Vec<String>,
    /// The taskmanager of each task.
    placement: Vec<String>,
    /// Slots the attempt holds per taskmanager.
    slots: HashMap<String, usize>,
}

/// An asynchronous savepoint or stop request (`POST /jobs/{id}/savepoints|stop`).
#[derive(Debug, Clone)]
pub enum Operation {
    InProgress,
    Completed(String),
    Failed(String),
}

/// A job known to this jobmanager.
pub struct Job {
    pub id: String,
    pub name: String,
    script: String,
    overrides: Vec<(String, String)>,
    handle: JobHandle,
    pub start_ms: i64,
    end_ms: Mutex<Option<i64>>,
    /// (vertex name, parallelism), one per chain.
    pub vertices: Vec<(String, usize)>,
    /// The edges into each vertex: (upstream vertex, Flink's ship strategy).
    pub inputs: Vec<Vec<(usize, &'static str)>>,
    operations: Mutex<HashMap<String, Operation>>,
}

impl Job {
    pub fn status(&self) -> (JobStatus, Option<String>) {
        self.handle.status()
    }

    pub fn end_ms(&self) -> Option<i64> {
        self.end_ms.lock().ok().and_then(|e| *e)
    }

    pub fn handle(&self) -> &JobHandle {
        &self.handle
    }

    pub fn operation(&self, id: &str) -> Option<Operation> {
        self.operations.lock().ok()?.get(id).cloned()
    }
}

/// What `_job.json` holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct JobRecord {
    id: String,
    name: String,
    script: String,
    overrides: Vec<(String, String)>,
    /// Set once the job ended; a jobmanager does not run it again.
    #[serde(default)]
    ended: Option<JobStatus>,
    /// The deployment plan (`flink-rs.operator.plan`) of the jobmanager the job ended
    /// under: a jobmanager with the same plan is a restart of that one and leaves the job
    /// ended; one with another plan was deployed to continue it (the Kubernetes operator,
    /// after a stop whose savepoint it could not confirm) and runs it from its latest snapshot.
    #[serde(default)]
    ended_plan: Option<String>,
}

/// The configuration key the Kubernetes operator puts its deployment plan's hash in.
const OPERATOR_PLAN_KEY: &str = "flink-rs.operator.plan";
/// The configuration key the Kubernetes operator puts the job id of its deployment plan in
/// (the pod's `--job-id` comes from the Deployment, the configuration from a ConfigMap).
const OPERATOR_JOB_KEY: &str = "flink-rs.operator.job-id";

/// The jobmanager's state, shared by the gRPC service, the REST API and the job masters.
pub struct JobManager {
    config: ClusterConfig,
    /// `flink-rs.filesystem.allowed-paths`, parsed at start.
    allowed_paths: Option<flink_rs_core::paths::AllowedPaths>,
    tms: Mutex<HashMap<String, Tm>>,
    routes: Mutex<HashMap<u64, Route>>,
    deployed: Mutex<HashMap<(u64, String), Sender<String>>>,
    jobs: Mutex<Vec<Arc<Job>>>,
    sessions: AtomicU64,
    operations: AtomicU64,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    storage: Option<CheckpointStorage>,
    me: Weak<JobManager>,
    /// Per-second rates of the tasks' counters (REST vertex throughput, backpressure).
    rates: Rates,
}

/// Addresses the jobmanager serves on.
pub struct Endpoints {
    pub rpc: SocketAddr,
    pub rest: SocketAddr,
}

impl JobManager {
    pub fn new(config: ClusterConfig) -> Result<Arc<Self>> {
        let storage = match config.get("state.checkpoints.dir") {
            Some(dir) => Some(CheckpointStorage::open(
                dir,
                &config.execution_config()?.checkpoint.storage_options,
            )?),
            None => None,
        };
        // Read once, and a bad value stops the jobmanager at start rather than leaving
        // savepoint targets unchecked.
        let allowed_paths = config
            .get(flink_rs_core::paths::KEY)
            .map(super::config::allowed_paths)
            .transpose()?;
        Ok(Arc::new_cyclic(|me| JobManager {
            allowed_paths,
            heartbeat_interval: config
                .duration("heartbeat.interval", Duration::from_secs(1))
                .unwrap_or(Duration::from_secs(1)),
            heartbeat_timeout: config
                .duration("heartbeat.timeout", Duration::from_secs(50))
                .unwrap_or(Duration::from_secs(50)),
            config,
            tms: Mutex::default(),
            routes: Mutex::default(),
            deployed: Mutex::default(),
            jobs: Mutex::default(),
            sessions: AtomicU64::new(1),
            operations: AtomicU64::new(1),
            storage,
            me: me.clone(),
            rates: Rates::default(),
        }))
    }

    /// The rates of the tasks' counters, shared by the REST API and the metrics.
    pub fn rates(&self) -> &Rates {
        &self.rates
    }

    /// The configuration this jobmanager started with.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    // ---- taskmanagers ----

    fn add_tm(
        &self,
        reg: &proto::Register,
        tx: mpsc::UnboundedSender<std::result::Result<proto::ToTaskManager, Status>>,
    ) -> u64 {
        let session = self.sessions.fetch_add(1, Ordering::SeqCst);
        if let Some(old) = self
            .tms
            .lock()
            .ok()
            .and_then(|m| m.get(&reg.taskmanager_id).map(|t| t.session))
        {
            self.tm_lost(&reg.taskmanager_id, old, "it registered again");
        }
        if let Ok(mut m) = self.tms.lock() {
            m.insert(
                reg.taskmanager_id.clone(),
                Tm {
                    data_address: reg.data_address.clone(),
                    slots: reg.slots.max(1) as usize,
                    memory_bytes: reg.memory_bytes,
                    tx,
                    last_seen: Instant::now(),
                    registered_ms: now_millis(),
                    session,
                },
            );
        }
        tracing::info!(id = %reg.taskmanager_id, data = %reg.data_address, slots = reg.slots, "taskmanager registered");
        session
    }

    fn touch(&self, id: &str) {
        if let Ok(mut m) = self.tms.lock() {
            if let Some(t) = m.get_mut(id) {
                t.last_seen = Instant::now();
            }
        }
    }

    /// Forgets a taskmanager and fails the attempts that had tasks on it.
    fn tm_lost(&self, id: &str, session: u64, why: &str) {
        let removed = self.tms.lock().ok().and_then(|mut m| {
            if m.get(id).is_some_and(|t| t.session == session) {
                m.remove(id)
            } else {
                None
            }
        });
        let Some(tm) = removed else { return };
        tracing::warn!(id, data = %tm.data_address, reason = why, "taskmanager lost");
        let message = format!("taskmanager {id} ({}) lost: {why}", tm.data_address);
        if let Ok(routes) = self.routes.lock() {
            for r in routes.values() {
                if let Some(task) = r.placement.iter().position(|p| p == id) {
                    let _ = r.events.send(TaskEvent::Exited {
                        task,
                        error: Some(Error::Network(message.clone())),
                        leftovers: None,
                    });
                }
            }
        }
        if let Ok(waiters) = self.deployed.lock() {
            for ((_, tm), w) in waiters.iter() {
                if tm == id {
                    let _ = w.send(message.clone());
                }
            }
        }
    }

    fn on_message(&self, id: &str, msg: proto::FromTaskManager) {
        self.touch(id);
        match msg.msg {
            Some(from_task_manager::Msg::Heartbeat(h)) => {
                if let Ok(routes) = self.routes.lock() {
                    for c in h.tasks {
                        if let Some(m) = routes
                            .get(&c.attempt)
                            .and_then(|r| r.metrics.get(c.task as usize))
                        {
                            m.records_in.store(c.records_in, Ordering::Relaxed);
                            m.records_out.store(c.records_out, Ordering::Relaxed);
                            m.backpressured_ns
                                .store(c.backpressured_ns, Ordering::Relaxed);
                            m.watermark.store(c.watermark, Ordering::Relaxed);
                            m.idle_ns.store(c.idle_ns, Ordering::Relaxed);
                            m.input_watermark
                                .store(c.input_watermark, Ordering::Relaxed);
                            m.bytes_in.store(c.bytes_in, Ordering::Relaxed);
                            m.bytes_out.store(c.bytes_out, Ordering::Relaxed);
                        }
                    }
                    // A sample per heartbeat keeps the rates (REST backpressure and
                    // throughput) current without anyone asking first.
                    let now = Instant::now();
                    for r in routes.values() {
                        for (name, m) in r.names.iter().zip(&r.metrics) {
                            let stats = TaskStats::read(name, m);
                            TaskRates::of(&self.rates, &r.job_id, &stats, now);
                        }
                    }
                    self.rates.prune(now);
                }
            }
            Some(from_task_manager::Msg::Event(ev)) => {
                let Ok(routes) = self.routes.lock() else {
                    return;
                };
                let Some(r) = routes.get(&ev.attempt) else {
                    return;
                };
                let name = r.names.get(ev.task as usize).cloned().unwrap_or_default();
                let event = decode_event(ev, &name).unwrap_or_else(|e| TaskEvent::Exited {
                    task: 0,
                    error: Some(e),
                    leftovers: None,
                });
                let _ = r.events.send(event);
            }
            Some(from_task_manager::Msg::Deployed(d)) => {
                if let Ok(w) = self.deployed.lock() {
                    if let Some(tx) = w.get(&(d.attempt, id.to_string())) {
                        let _ = tx.send(d.error);
                    }
                }
            }
            Some(from_task_manager::Msg::Register(_)) | None => {}
        }
    }

    /// Declares taskmanagers whose heartbeats stopped lost.
    fn check_heartbeats(&self) {
        let late: Vec<(String, u64)> = self
            .tms
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(_, t)| t.last_seen.elapsed() > self.heartbeat_timeout)
                    .map(|(id, t)| (id.clone(), t.session))
                    .collect()
            })
            .unwrap_or_default();
        for (id, session) in late {
            self.tm_lost(
                &id,
                session,
                &format!("no heartbeat for {:?}", self.heartbeat_timeout),
            );
        }
    }

    /// (id, data address, slots, free slots, memory, seconds since heartbeat, registered ms)
    pub fn taskmanagers(&self) -> Vec<TaskManagerInfo> {
        let used = self.used_slots();
        let mut out: Vec<TaskManagerInfo> = self
            .tms
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(id, t)| TaskManagerInfo {
                        id: id.clone(),
                        data_address: t.data_address.clone(),
                        slots: t.slots,
                        free_slots: t.slots.saturating_sub(used.get(id).copied().unwrap_or(0)),
                        memory_bytes: t.memory_bytes,
                        since_heartbeat_ms: t.last_seen.elapsed().as_millis() as u64,
                        registered_ms: t.registered_ms,
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The taskmanager of each task (by task name) of job `job_id`'s newest attempt.
    pub fn placement(&self, job_id: &str) -> HashMap<String, String> {
        let Ok(routes) = self.routes.lock() else {
            return HashMap::new();
        };
        routes
            .iter()
            .filter(|(_, r)| r.job_id == job_id)
            .max_by_key(|(attempt, _)| **attempt)
            .map(|(_, r)| {
                r.names
                    .iter()
                    .cloned()
                    .zip(r.placement.iter().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn used_slots(&self) -> HashMap<String, usize> {
        let mut used: HashMap<String, usize> = HashMap::new();
        if let Ok(routes) = self.routes.lock() {
            for r in routes.values() {
                for (tm, n) in &r.slots {
                    *used.entry(tm.clone()).or_default() += n;
                }
            }
        }
        used
    }

    /// `flink-rs.filesystem.allowed-paths` of this cluster, if set.
    pub(crate) fn allowed_paths(&self) -> Option<&flink_rs_core::paths::AllowedPaths> {
        self.allowed_paths.as_ref()
    }

    // ---- jobs ----

    /// Compiles and starts a SQL job. `job_id` is given when a job is recovered.
    pub fn submit(
        &self,
        script: &str,
        overrides: Vec<(String, String)>,
        job_id: Option<String>,
    ) -> Result<Arc<Job>> {
        self.submit_as(script, overrides, job_id, None)
    }

    /// `submit`; with `ended`, the job is shown in that terminal state and not run (it ended
    /// before this jobmanager started).
    fn submit_as(
        &self,
        script: &str,
        overrides: Vec<(String, String)>,
        job_id: Option<String>,
        ended: Option<JobStatus>,
    ) -> Result<Arc<Job>> {
        let base = self.config.execution_config()?;
        let compiled =
            flink_rs_sql::compile(script, base, &overrides).map_err(|e| Error::Config {
                key: "script".into(),
                message: e.to_string(),
            })?;
        let mut graph = compiled.env.graph();
        let id = job_id.unwrap_or_else(flink_rs_core::executor::new_job_id);
        graph.config.job_id = Some(id.clone());
        let plan_chains = chains(&graph);
        let vertices: Vec<(String, usize)> = plan_chains
            .iter()
            .map(|nodes| {
                (
                    nodes
                        .iter()
                        .map(|n| graph.nodes[*n].name.as_str())
                        .collect::<Vec<_>>()
                        .join(" -> "),
                    graph.nodes[nodes[0]].parallelism,
                )
            })
            .collect();
        let chain_of = |node: NodeId| plan_chains.iter().position(|c| c.contains(&node));
        let mut inputs: Vec<Vec<(usize, &'static str)>> = vec![Vec::new(); plan_chains.len()];
        for e in &graph.edges {
            if let (Some(from), Some(to)) = (chain_of(e.from), chain_of(e.to))
                && from != to
            {
                inputs[to].push((from, ship_strategy(&e.partitioning)));
            }
        }
        let name = graph
            .nodes
            .iter()
            .filter(|n| graph.edges.iter().all(|e| e.from != n.id))
            .map(|n| n.name.clone())
            .collect::<Vec<_>>()
            .join(", ");
        // `pipeline.name` names the job, as in Flink; else its sinks do.
        let name = match compiled.settings.get("pipeline.name") {
            Some(n) => n.clone(),
            None if name.is_empty() => id.clone(),
            None => name,
        };
        let deployer = Arc::new(ClusterDeployer {
            jm: self.me.clone(),
            script: script.to_string(),
            settings: self.config.pairs(),
            overrides: overrides.clone(),
        });
        let handle = match ended {
            Some(status) => JobHandle::ended(id.clone(), status),
            None => execute_with(graph, Some(deployer))?,
        };
        let job = Arc::new(Job {
            id: id.clone(),
            name,
            script: script.to_string(),
            overrides,
            handle,
            start_ms: now_millis(),
            end_ms: Mutex::new(None),
            vertices,
            inputs,
            operations: Mutex::default(),
        });
        if ended.is_some() {
            if let Ok(mut end) = job.end_ms.lock() {
                *end = Some(job.start_ms);
            }
        }
        self.record(&job, ended);
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.push(job.clone());
        }
        match ended {
            Some(status) => {
                tracing::info!(job = %id, %status, "job ended before this jobmanager started; not run again")
            }
            None => tracing::info!(job = %id, "job submitted"),
        }
        Ok(job)
    }

    /// Writes `_job.json` for a job (when checkpoint storage is configured).
    fn record(&self, job: &Job, ended: Option<JobStatus>) {
        self.write_record(&JobRecord {
            id: job.id.clone(),
            name: job.name.clone(),
            script: job.script.clone(),
            overrides: job.overrides.clone(),
            ended,
            ended_plan: ended.and_then(|_| self.plan()),
        });
    }

    /// The operator's deployment plan this jobmanager runs (none when started by hand).
    fn plan(&self) -> Option<String> {
        self.config.get(OPERATOR_PLAN_KEY).map(str::to_string)
    }

    fn write_record(&self, rec: &JobRecord) {
        let Some(storage) = &self.storage else { return };
        match serde_json::to_vec_pretty(rec) {
            Ok(json) => {
                if let Err(e) = storage.put(&format!("{}/_job.json", rec.id), Bytes::from(json)) {
                    tracing::warn!(job = %rec.id, error = %e, "cannot record the job");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode the job record"),
        }
    }

    /// Application mode (`jobmanager --job FILE --job-id ID`, what the Kubernetes operator
    /// runs): starts the job `id` from `script`, from the point the module doc states.
    pub fn start_application(&self, script: &str, id: &str) -> Result<Arc<Job>> {
        // A pod of an older Deployment template restarted after the operator changed the
        // ConfigMap (it applies the ConfigMap, then the Deployments): its `--job-id` and its
        // configuration are of different plans. Run neither: the old job may have ended
        // with the savepoint the new one starts from, and running it again would write its
        // output twice. The pod fails until the Deployment replaces it.
        if let Some(planned) = self.config.get(OPERATOR_JOB_KEY)
            && planned != id
        {
            return Err(Error::config(
                OPERATOR_JOB_KEY,
                format!(
                    "this configuration is for job {planned}, but the pod was started for job \
                     {id}: it is a pod of an older deployment; not starting either job"
                ),
            ));
        }
        // A job that ended (finished, stopped with a savepoint, cancelled, failed for good)
        // is not run again when its jobmanager restarts: its sinks committed their output,
        // and a run from its last checkpoint would write part of it twice. As Flink's job
        // result store. A jobmanager the operator deployed with another plan to continue
        // the job (same id) runs it from its latest snapshot, as below.
        if let Some(storage) = &self.storage {
            if let Some(bytes) = storage.get(&format!("{id}/_job.json"))? {
                if let Ok(JobRecord {
                    ended: Some(status),
                    ended_plan,
                    ..
                }) = serde_json::from_slice::<JobRecord>(&bytes)
                {
                    if status.is_terminal() && ended_plan == self.plan() {
                        return self.submit_as(
                            script,
                            Vec::new(),
                            Some(id.to_string()),
                            Some(status),
                        );
                    }
                }
            }
        }
        let configured = self.config.get("execution.savepoint.path");
        let from = match &self.storage {
            Some(storage) => restore_point(storage, id, configured)?,
            None => configured.map(str::to_string),
        };
        match &from {
            Some(p) => {
                tracing::info!(job = %id, from = %p, "application job starts from a snapshot")
            }
            None => tracing::info!(job = %id, "application job starts without state"),
        }
        let overrides = from
            .map(|p| vec![("execution.savepoint.path".to_string(), p)])
            .unwrap_or_default();
        self.submit(script, overrides, Some(id.to_string()))
    }

    /// Session mode: runs again the jobs recorded in checkpoint storage that had not ended.
    pub fn recover_jobs(&self) -> Result<usize> {
        let Some(storage) = &self.storage else {
            return Ok(0);
        };
        let mut n = 0;
        for dir in storage.list_dirs("")? {
            let Some(bytes) = storage.get(&format!("{dir}/_job.json"))? else {
                continue;
            };
            let rec: JobRecord = match serde_json::from_slice(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(dir = %dir, error = %e, "unreadable job record; skipped");
                    continue;
                }
            };
            if rec.ended.is_some() {
                continue;
            }
            // The same rule as application mode: the job's own newest snapshot, else the
            // path it was submitted with.
            let key = "execution.savepoint.path";
            let configured = rec
                .overrides
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str());
            let from = match restore_point(storage, &rec.id, configured) {
                Ok(from) => from,
                Err(e) => {
                    tracing::error!(job = %rec.id, error = %e, "cannot recover job");
                    continue;
                }
            };
            let mut overrides = rec.overrides.clone();
            overrides.retain(|(k, _)| k != key);
            overrides.extend(from.map(|p| (key.to_string(), p)));
            match self.submit(&rec.script, overrides, Some(rec.id.clone())) {
                Ok(_) => {
                    tracing::info!(job = %rec.id, "job recovered from checkpoint storage");
                    n += 1;
                }
                Err(e) => tracing::error!(job = %rec.id, error = %e, "cannot recover job"),
            }
        }
        Ok(n)
    }

    pub fn jobs(&self) -> Vec<Arc<Job>> {
        self.jobs.lock().map(|j| j.clone()).unwrap_or_default()
    }

    pub fn job(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs().into_iter().find(|j| j.id == id)
    }

    /// Records that job `id` ended, before it reports so: `_job.json` with its final state
    /// (a jobmanager started later does not run it again) and its end time.
    fn record_end(
        &self,
        id: &str,
        script: &str,
        overrides: &[(String, String)],
        status: JobStatus,
    ) {
        match self.job(id) {
            Some(job) => {
                if let Ok(mut end) = job.end_ms.lock() {
                    end.get_or_insert_with(now_millis);
                }
                self.record(&job, Some(status));
            }
            // Ended before it was listed (at once): the record from what the deployer knows.
            None => self.write_record(&JobRecord {
                id: id.to_string(),
                name: id.to_string(),
                script: script.to_string(),
                overrides: overrides.to_vec(),
                ended: Some(status),
                ended_plan: self.plan(),
            }),
        }
        tracing::info!(job = %id, state = ?status, "job ended");
    }

    /// Marks ended jobs (end time, `_job.json`).
    fn check_jobs(&self) {
        for job in self.jobs() {
            let (status, _) = job.status();
            if status.is_terminal() {
                let first = job
                    .end_ms
                    .lock()
                    .map(|mut e| {
                        let first = e.is_none();
                        e.get_or_insert_with(now_millis);
                        first
                    })
                    .unwrap_or(false);
                if first {
                    tracing::info!(job = %job.id, state = ?status, "job ended");
                    self.record(&job, Some(status));
                }
            }
        }
    }

    /// Starts a savepoint (or stop-with-savepoint) in the background; returns its request id.
    /// A `trigger_id` makes the request idempotent (Flink's `triggerId`): a second request
    /// with the same id starts nothing and answers the same operation.
    pub fn savepoint(
        &self,
        job: &Arc<Job>,
        dir: Option<String>,
        stop: bool,
        trigger_id: Option<String>,
    ) -> String {
        let rid = trigger_id.unwrap_or_else(|| {
            format!(
                "{:016x}",
                flink_rs_core::key::mix64(
                    self.operations.fetch_add(1, Ordering::SeqCst) ^ now_millis() as u64
                )
            )
        });
        if let Ok(mut ops) = job.operations.lock() {
            if ops.contains_key(&rid) {
                return rid;
            }
            ops.insert(rid.clone(), Operation::InProgress);
        }
        let job2 = job.clone();
        let rid2 = rid.clone();
        let _ = std::thread::Builder::new()
            .name("savepoint".into())
            .spawn(move || {
                let r = if stop {
                    job2.handle.stop_with_savepoint(dir.as_deref())
                } else {
                    job2.handle.trigger_savepoint(dir.as_deref())
                };
                let op = match r {
                    Ok(p) => Operation::Completed(p),
                    Err(e) => Operation::Failed(e.to_string()),
                };
                if let Ok(mut ops) = job2.operations.lock() {
                    ops.insert(rid2, op);
                }
            });
        rid
    }
}

/// Where an application job starts: the rule of the module doc, as a path to restore from.
fn restore_point(
    storage: &CheckpointStorage,
    id: &str,
    configured: Option<&str>,
) -> Result<Option<String>> {
    if let Some(c) = restore::latest_snapshot(storage, id)? {
        return Ok(Some(c.url.clone()));
    }
    // No readable complete checkpoint: one that was complete (has its `_metadata`) but
    // cannot be read is state the job would silently lose.
    for cid in checkpoint_ids(storage, id)? {
        let meta = format!("{id}/chk-{cid}/_metadata");
        if storage.get(&meta)?.is_some() {
            return Err(Error::Checkpoint(format!(
                "job {id}: checkpoint {} is complete but unreadable, and no older one is; \
                 refusing to start without its state (set execution.savepoint.path to choose \
                 a snapshot)",
                storage.url_of(&format!("{id}/chk-{cid}"))
            )));
        }
    }
    Ok(configured.map(str::to_string))
}

/// Flink's name of how records cross an edge.
fn ship_strategy(p: &Partitioning) -> &'static str {
    match p {
        Partitioning::Forward => "FORWARD",
        Partitioning::Hash(_) => "HASH",
        Partitioning::Rebalance => "REBALANCE",
        Partitioning::Broadcast => "BROADCAST",
    }
}

/// A taskmanager as `GET /taskmanagers` shows it.
#[derive(Debug, Clone)]
pub struct TaskManagerInfo {
    pub id: String,
    pub data_address: String,
    pub slots: usize,
    pub free_slots: usize,
    pub memory_bytes: u64,
    pub since_heartbeat_ms: u64,
    pub registered_ms: i64,
}

/// Deploys a job's attempts on the registered taskmanagers.
struct ClusterDeployer {
    jm: Weak<JobManager>,
    script: String,
    settings: Vec<(String, String)>,
    overrides: Vec<(String, String)>,
}

fn to_settings(p: &[(String, String)]) -> Vec<proto::Setting> {
    p.iter()
        .map(|(k, v)| proto::Setting {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

type TmTx = mpsc::UnboundedSender<std::result::Result<proto::ToTaskManager, Status>>;

fn send(tx: &TmTx, msg: to_task_manager::Msg) {
    let _ = tx.send(Ok(proto::ToTaskManager { msg: Some(msg) }));
}

impl RemoteDeployer for ClusterDeployer {
    fn job_ended(&self, job_id: &str, status: JobStatus) {
        if let Some(jm) = self.jm.upgrade() {
            jm.record_end(job_id, &self.script, &self.overrides, status);
        }
    }

    fn deploy(&self, req: DeployRequest<'_>) -> Result<RemoteAttempt> {
        let jm = self
            .jm
            .upgrade()
            .ok_or_else(|| Error::Network("the jobmanager is shutting down".into()))?;
        let needed = req.tasks.iter().map(|(_, j, _)| j + 1).max().unwrap_or(0);
        // Free slots, taskmanagers in id order: slot j holds subtask j of every chain.
        let used = jm.used_slots();
        let mut slots: Vec<(String, String, TmTx)> = Vec::new();
        let mut total = 0;
        if let Ok(tms) = jm.tms.lock() {
            let mut ids: Vec<&String> = tms.keys().collect();
            ids.sort();
            for id in ids {
                let t = &tms[id];
                total += t.slots;
                let free = t.slots.saturating_sub(used.get(id).copied().unwrap_or(0));
                for _ in 0..free {
                    slots.push((id.clone(), t.data_address.clone(), t.tx.clone()));
                }
            }
        }
        if slots.len() < needed {
            return Err(Error::Network(format!(
                "the job needs {needed} slots; {} of {total} are free",
                slots.len()
            )));
        }
        let placement: Vec<String> = req
            .tasks
            .iter()
            .map(|(_, j, _)| slots[*j].0.clone())
            .collect();
        let mut per_tm: HashMap<String, usize> = HashMap::new();
        for s in slots.iter().take(needed) {
            *per_tm.entry(s.0.clone()).or_default() += 1;
        }
        let involved: Vec<(String, TmTx)> = {
            let mut seen = Vec::new();
            for s in slots.iter().take(needed) {
                if !seen.iter().any(|(id, _): &(String, TmTx)| *id == s.0) {
                    seen.push((s.0.clone(), s.2.clone()));
                }
            }
            seen
        };
        let (events_tx, events) = unbounded();
        if let Ok(mut routes) = jm.routes.lock() {
            routes.insert(
                req.attempt,
                Route {
                    job_id: req.job_id.to_string(),
                    events: events_tx,
                    metrics: req.metrics.clone(),
                    names: req.tasks.iter().map(|t| t.2.clone()).collect(),
                    placement: placement.clone(),
                    slots: per_tm,
                },
            );
        }
        let (done_tx, done) = bounded(involved.len());
        if let Ok(mut w) = jm.deployed.lock() {
            for (id, _) in &involved {
                w.insert((req.attempt, id.clone()), done_tx.clone());
            }
        }
        let deploy = proto::Deploy {
            job_id: req.job_id.to_string(),
            attempt: req.attempt,
            script: self.script.clone(),
            settings: to_settings(&self.settings),
            restore_path: req.restore.unwrap_or_default().to_string(),
            placements: req
                .tasks
                .iter()
                .enumerate()
                .map(|(i, (_, j, _))| proto::Placement {
                    task: i as u32,
                    address: slots[*j].1.clone(),
                })
                .collect(),
            task_names: req.tasks.iter().map(|t| t.2.clone()).collect(),
            overrides: to_settings(&self.overrides),
        };
        for (_, tx) in &involved {
            send(tx, to_task_manager::Msg::Deploy(deploy.clone()));
        }
        let attempt = req.attempt;
        let cancel_all = {
            let involved = involved.clone();
            let jm = self.jm.clone();
            move || {
                for (_, tx) in &involved {
                    send(tx, to_task_manager::Msg::Cancel(proto::Cancel { attempt }));
                }
                if let Some(jm) = jm.upgrade() {
                    if let Ok(mut routes) = jm.routes.lock() {
                        routes.remove(&attempt);
                    }
                }
            }
        };
        let mut errors = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        for _ in 0..involved.len() {
            match done.recv_deadline(deadline) {
                Ok(e) if e.is_empty() => {}
                Ok(e) => errors.push(e),
                Err(_) => {
                    errors.push("a taskmanager did not answer the deployment within 60 s".into());
                    break;
                }
            }
        }
        if let Ok(mut w) = jm.deployed.lock() {
            w.retain(|(a, _), _| *a != attempt);
        }
        if !errors.is_empty() {
            cancel_all();
            return Err(Error::Network(format!(
                "deployment failed: {}",
                errors.join("; ")
            )));
        }
        tracing::info!(job = %req.job_id, attempt = format!("{attempt:016x}"), taskmanagers = involved.len(), "attempt deployed");
        let tx_of: HashMap<String, TmTx> = involved.iter().cloned().collect();
        let controls = placement
            .iter()
            .enumerate()
            .map(|(task, tm)| {
                let tx = tx_of.get(tm).cloned();
                ControlTx::Remote(Box::new(move |c: TaskControl| {
                    use proto::control::Kind;
                    let kind = match c {
                        TaskControl::Trigger(b) => Kind::Trigger(proto::Trigger {
                            checkpoint_id: b.id,
                            kind: u32::from(b.kind == SnapshotKind::Savepoint),
                            stop: b.stop,
                            base: b.base.unwrap_or(0),
                        }),
                        TaskControl::Complete(id) => Kind::Complete(id),
                        TaskControl::Stop => Kind::Stop(true),
                        TaskControl::Target { id, storage, dir } => Kind::Target(proto::Target {
                            checkpoint_id: id,
                            storage: storage.to_string(),
                            dir: dir.to_string(),
                        }),
                    };
                    if let Some(tx) = &tx {
                        send(
                            tx,
                            to_task_manager::Msg::Control(proto::Control {
                                attempt,
                                task: task as u32,
                                kind: Some(kind),
                            }),
                        );
                    }
                }))
            })
            .collect();
        Ok(RemoteAttempt {
            controls,
            events,
            teardown: Box::new(cancel_all),
        })
    }
}

/// The gRPC service.
struct Service {
    jm: Arc<JobManager>,
}

type ToTmStream = Pin<
    Box<dyn tokio_stream::Stream<Item = std::result::Result<proto::ToTaskManager, Status>> + Send>,
>;

#[tonic::async_trait]
impl proto::job_manager_server::JobManager for Service {
    type SessionStream = ToTmStream;

    async fn session(
        &self,
        request: Request<Streaming<proto::FromTaskManager>>,
    ) -> std::result::Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the session ended before Register"))?;
        let Some(from_task_manager::Msg::Register(reg)) = first.msg else {
            return Err(Status::invalid_argument(
                "the first message of a session must be Register",
            ));
        };
        let (tx, rx) = mpsc::unbounded_channel();
        send(
            &tx,
            to_task_manager::Msg::Registered(proto::Registered {
                heartbeat_interval_ms: self.jm.heartbeat_interval.as_millis() as u64,
            }),
        );
        let session = self.jm.add_tm(&reg, tx);
        let jm = self.jm.clone();
        let id = reg.taskmanager_id.clone();
        tokio::spawn(async move {
            let why = loop {
                match inbound.message().await {
                    Ok(Some(m)) => {
                        let jm = jm.clone();
                        let id = id.clone();
                        // Decoding a snapshot can take a while; keep it off the reactor.
                        let _ = tokio::task::spawn_blocking(move || jm.on_message(&id, m)).await;
                    }
                    Ok(None) => break "its session ended".to_string(),
                    Err(e) => break format!("its session broke: {}", e.message()),
                }
            };
            jm.tm_lost(&id, session, &why);
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}

/// Starts the jobmanager's servers and background work; returns their addresses. Runs until
/// the process ends or `stop` is set.
/// The job a jobmanager runs in application mode.
#[derive(Debug, Clone)]
pub struct Application {
    pub script: String,
    pub job_id: String,
}

pub fn run(
    config: ClusterConfig,
    stop: Arc<AtomicBool>,
    application: Option<Application>,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("start tokio runtime", "", e))?;
    let jm = JobManager::new(config.clone())?;
    let (rpc_bind, rest_bind) = config.jobmanager_binds()?;
    let tls = super::tls::TlsSettings::from_config(&config)?;
    let token = config
        .get(super::rest::auth::TOKEN_FILE_KEY)
        .map(super::rest::auth::read_token_file)
        .transpose()?
        .map(super::rest::auth::BearerToken::new);
    rt.block_on(async {
        let rpc = tokio::net::TcpListener::bind(&rpc_bind)
            .await
            .map_err(|e| Error::io("bind jobmanager.rpc.port", rpc_bind.as_str(), e))?;
        let rest = tokio::net::TcpListener::bind(&rest_bind)
            .await
            .map_err(|e| Error::io("bind rest.port", rest_bind.as_str(), e))?;
        let endpoints = Endpoints {
            rpc: rpc
                .local_addr()
                .map_err(|e| Error::io("rpc address", "", e))?,
            rest: rest
                .local_addr()
                .map_err(|e| Error::io("rest address", "", e))?,
        };
        let service = proto::job_manager_server::JobManagerServer::new(Service { jm: jm.clone() })
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let grpc = tonic::transport::Server::builder().add_service(service);
        match &tls.internal {
            // Only taskmanagers holding a certificate of the cluster get a session.
            Some(internal) => {
                let accepted = super::tls::accept_tls(rpc, internal.server(), "rpc");
                let incoming = tokio_stream::wrappers::ReceiverStream::new(accepted)
                    .map(|(stream, _)| Ok::<_, std::io::Error>(stream));
                tokio::spawn(async move {
                    if let Err(e) = grpc.serve_with_incoming(incoming).await {
                        tracing::error!(error = %e, "gRPC server stopped");
                    }
                });
            }
            None => {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(rpc);
                tokio::spawn(async move {
                    if let Err(e) = grpc.serve_with_incoming(incoming).await {
                        tracing::error!(error = %e, "gRPC server stopped");
                    }
                });
            }
        }
        let _reporter = match config.get(reporter::PORT_KEY) {
            Some(ports) => {
                let host = config
                    .get(reporter::HOST_KEY)
                    .unwrap_or(config.get_or("rest.bind-address", DEFAULT_BIND_HOST));
                let weak = Arc::downgrade(&jm);
                let collect: reporter::Collect = Arc::new(move || {
                    weak.upgrade()
                        .map(|jm| super::metrics::jobmanager_families(&jm))
                        .unwrap_or_default()
                });
                Some(super::metrics::start_reporter(ports, host, collect)?)
            }
            None => None,
        };
        let app = super::rest::router(jm.clone(), token);
        match &tls.rest {
            Some(server) => {
                let listener = super::tls::TlsListener::new(rest, server.clone())
                    .map_err(|e| Error::io("rest address", "", e))?;
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app).await {
                        tracing::error!(error = %e, "REST server stopped");
                    }
                });
            }
            None => {
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(rest, app).await {
                        tracing::error!(error = %e, "REST server stopped");
                    }
                });
            }
        }
        // Printed for scripts and tests that start a jobmanager on port 0.
        println!("jobmanager rpc={} rest={}", endpoints.rpc, endpoints.rest);
        tracing::info!(
            rpc = %endpoints.rpc,
            rest = %endpoints.rest,
            internal_tls = tls.internal.is_some(),
            rest_tls = tls.rest.is_some(),
            "jobmanager started"
        );
        let jm2 = jm.clone();
        // Recovery reads storage and compiles scripts: off the reactor.
        let app = application.clone();
        let recovered = tokio::task::spawn_blocking(move || match &app {
            // Application mode: this job only, never others recorded under the same root.
            Some(a) => jm2.start_application(&a.script, &a.job_id).map(|_| 0),
            None => jm2.recover_jobs(),
        })
        .await
        .map_err(|e| Error::Network(format!("recovery task: {e}")))??;
        if recovered > 0 {
            tracing::info!(jobs = recovered, "recovered jobs from checkpoint storage");
        }
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let jm = jm.clone();
            let _ = tokio::task::spawn_blocking(move || {
                jm.check_heartbeats();
                jm.check_jobs();
            })
            .await;
        }
        Ok::<(), Error>(())
    })
}
