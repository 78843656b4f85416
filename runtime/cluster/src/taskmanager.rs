//! `flink-rs taskmanager`: offers its slots to the jobmanager and runs the tasks placed on
//! them.
//!
//! The process keeps one gRPC session with the jobmanager. When the session breaks (the
//! jobmanager died or restarted) every task here is cancelled (the job master that owned them
//! is gone) and the taskmanager registers again, every second, until a jobmanager answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::ClusterError;
use super::config::{ClusterConfig, DEFAULT_BIND_HOST, binds_all_interfaces, execution_config};
use super::net::{self, DataServer};
use super::proto::{self, from_task_manager, to_task_manager};
use flink_rs_core::checkpoint::writer::{StateHandles, StateLayout};
use flink_rs_core::checkpoint::{Barrier, CheckpointStorage, SnapshotKind, load_checkpoint};
use flink_rs_core::error::{Error, Result};
use flink_rs_core::exchange::TaskMetrics;
use flink_rs_core::executor::{Attempt, Hosting, chains, deploy_share, task_list};
use flink_rs_core::task::{SnapshotData, TaskControl, TaskEvent};

use flink_rs_core::executor::TaskStats;
use flink_rs_metrics::scopes::{self, TaskScope};
use flink_rs_metrics::{Families, Rates, reporter};

use super::snapshot_writer::{SnapshotWriter, Targets, handles_from_proto, handles_to_proto};
use super::tls::{GrpcConnector, TlsSettings};

/// What a taskmanager is configured with.
#[derive(Debug, Clone)]
pub struct TaskManagerOptions {
    /// host:port of the jobmanager's gRPC endpoint.
    pub jobmanager: String,
    pub slots: u32,
    /// Where the data port listens (`taskmanager.bind-host`, `taskmanager.data.port`).
    pub data_bind: String,
    /// The host other taskmanagers reach this one at (`taskmanager.host`).
    pub advertised_host: String,
    /// The machine's physical memory, reported to the jobmanager (`hardware.physicalMemory`).
    pub memory_bytes: u64,
    /// `metrics.reporter.prom.port` (a port or a range), when set.
    pub metrics_port: Option<String>,
    /// `metrics.reporter.prom.host`, by default `taskmanager.bind-host`.
    pub metrics_host: String,
    /// `security.ssl.*`: internal TLS for the session with the jobmanager and the data plane.
    pub tls: TlsSettings,
}

impl TaskManagerOptions {
    pub fn from_config(cfg: &ClusterConfig) -> Result<Self> {
        let jm_host = cfg.get_or("jobmanager.rpc.address", "localhost");
        let jm_port = cfg.number("jobmanager.rpc.port", 6123)?;
        let jobmanager = if jm_host.contains(':') {
            jm_host.to_string()
        } else {
            format!("{jm_host}:{jm_port}")
        };
        let bind_host = cfg.get_or("taskmanager.bind-host", DEFAULT_BIND_HOST);
        // Others reach this taskmanager where it listens: on all interfaces, at the address
        // that routes to the jobmanager (in a container network, the container's own).
        let host = match cfg.get("taskmanager.host") {
            Some(h) => h.to_string(),
            None if binds_all_interfaces(bind_host) => {
                route_address(&jobmanager).unwrap_or_else(hostname)
            }
            None => bind_host.to_string(),
        };
        Ok(TaskManagerOptions {
            jobmanager,
            slots: cfg.number("taskmanager.numberOfTaskSlots", 1)?.max(1) as u32,
            data_bind: format!("{}:{}", bind_host, cfg.number("taskmanager.data.port", 0)?),
            advertised_host: host,
            memory_bytes: flink_rs_metrics::process::physical_memory_bytes().unwrap_or(0),
            metrics_port: cfg.get(reporter::PORT_KEY).map(str::to_string),
            metrics_host: cfg.get(reporter::HOST_KEY).unwrap_or(bind_host).to_string(),
            tls: TlsSettings::from_config(cfg)?,
        })
    }
}

/// The local address this host uses to reach `peer` (no packet is sent: connecting a UDP
/// socket only picks the route). In a container network that is the container's own
/// address, reachable by the other taskmanagers.
fn route_address(peer: &str) -> Option<String> {
    use std::net::ToSocketAddrs;
    let addr = peer.to_socket_addrs().ok()?.next()?;
    let bind = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(addr).ok()?;
    Some(s.local_addr().ok()?.ip().to_string())
}

fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_i64(flink_rs_core::operator::now_millis());
    h.finish() as u32
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "127.0.0.1".into())
}

/// A taskmanager's share of one attempt.
struct Share {
    attempt: Attempt,
    /// Where its snapshots go, as the jobmanager says.
    targets: Arc<Targets>,
    /// Stops the attempt's outgoing data connections.
    net_cancel: Arc<AtomicBool>,
    metrics: Vec<(u32, Arc<TaskMetrics>)>,
    job_id: String,
    /// `pipeline.name`, else the job id.
    job_name: String,
}

type Shares = Arc<Mutex<HashMap<u64, Share>>>;
type Outbound = mpsc::UnboundedSender<proto::FromTaskManager>;

/// Runs a taskmanager until `stop` is set (or forever).
pub fn run(opts: TaskManagerOptions, stop: Arc<AtomicBool>) -> Result<()> {
    let data = Arc::new(DataServer::start(
        &opts.data_bind,
        opts.tls.internal.clone(),
    )?);
    let data_address = format!("{}:{}", opts.advertised_host, data.local_addr().port());
    // The data address is unique among live taskmanagers; the random part tells a
    // restarted process on the same address from its predecessor.
    let id = format!("tm-{data_address}-{:08x}", random_u32());
    tracing::info!(
        id = %id,
        data = %data_address,
        slots = opts.slots,
        jobmanager = %opts.jobmanager,
        internal_tls = opts.tls.internal.is_some(),
        "taskmanager started"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("start tokio runtime", "", e))?;
    let shares: Shares = Arc::default();
    let _reporter = match &opts.metrics_port {
        Some(ports) => {
            let collect: reporter::Collect = {
                let (shares, id, host) = (shares.clone(), id.clone(), opts.advertised_host.clone());
                let rates = Arc::new(Rates::default());
                Arc::new(move || metrics_of(&shares, &id, &host, &rates))
            };
            Some(crate::metrics::start_reporter(
                ports,
                &opts.metrics_host,
                collect,
            )?)
        }
        None => None,
    };
    while !stop.load(Ordering::Relaxed) {
        let r = rt.block_on(session(&opts, &id, &data_address, &data, &shares));
        // Whatever ended the session, the tasks here belong to a job master we lost.
        cancel_all(&shares, &data);
        match r {
            Ok(()) => tracing::warn!("jobmanager closed the session; registering again"),
            Err(e) if !e.is_retryable() => return Err(e.into()),
            Err(e) => tracing::info!(error = %e, "no session with the jobmanager; retrying"),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(())
}

fn cancel_all(shares: &Shares, data: &DataServer) {
    let all: Vec<(u64, Share)> = shares
        .lock()
        .map(|mut m| m.drain().collect())
        .unwrap_or_default();
    for (a, s) in all {
        data.unregister(a);
        s.net_cancel.store(true, Ordering::SeqCst);
        s.attempt.teardown();
    }
}

async fn session(
    opts: &TaskManagerOptions,
    id: &str,
    data_address: &str,
    data: &Arc<DataServer>,
    shares: &Shares,
) -> Result<(), ClusterError> {
    let address = opts.jobmanager.clone();
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{address}")).map_err(|source| {
            ClusterError::InvalidAddress {
                address: address.clone(),
                source,
            }
        })?;
    let connected = match &opts.tls.internal {
        Some(tls) => {
            endpoint
                .connect_with_connector(GrpcConnector::new(tls))
                .await
        }
        None => endpoint.connect().await,
    };
    let channel = connected.map_err(|source| ClusterError::Unreachable {
        address: address.clone(),
        source,
    })?;
    let mut client = proto::job_manager_client::JobManagerClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let (out, out_rx) = mpsc::unbounded_channel();
    let _ = out.send(proto::FromTaskManager {
        msg: Some(from_task_manager::Msg::Register(proto::Register {
            taskmanager_id: id.to_string(),
            data_address: data_address.to_string(),
            slots: opts.slots,
            memory_bytes: opts.memory_bytes,
        })),
    });
    let mut inbound = client
        .session(UnboundedReceiverStream::new(out_rx))
        .await
        .map_err(|status| ClusterError::SessionLost {
            address: address.clone(),
            status: Box::new(status),
        })?
        .into_inner();
    tracing::info!(jobmanager = %opts.jobmanager, "registered");
    let mut heartbeat: Option<tokio::task::JoinHandle<()>> = None;
    let result = loop {
        let msg = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => break Ok(()),
            Err(status) => {
                break Err(ClusterError::SessionLost {
                    address: address.clone(),
                    status: Box::new(status),
                });
            }
        };
        match msg.msg {
            Some(to_task_manager::Msg::Registered(r)) => {
                let interval = Duration::from_millis(r.heartbeat_interval_ms.max(50));
                let out = out.clone();
                let shares = shares.clone();
                if let Some(h) = heartbeat.take() {
                    h.abort();
                }
                heartbeat = Some(tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(interval).await;
                        if out.send(heartbeat_message(&shares)).is_err() {
                            return;
                        }
                    }
                }));
            }
            Some(to_task_manager::Msg::Deploy(d)) => {
                let (out, data, shares, me) = (
                    out.clone(),
                    data.clone(),
                    shares.clone(),
                    data_address.to_string(),
                );
                tokio::task::spawn_blocking(move || {
                    let attempt = d.attempt;
                    let error = match deploy(d, &data, &me, &out) {
                        Ok(share) => {
                            if let Ok(mut m) = shares.lock() {
                                m.insert(attempt, share);
                            }
                            String::new()
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "deployment refused");
                            e.to_string()
                        }
                    };
                    let _ = out.send(proto::FromTaskManager {
                        msg: Some(from_task_manager::Msg::Deployed(proto::Deployed {
                            attempt,
                            error,
                        })),
                    });
                });
            }
            Some(to_task_manager::Msg::Control(c)) => control(shares, c),
            Some(to_task_manager::Msg::Cancel(c)) => {
                let share = shares.lock().ok().and_then(|mut m| m.remove(&c.attempt));
                data.unregister(c.attempt);
                if let Some(s) = share {
                    s.net_cancel.store(true, Ordering::SeqCst);
                    tokio::task::spawn_blocking(move || s.attempt.teardown());
                }
            }
            None => {}
        }
    };
    if let Some(h) = heartbeat {
        h.abort();
    }
    result
}

fn heartbeat_message(shares: &Shares) -> proto::FromTaskManager {
    let mut tasks = Vec::new();
    if let Ok(m) = shares.lock() {
        for (attempt, s) in m.iter() {
            for (task, metrics) in &s.metrics {
                tasks.push(proto::TaskCounters {
                    attempt: *attempt,
                    task: *task,
                    records_in: metrics.records_in.load(Ordering::Relaxed),
                    records_out: metrics.records_out.load(Ordering::Relaxed),
                    backpressured_ns: metrics.backpressured().as_nanos() as u64,
                    watermark: metrics.watermark.load(Ordering::Relaxed),
                    idle_ns: metrics.idle_ns.load(Ordering::Relaxed),
                    input_watermark: metrics.input_watermark.load(Ordering::Relaxed),
                    bytes_in: metrics.bytes_in.load(Ordering::Relaxed),
                    bytes_out: metrics.bytes_out.load(Ordering::Relaxed),
                });
            }
        }
    }
    proto::FromTaskManager {
        msg: Some(from_task_manager::Msg::Heartbeat(proto::Heartbeat {
            tasks,
        })),
    }
}

fn control(shares: &Shares, c: proto::Control) {
    use proto::control::Kind;
    let ctl = match c.kind {
        Some(Kind::Trigger(t)) => TaskControl::Trigger(Barrier {
            id: t.checkpoint_id,
            kind: if t.kind == 1 {
                SnapshotKind::Savepoint
            } else {
                SnapshotKind::Checkpoint
            },
            stop: t.stop,
            base: Some(t.base).filter(|b| *b != 0),
        }),
        Some(Kind::Complete(id)) => TaskControl::Complete(id),
        Some(Kind::Stop(_)) => TaskControl::Stop,
        Some(Kind::Target(t)) => {
            // For this taskmanager's snapshot writer, not for the task.
            if let Ok(m) = shares.lock()
                && let Some(s) = m.get(&c.attempt)
            {
                s.targets.set(t.checkpoint_id, t.storage, t.dir);
            }
            return;
        }
        None => return,
    };
    if let Ok(m) = shares.lock() {
        if let Some(s) = m.get(&c.attempt) {
            if let Some(tx) = s.attempt.controls.get(c.task as usize) {
                tx.send(ctl);
            }
        }
    }
}

fn pairs(s: &[proto::Setting]) -> Vec<(String, String)> {
    s.iter().map(|s| (s.key.clone(), s.value.clone())).collect()
}

/// Compiles the job, restores and starts the tasks placed here, and forwards their events.
fn deploy(d: proto::Deploy, data: &Arc<DataServer>, me: &str, out: &Outbound) -> Result<Share> {
    let base = execution_config(&pairs(&d.settings))?;
    let job = flink_rs_sql::compile(&d.script, base, &pairs(&d.overrides)).map_err(|e| {
        Error::Config {
            key: "script".into(),
            message: e.to_string(),
        }
    })?;
    let mut graph = job.env.graph();
    graph.config.job_id = Some(d.job_id.clone());
    let plan_chains = chains(&graph);
    let names: Vec<String> = task_list(&graph, &plan_chains)
        .into_iter()
        .map(|(_, _, n)| n)
        .collect();
    if names != d.task_names {
        return Err(Error::InvalidGraph(format!(
            "this taskmanager compiles the script into a different plan ({} tasks: {}) than the jobmanager ({} tasks); are both the same flink-rs version?",
            names.len(),
            names.join(", "),
            d.task_names.len()
        )));
    }
    let mut placement = vec![String::new(); names.len()];
    for p in &d.placements {
        if let Some(slot) = placement.get_mut(p.task as usize) {
            *slot = p.address.clone();
        }
    }
    let restored = if d.restore_path.is_empty() {
        None
    } else {
        let s = CheckpointStorage::open(&d.restore_path, &graph.config.checkpoint.storage_options)?;
        Some(load_checkpoint(&s, "")?)
    };
    let attempt_id = d.attempt;
    let net_cancel = Arc::new(AtomicBool::new(false));
    let local = |t: usize| placement.get(t).is_some_and(|a| a == me);
    let connect = |t: usize, channel: u32| {
        let addr = placement
            .get(t)
            .cloned()
            .ok_or_else(|| Error::InvalidGraph(format!("no placement for task {t}")))?;
        net::connect(
            addr,
            attempt_id,
            t,
            channel,
            net_cancel.clone(),
            data.tls().cloned(),
        )
    };
    let register = |t: usize, tx| data.register(attempt_id, t, tx);
    let hosting = Hosting {
        local: &local,
        connect: &connect,
        register_input: &register,
    };
    let (attempt, metrics) = match deploy_share(&graph, restored.as_ref(), attempt_id, &hosting) {
        Ok(x) => x,
        Err(e) => {
            data.unregister(attempt_id);
            net_cancel.store(true, Ordering::SeqCst);
            return Err(e);
        }
    };
    let index: HashMap<&str, u32> = attempt
        .tasks
        .iter()
        .enumerate()
        .map(|(i, (_, _, n))| (n.as_str(), i as u32))
        .collect();
    let metrics: Vec<(u32, Arc<TaskMetrics>)> = metrics
        .into_iter()
        .filter_map(|(n, m)| index.get(n.as_str()).map(|i| (*i, m)))
        .collect();
    tracing::info!(job = %d.job_id, attempt = format!("{attempt_id:016x}"), tasks = ?attempt.tasks.iter().enumerate().filter(|(i, _)| local(*i)).map(|(_, t)| t.2.clone()).collect::<Vec<_>>(), "deployed");
    let events = attempt.events.clone();
    let out = out.clone();
    let counters: HashMap<u32, Arc<TaskMetrics>> =
        metrics.iter().map(|(i, m)| (*i, m.clone())).collect();
    let targets = Arc::new(Targets::default());
    let mut writer = SnapshotWriter::new(
        StateLayout::of(&graph),
        targets.clone(),
        graph.config.checkpoint.storage_options.clone(),
    );
    let subtasks: Vec<usize> = attempt.tasks.iter().map(|(_, s, _)| *s).collect();
    std::thread::Builder::new()
        .name("task-events".into())
        .spawn(move || {
            // Ends when every task of the share has exited (their senders are gone).
            for ev in events.iter() {
                let ev = match ev {
                    TaskEvent::Snapshot {
                        task,
                        id,
                        states: SnapshotData::States(states),
                        sync,
                    } => {
                        // Written here; the event goes when the files are stored.
                        let out = out.clone();
                        let report = move |r: Result<StateHandles>| {
                            let ev = match r {
                                Ok(handles) => TaskEvent::Snapshot {
                                    task,
                                    id,
                                    states: SnapshotData::Written(handles),
                                    sync,
                                },
                                Err(e) => TaskEvent::Declined {
                                    task,
                                    id,
                                    reason: format!("writing its state: {e}"),
                                    finished: false,
                                },
                            };
                            match encode_event(attempt_id, ev, &HashMap::new()) {
                                Ok(msg) => {
                                    let _ = out.send(msg);
                                }
                                Err(e) => tracing::error!(error = %e, "cannot encode a task event"),
                            }
                        };
                        match subtasks.get(task) {
                            Some(&subtask) => writer.write(id, subtask, states, report),
                            None => report(Err(Error::Checkpoint(format!(
                                "task {task} is not part of this attempt"
                            )))),
                        }
                        continue;
                    }
                    ev => ev,
                };
                match encode_event(attempt_id, ev, &counters) {
                    Ok(msg) => {
                        if out.send(msg).is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot encode a task event"),
                }
            }
        })
        .map_err(|e| Error::io("spawn event forwarder", "", e))?;
    Ok(Share {
        attempt,
        targets,
        net_cancel,
        metrics,
        job_id: d.job_id.clone(),
        job_name: graph
            .config
            .pipeline_name
            .clone()
            .unwrap_or_else(|| d.job_id.clone()),
    })
}

/// What this taskmanager's Prometheus endpoint reports: its process and the tasks it runs.
fn metrics_of(shares: &Shares, tm_id: &str, host: &str, rates: &Rates) -> Families {
    let now = Instant::now();
    let mut out = Families::default();
    scopes::process(&mut out, rates, "taskmanager", now);
    if let Ok(m) = shares.lock() {
        for s in m.values() {
            let tasks: Vec<(usize, TaskStats)> = s
                .metrics
                .iter()
                .filter_map(|(i, m)| {
                    let (vertex, _, name) = s.attempt.tasks.get(*i as usize)?;
                    Some((*vertex, TaskStats::read(name, m)))
                })
                .collect();
            let scope = TaskScope {
                host,
                tm_id,
                job_id: &s.job_id,
                job_name: &s.job_name,
            };
            scopes::tasks(&mut out, rates, now, &scope, &tasks);
        }
    }
    rates.prune(now);
    out
}

/// The states as bytes, deferred keyed state encoded first.
fn states_bytes(mut states: flink_rs_core::task::TaskStates) -> Result<Vec<u8>> {
    for (_, snap) in &mut states {
        snap.resolve()?;
    }
    bincode::serialize(&states).map_err(|e| Error::State {
        state: "task snapshot".into(),
        message: e.to_string(),
    })
}

fn encode_event(
    attempt: u64,
    ev: TaskEvent,
    counters: &HashMap<u32, Arc<TaskMetrics>>,
) -> Result<proto::FromTaskManager> {
    use proto::task_event::Event;
    let (task, event) = match ev {
        TaskEvent::Snapshot {
            task,
            id,
            states,
            sync,
        } => (
            task,
            Event::Snapshot(match states {
                SnapshotData::States(states) => proto::Snapshot {
                    checkpoint_id: id,
                    states: states_bytes(states)?,
                    handles: Vec::new(),
                    sync_micros: sync.as_micros() as u64,
                },
                SnapshotData::Written(handles) => proto::Snapshot {
                    checkpoint_id: id,
                    states: Vec::new(),
                    handles: handles_to_proto(handles),
                    sync_micros: sync.as_micros() as u64,
                },
            }),
        ),
        TaskEvent::Declined {
            task,
            id,
            reason,
            finished,
        } => (
            task,
            Event::Declined(proto::Declined {
                checkpoint_id: id,
                reason,
                finished,
            }),
        ),
        TaskEvent::Finished { task, states } => (
            task,
            Event::Finished(proto::Finished {
                states: states_bytes(states)?,
            }),
        ),
        TaskEvent::Exited {
            task,
            error,
            leftovers,
        } => {
            if let Some(chain) = leftovers {
                // Free a failed task's state off this thread.
                let _ = std::thread::Builder::new()
                    .name("free-failed-state".into())
                    .spawn(move || drop(chain));
            }
            let m = counters.get(&(task as u32));
            (
                task,
                Event::Exited(proto::Exited {
                    error: error.map(|e| e.to_string()).unwrap_or_default(),
                    records_in: m.map_or(0, |m| m.records_in.load(Ordering::Relaxed)),
                    records_out: m.map_or(0, |m| m.records_out.load(Ordering::Relaxed)),
                }),
            )
        }
    };
    Ok(proto::FromTaskManager {
        msg: Some(from_task_manager::Msg::Event(proto::TaskEvent {
            attempt,
            task: task as u32,
            event: Some(event),
        })),
    })
}

/// The jobmanager's side of [`encode_event`].
pub(crate) fn decode_event(ev: proto::TaskEvent, task_name: &str) -> Result<TaskEvent> {
    use proto::task_event::Event;
    let task = ev.task as usize;
    let states = |b: &[u8]| -> Result<flink_rs_core::task::TaskStates> {
        bincode::deserialize(b).map_err(|e| Error::State {
            state: format!("snapshot of {task_name}"),
            message: e.to_string(),
        })
    };
    Ok(match ev.event {
        Some(Event::Snapshot(s)) => TaskEvent::Snapshot {
            task,
            id: s.checkpoint_id,
            states: if s.states.is_empty() {
                SnapshotData::Written(handles_from_proto(s.handles, task_name)?)
            } else {
                SnapshotData::States(states(&s.states)?)
            },
            sync: Duration::from_micros(s.sync_micros),
        },
        Some(Event::Declined(d)) => TaskEvent::Declined {
            task,
            id: d.checkpoint_id,
            reason: d.reason,
            finished: d.finished,
        },
        Some(Event::Finished(f)) => TaskEvent::Finished {
            task,
            states: states(&f.states)?,
        },
        Some(Event::Exited(x)) => TaskEvent::Exited {
            task,
            error: (!x.error.is_empty()).then_some(Error::User(x.error)),
            leftovers: None,
        },
        None => return Err(Error::Network("task event without a body".into())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taskmanager_listens_and_is_reached_on_loopback_unless_told_otherwise() -> Result<()> {
        let mut cfg = ClusterConfig::default();
        cfg.set("jobmanager.rpc.address", "192.0.2.10");
        let o = TaskManagerOptions::from_config(&cfg)?;
        assert_eq!(o.data_bind, "127.0.0.1:0");
        assert_eq!(o.advertised_host, "127.0.0.1");
        assert_eq!(o.metrics_host, "127.0.0.1");
        assert!(o.memory_bytes > 0, "the machine's memory");
        // All interfaces: others reach it at the address that routes to the jobmanager.
        cfg.set("jobmanager.rpc.address", "127.0.0.1");
        cfg.set("taskmanager.bind-host", "0.0.0.0");
        let o = TaskManagerOptions::from_config(&cfg)?;
        assert_eq!(o.data_bind, "0.0.0.0:0");
        assert_eq!(o.advertised_host, "127.0.0.1");
        cfg.set("taskmanager.host", "tm-0.example");
        assert_eq!(
            TaskManagerOptions::from_config(&cfg)?.advertised_host,
            "tm-0.example"
        );
        Ok(())
    }

    /// A jobmanager address that no connection can be opened to ends the taskmanager with
    /// an error naming it, instead of a retry loop that logs at info level forever.
    #[test]
    fn an_address_that_cannot_be_an_endpoint_stops_the_taskmanager() -> Result<()> {
        let opts = TaskManagerOptions {
            jobmanager: "job manager:6123".into(),
            slots: 1,
            data_bind: "127.0.0.1:0".into(),
            advertised_host: "127.0.0.1".into(),
            memory_bytes: 0,
            metrics_port: None,
            metrics_host: "127.0.0.1".into(),
            tls: TlsSettings::default(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = stop.clone();
        std::thread::spawn(move || tx.send(run(opts, flag)));
        let ended = rx.recv_timeout(Duration::from_secs(60));
        stop.store(true, Ordering::SeqCst);
        match ended {
            Ok(Err(e)) => {
                let msg = e.to_string();
                assert!(msg.contains("`job manager:6123`"), "{msg}");
                assert!(msg.contains("not a valid endpoint"), "{msg}");
                Ok(())
            }
            Ok(Ok(())) => panic!("the taskmanager ended without an error"),
            Err(_) => panic!("the taskmanager kept retrying an address that cannot work"),
        }
    }
}
