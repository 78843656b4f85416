//! The operator proven without a Kubernetes cluster: the real reconciler
//! (`flink_rs_operator::reconcile`) against a stateful model of the API server
//! ([`apiserver`]), with every Deployment it renders realized as real `flink-rs jobmanager`
//! and `taskmanager` processes on 127.0.0.1 ([`kubelet`]). Each scenario runs the bid
//! windows job (exactly-once file sink) through upgrades, suspensions, pod losses, operator
//! crashes and API faults, and compares its output record for record with a failure-free
//! run in the embedded mini-cluster.
//!
//! Scenarios run one at a time (each starts up to a dozen processes on a 2-core machine).
//! `FLINK_RS_SIM_EVENTS` sets the number of events of the random mix (default 100),
//! `FLINK_RS_SIM_SEED` its seed.

mod apiserver;
#[path = "../common/mod.rs"]
mod common;
mod kubelet;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use flink_rs_operator::crd::FlinkJob;
use flink_rs_operator::jm::HttpJm;
use flink_rs_operator::metrics::Metrics;
use flink_rs_operator::reconcile::{Context, reconcile};

use apiserver::{ApiServer, Faults};
use kubelet::{Kubelet, Nodes};

const NS: &str = "jobs";

/// One scenario at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A seeded generator for scenario choices.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

struct Sim {
    api: ApiServer,
    nodes: Nodes,
    kubelet: Option<std::thread::JoinHandle<()>>,
    /// Runs the operator; dropped last.
    _rt: tokio::runtime::Runtime,
    dir: PathBuf,
    /// Per mille of reconcile passes aborted part-way (an operator crash).
    crash: Arc<AtomicU32>,
    operator: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(op) = self.operator.take() {
            op.abort();
        }
        self.nodes.stop();
        if let Some(k) = self.kubelet.take() {
            let _ = k.join();
        }
    }
}

/// What calls the reconciler.
#[derive(Clone, Copy, PartialEq)]
enum Driver {
    /// The operator's own controllers (`reconcile::controller`, as the binary runs them),
    /// over HTTP with watches.
    Controllers,
    /// A loop over every FlinkJob every 150 ms, able to abort a pass part-way (an operator
    /// crash); over kube's in-process mock transport.
    Loop,
}

impl Sim {
    fn start(dir: &Path, seed: u64) -> Sim {
        Self::start_with(dir, seed, Driver::Loop)
    }

    fn start_with(dir: &Path, seed: u64, driver: Driver) -> Sim {
        flink_rs_operator::install_crypto_provider();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let api = ApiServer::new(seed);
        let (nodes, kubelet) = Kubelet::start(api.clone(), dir.to_path_buf());
        let crash = Arc::new(AtomicU32::new(0));
        let operator = {
            let _guard = rt.enter();
            let client = match driver {
                Driver::Loop => api.client(),
                Driver::Controllers => rt.block_on(api.serve()),
            };
            let n = nodes.clone();
            let mut ctx = Context::with(
                client.clone(),
                Arc::new(HttpJm::default()),
                Box::new(move |fj: &FlinkJob| {
                    n.rest_url(
                        fj.metadata.namespace.as_deref().unwrap_or_default(),
                        fj.metadata.name.as_deref().unwrap_or_default(),
                    )
                }),
                Arc::new(Metrics::default()),
            );
            ctx.policy.restart_backoff = Duration::from_secs(1);
            // As the chart runs it: jobs write only where the scenarios' outputs are, and
            // to their checkpoint storage (`bucket`, allowed by the operator itself).
            let outputs = ["out", "out-a", "out-a2", "out-b", "out-c"];
            let ctx = ctx.with_allowed_paths(
                outputs
                    .iter()
                    .map(|o| dir.join(o).display().to_string())
                    .collect(),
            );
            let ctx = Arc::new(ctx.with_network_policies(
                flink_rs_operator::resources::OperatorPeer {
                    namespace: "flink-ops".into(),
                    name_label: "flink-rs-operator".into(),
                },
            ));
            let api = api.clone();
            let crash = crash.clone();
            if driver == Driver::Controllers {
                rt.spawn(async move {
                    flink_rs_operator::reconcile::controller::run_controllers(
                        client,
                        ctx,
                        &[],
                        false,
                    )
                    .await
                })
            } else {
                rt.spawn(async move {
                    let mut rng = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
                    loop {
                        for obj in api.list("flinkjobs") {
                            let Ok(fj) = serde_json::from_value::<FlinkJob>(obj) else {
                                continue;
                            };
                            let pass = tokio::spawn(reconcile(Arc::new(fj), ctx.clone()));
                            if rng.below(1000) < u64::from(crash.load(Ordering::Relaxed)) {
                                // The operator dies part-way through the pass.
                                tokio::time::sleep(Duration::from_millis(rng.below(40))).await;
                                pass.abort();
                            }
                            let _ = pass.await;
                        }
                        tokio::time::sleep(Duration::from_millis(150)).await;
                    }
                })
            }
        };
        Sim {
            api,
            nodes,
            kubelet: Some(kubelet),
            _rt: rt,
            dir: dir.to_path_buf(),
            crash,
            operator: Some(operator),
        }
    }

    fn manifest(&self, name: &str, out: &Path, rows: u64, rate: u64) -> Value {
        json!({
            "apiVersion": "flinkrs.io/v1alpha1", "kind": "FlinkJob",
            "metadata": { "name": name, "namespace": NS },
            "spec": {
                "image": "flink-rs:sim",
                "flinkConfiguration": { "heartbeat.interval": "200", "heartbeat.timeout": "3000" },
                "job": {
                    "sql": common::job(&out.display().to_string(), rows, rate),
                    "parallelism": 2,
                    "upgradeMode": "savepoint",
                },
                "taskManager": { "replicas": 2, "slots": 1 },
                "checkpointing": {
                    "storage": self.dir.join("bucket").display().to_string(),
                    "interval": "500 ms",
                },
            },
        })
    }

    fn object(&self, name: &str) -> Value {
        self.api.get("flinkjobs", NS, name).unwrap_or(Value::Null)
    }

    /// Changes the spec as `kubectl edit` would.
    fn edit(&self, name: &str, f: impl FnOnce(&mut Value)) {
        let mut obj = self.object(name);
        f(&mut obj["spec"]);
        self.api.put("flinkjobs", obj);
    }

    fn status(&self, name: &str) -> Value {
        self.object(name)["status"].clone()
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        let mut files: Vec<_> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        files.sort();
        for p in files {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(6).collect();
            out.push_str(&format!("--- {}\n", p.display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        let events: Vec<String> = self
            .api
            .list("events")
            .iter()
            .map(|e| format!("{} {}: {}", e["type"], e["reason"], e["note"]))
            .collect();
        format!("{out}--- events\n{}", events.join("\n"))
    }

    fn wait(&self, what: &str, timeout: Duration, mut f: impl FnMut(&Sim) -> bool) {
        let until = Instant::now() + timeout;
        while !f(self) {
            assert!(
                Instant::now() < until,
                "timed out waiting for {what}\nstatus: {}\n{}",
                serde_json::to_string_pretty(&self.api.list("flinkjobs")).unwrap_or_default(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the job of the current deployment runs and has checkpointed.
    fn wait_checkpointing(&self, name: &str) {
        let before = self.status(name);
        let (job, id) = (
            before["jobId"].clone(),
            before["lastCheckpoint"]["id"].clone(),
        );
        self.wait("a new checkpoint", Duration::from_secs(90), |s| {
            let st = s.status(name);
            let current = st["jobId"].as_str().unwrap_or("-");
            st["lifecycleState"] == "Running"
                && st["jobState"] == "RUNNING"
                && st["lastCheckpoint"]["path"]
                    .as_str()
                    .is_some_and(|p| p.contains(current))
                && (st["jobId"] != job || st["lastCheckpoint"]["id"] != id)
        });
    }

    fn wait_finished(&self, name: &str) {
        self.wait("the job to finish", Duration::from_secs(240), |s| {
            let st = s.status(name);
            st["jobState"] == "FINISHED" && st["pendingSavepoint"].is_null()
        });
    }

    /// The FlinkJob's REST token, from the Secret the operator made (as a user reads it).
    fn rest_token(&self, name: &str) -> String {
        use base64::Engine as _;
        let secret = self
            .api
            .get("secrets", NS, &format!("{name}-rest-token"))
            .expect("the REST token Secret");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["token"].as_str().unwrap_or_default())
            .expect("base64");
        String::from_utf8(bytes).expect("utf-8")
    }

    /// A jobmanager REST call to the FlinkJob's Service, with the job's token.
    fn rest(&self, name: &str, path: &str) -> Value {
        let client = flink_rs::cluster::client::RestClient::new(&self.nodes.rest_url(NS, name))
            .expect("client")
            .with_token(self.rest_token(name));
        client.get(path).unwrap_or(Value::Null)
    }

    fn events(&self, reason: &str) -> usize {
        self.api
            .list("events")
            .iter()
            .filter(|e| e["reason"] == reason)
            .count()
    }
}

/// The bid windows job without failures, in the embedded mini-cluster.
fn reference(dir: &Path, rows: u64) -> Vec<String> {
    let out = dir.join("reference");
    let sql = common::job(&out.display().to_string(), rows, 0)
        .replace("SET 'execution.checkpointing.interval' = '500 ms';", "");
    let compiled = flink_rs::sql::compile(&sql, flink_rs::graph::ExecutionConfig::default(), &[])
        .expect("compile");
    compiled.env.execute().expect("reference run");
    common::committed(&out)
}

fn bump_memory(spec: &mut Value, mode: &str) {
    let m = spec["jobManager"]["resources"]["memory"]
        .as_str()
        .and_then(|m| m.trim_end_matches("Mi").parse::<u32>().ok())
        .unwrap_or(1000);
    spec["jobManager"]["resources"]["memory"] = json!(format!("{}Mi", m + 1));
    spec["job"]["upgradeMode"] = json!(mode);
}

fn assert_exactly_once(sim: &Sim, out: &Path, expected: &[String]) {
    let got = common::committed(out);
    assert!(
        got == expected,
        "output differs from the failure-free run: {} lines against {}\n{}",
        got.len(),
        expected.len(),
        sim.logs()
    );
}

const ROWS: u64 = 90_000;
const RATE: u64 = 3_000;

/// A scenario's simulation with the FlinkJob `bids` (`rows` bids into `out`) running and
/// checkpointing, and the failure-free run's output. Fields drop in order: the processes
/// stop before their folder goes.
struct Scenario {
    sim: Sim,
    out: PathBuf,
    expected: Vec<String>,
    _tmp: tempfile::TempDir,
    _one: MutexGuard<'static, ()>,
}

fn start_bids(seed: u64, rows: u64) -> Scenario {
    start_bids_with(seed, rows, Driver::Loop)
}

fn start_bids_with(seed: u64, rows: u64, driver: Driver) -> Scenario {
    let one = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let expected = reference(tmp.path(), rows);
    let sim = Sim::start_with(tmp.path(), seed, driver);
    let out = tmp.path().join("out");
    sim.api
        .put("flinkjobs", sim.manifest("bids", &out, rows, RATE));
    sim.wait_checkpointing("bids");
    Scenario {
        sim,
        out,
        expected,
        _tmp: tmp,
        _one: one,
    }
}

#[test]
fn upgrades_and_pod_losses_keep_exactly_once() {
    let Scenario {
        sim, out, expected, ..
    } = &start_bids(1, ROWS);
    let first = sim.status("bids")["jobId"].clone();

    // Savepoint upgrade: a new job from a savepoint.
    sim.edit("bids", |s| bump_memory(s, "savepoint"));
    sim.wait("the upgrade", Duration::from_secs(60), |s| {
        s.status("bids")["jobId"] != first
    });
    let st = sim.status("bids");
    assert_eq!(st["savepoints"][0]["trigger"], "upgrade", "{st}");
    assert_eq!(st["restoredFrom"], st["savepoints"][0]["path"]);
    sim.wait_checkpointing("bids");

    // The jobmanager pod dies after a savepoint restore: the job resumes from its own
    // latest checkpoint, though the ConfigMap still names the savepoint.
    sim.nodes.delete_pod(NS, "bids-jobmanager", 0);
    sim.wait_checkpointing("bids");
    let restored = sim.rest(
        "bids",
        &format!(
            "/jobs/{}/checkpoints",
            sim.status("bids")["jobId"].as_str().unwrap_or_default()
        ),
    );
    let from = restored["latest"]["restored"]["external_path"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        from.contains("/chk-"),
        "restored from its own checkpoint, not the savepoint: {from}"
    );
    // The job's REST API takes only the job's own token (the operator's, in its Secret).
    let client = flink_rs::cluster::client::RestClient::new(&sim.nodes.rest_url(NS, "bids"))
        .expect("client");
    let refused = client.get("/jobs").expect_err("no token");
    assert!(refused.to_string().contains("401"), "{refused}");
    let wrong = client
        .with_token("0".repeat(64))
        .get("/jobs")
        .expect_err("another token");
    assert!(wrong.to_string().contains("401"), "{wrong}");

    // Last-state upgrade, then a taskmanager pod lost.
    let id = sim.status("bids")["jobId"].clone();
    sim.edit("bids", |s| bump_memory(s, "last-state"));
    sim.wait("the last-state upgrade", Duration::from_secs(60), |s| {
        s.status("bids")["lifecycleState"] == "Upgrading"
    });
    sim.wait_checkpointing("bids");
    assert_eq!(sim.status("bids")["jobId"], id, "last-state keeps the job");
    sim.nodes.delete_pod(NS, "bids-taskmanager", 1);
    sim.wait_finished("bids");
    assert_exactly_once(sim, out, expected);
}

/// A job that finished has committed all of its output: a spec change (either upgrade mode)
/// or a lost jobmanager pod afterwards must not run it again from a checkpoint, which
/// would repeat what it committed at its end.
#[test]
fn a_finished_job_stays_finished_through_upgrades_and_pod_losses() {
    let Scenario {
        sim, out, expected, ..
    } = &start_bids(4, 30_000);
    sim.wait_finished("bids");
    assert_exactly_once(sim, out, expected);
    let id = sim.status("bids")["jobId"].clone();
    for (i, mode) in ["last-state", "savepoint"].into_iter().enumerate() {
        let deployments = sim.status("bids")["deployments"].clone();
        sim.edit("bids", |s| bump_memory(s, mode));
        sim.wait("the upgrade", Duration::from_secs(60), |s| {
            s.status("bids")["deployments"] != deployments
        });
        sim.wait_finished("bids");
        if i == 0 {
            sim.nodes.delete_pod(NS, "bids-jobmanager", 0);
        }
        // Long enough for a job run again to write its tail (checkpoints every 500 ms).
        std::thread::sleep(Duration::from_secs(4));
        sim.wait_finished("bids");
        assert_eq!(sim.status("bids")["jobId"], id, "{mode}: the same job");
        assert_exactly_once(sim, out, expected);
    }
}

/// A job whose sink lies outside the operator's allowed paths does not start: its
/// jobmanager refuses the script naming the path and the key, and the FlinkJob shows the
/// pods failing; nothing is written there.
#[test]
fn a_job_writing_outside_the_allowed_paths_does_not_start() {
    let _one = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let sim = Sim::start(tmp.path(), 6);
    let elsewhere = tmp.path().join("elsewhere");
    sim.api
        .put("flinkjobs", sim.manifest("rogue", &elsewhere, 1_000, 0));
    sim.wait("the pods to fail", Duration::from_secs(60), |s| {
        s.status("rogue")["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Degraded" && c["reason"] == "PodsUnhealthy")
    });
    let logs = sim.logs();
    assert!(
        logs.contains("flink-rs.filesystem.allowed-paths")
            && logs.contains(&elsewhere.display().to_string()),
        "{logs}"
    );
    assert!(!elsewhere.exists(), "nothing written outside");
}

/// The operator's own controllers (watches on FlinkJobs and, by label, on what they own)
/// against the model served over HTTP: a job through a savepoint upgrade and a
/// taskmanager pod loss.
#[test]
fn the_operator_s_controllers_over_watches_keep_exactly_once() {
    let Scenario {
        sim, out, expected, ..
    } = &start_bids_with(5, ROWS, Driver::Controllers);
    let first = sim.status("bids")["jobId"].clone();
    sim.edit("bids", |s| bump_memory(s, "savepoint"));
    sim.wait("the upgrade", Duration::from_secs(60), |s| {
        s.status("bids")["jobId"] != first
    });
    sim.wait_checkpointing("bids");
    sim.nodes.delete_pod(NS, "bids-taskmanager", 0);
    sim.wait_finished("bids");
    assert_exactly_once(sim, out, expected);
}

#[test]
fn suspend_and_resume_keep_exactly_once() {
    let Scenario {
        sim, out, expected, ..
    } = &start_bids(2, ROWS);
    sim.edit("bids", |s| s["job"]["state"] = json!("suspended"));
    sim.wait("the suspension", Duration::from_secs(60), |s| {
        s.status("bids")["lifecycleState"] == "Suspended"
    });
    let st = sim.status("bids");
    assert_eq!(st["savepoints"][0]["trigger"], "suspend", "{st}");
    let lines = common::committed(out).len();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        common::committed(out).len(),
        lines,
        "nothing runs while suspended"
    );
    sim.wait("no pods", Duration::from_secs(30), |s| {
        s.api.list("pods").is_empty()
    });

    // Suspended again while the jobmanager is gone (no savepoint possible): resumes from
    // its latest checkpoint.
    sim.edit("bids", |s| s["job"]["state"] = json!("running"));
    sim.wait_checkpointing("bids");
    sim.nodes.delete_pod(NS, "bids-jobmanager", 0);
    sim.edit("bids", |s| s["job"]["state"] = json!("suspended"));
    sim.wait("the second suspension", Duration::from_secs(60), |s| {
        s.status("bids")["lifecycleState"] == "Suspended"
    });
    sim.edit("bids", |s| s["job"]["state"] = json!("running"));
    sim.wait_finished("bids");
    assert_exactly_once(sim, out, expected);
}

#[test]
fn two_flinkjobs_on_one_bucket_and_one_deleted_and_created_again() {
    let _one = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let expected = reference(tmp.path(), ROWS);
    let sim = Sim::start(tmp.path(), 3);
    let (out_a, out_b, out_c) = (
        tmp.path().join("out-a"),
        tmp.path().join("out-b"),
        tmp.path().join("out-c"),
    );
    sim.api
        .put("flinkjobs", sim.manifest("a", &out_a, ROWS, RATE));
    sim.api
        .put("flinkjobs", sim.manifest("b", &out_b, ROWS, RATE));
    sim.wait_checkpointing("a");
    sim.wait_checkpointing("b");
    // Each jobmanager runs its own job only.
    for name in ["a", "b"] {
        let jobs = sim.rest(name, "/jobs");
        assert_eq!(
            jobs["jobs"].as_array().map(Vec::len),
            Some(1),
            "{name}: {jobs}"
        );
    }
    // A stateless upgrade of `a` that also moves its output: a new job from nothing, and
    // the old one writes nothing more.
    let out_a2 = tmp.path().join("out-a2");
    let first_a = sim.status("a")["jobId"].clone();
    sim.edit("a", |s| {
        s["job"]["upgradeMode"] = json!("stateless");
        s["job"]["sql"] = json!(common::job(&out_a2.display().to_string(), ROWS, RATE));
    });
    sim.wait("a's stateless upgrade", Duration::from_secs(60), |s| {
        let st = s.status("a");
        st["jobId"] != first_a && st["restoredFrom"].is_null()
    });
    // Each job has a CA of its own (internal TLS, on by default) and NetworkPolicies
    // admitting only its own pods.
    let ca = |name: &str| {
        sim.api
            .get("secrets", NS, &format!("{name}-tls"))
            .map(|s| s["data"]["ca.pem"].clone())
            .expect("the job's TLS Secret")
    };
    assert_ne!(ca("a"), ca("b"), "two jobs, two CAs");
    // The pods run with it: every process of `a` started with internal TLS on.
    let started: Vec<String> = std::fs::read_dir(&sim.dir)
        .expect("sim dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("a-"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|t| {
            t.lines()
                .filter(|l| l.contains(" started "))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        started.len() >= 3 && started.iter().all(|l| l.contains("internal_tls=true")),
        "{started:?}"
    );
    for name in ["a", "b"] {
        for component in ["jobmanager", "taskmanager"] {
            let p = sim
                .api
                .get("networkpolicies", NS, &format!("{name}-{component}"))
                .expect("NetworkPolicy");
            assert_eq!(
                p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"],
                name
            );
        }
    }
    // `b` deleted with a savepoint; its pods and objects go.
    sim.edit("b", |s| s["job"]["savepointOnDeletion"] = json!(true));
    std::thread::sleep(Duration::from_millis(500));
    sim.api.delete("flinkjobs", NS, "b");
    sim.wait("b gone", Duration::from_secs(60), |s| {
        s.object("b").is_null() && s.api.get("deployments", NS, "b-jobmanager").is_none()
    });
    assert!(sim.events("Deleting") >= 1);
    sim.wait(
        "b's Secret and NetworkPolicies collected",
        Duration::from_secs(30),
        |s| {
            s.api.get("secrets", NS, "b-tls").is_none()
                && s.api.get("networkpolicies", NS, "b-jobmanager").is_none()
                && s.api.get("networkpolicies", NS, "b-taskmanager").is_none()
        },
    );
    sim.wait("b's pods gone", Duration::from_secs(30), |s| {
        !s.api
            .list("pods")
            .iter()
            .any(|p| p["metadata"]["labels"]["app.kubernetes.io/instance"] == "b")
    });
    let b_lines = common::committed(&out_b).len();
    // Created again with the same name, writing elsewhere: a new job from nothing, and the
    // deleted one does not come back.
    sim.api
        .put("flinkjobs", sim.manifest("b", &out_c, ROWS, RATE));
    sim.wait_finished("a");
    sim.wait_finished("b");
    assert_exactly_once(&sim, &out_a2, &expected);
    let old_a = common::committed(&out_a);
    assert!(
        old_a.len() < expected.len() && old_a.iter().all(|l| expected.contains(l)),
        "the job before the stateless upgrade wrote a part of the output, once"
    );
    assert_exactly_once(&sim, &out_c, &expected);
    assert_eq!(
        common::committed(&out_b).len(),
        b_lines,
        "the deleted job wrote nothing more"
    );
}

#[test]
fn operator_crashes_and_api_faults_on_every_write_keep_exactly_once() {
    let Scenario {
        sim, out, expected, ..
    } = &start_bids(4, ROWS);
    sim.api.set_faults(Faults {
        error_before: 150,
        error_after: 150,
        conflict: 100,
    });
    sim.crash.store(300, Ordering::Relaxed);
    let first = sim.status("bids")["jobId"].clone();
    sim.edit("bids", |s| bump_memory(s, "savepoint"));
    sim.wait("the upgrade", Duration::from_secs(120), |s| {
        let st = s.status("bids");
        st["jobId"] != first && st["jobState"] == "RUNNING"
    });
    sim.edit("bids", |s| s["job"]["state"] = json!("suspended"));
    sim.wait("the suspension", Duration::from_secs(120), |s| {
        s.status("bids")["lifecycleState"] == "Suspended"
    });
    sim.edit("bids", |s| s["job"]["state"] = json!("running"));
    sim.wait_finished("bids");
    let injected = sim.api.state.lock().map(|s| s.injected).unwrap_or(0);
    assert!(injected > 10, "faults were injected: {injected}");
    assert!(sim.events("ReconcileError") > 0, "failures show as Events");
    assert_exactly_once(sim, out, expected);
}

/// A seeded random mix of everything above, with events arriving mid-transition.
#[test]
fn seeded_random_mix_of_events_keeps_exactly_once() {
    let events: u64 = std::env::var("FLINK_RS_SIM_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let seed: u64 = std::env::var("FLINK_RS_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_261_130);
    eprintln!("random mix: {events} events, seed {seed} (FLINK_RS_SIM_EVENTS, FLINK_RS_SIM_SEED)");
    let rows = 120_000 + events * 300;
    let Scenario {
        sim, out, expected, ..
    } = &start_bids(seed, rows);
    let mut rng = Rng(seed | 1);
    let mut suspended = false;
    let mut log = Vec::new();
    for i in 0..events {
        let what = rng.below(9);
        match what {
            0 | 1 => sim.edit("bids", |s| {
                bump_memory(s, if what == 0 { "savepoint" } else { "last-state" })
            }),
            2 => {
                suspended = !suspended;
                let state = if suspended { "suspended" } else { "running" };
                sim.edit("bids", |s| s["job"]["state"] = json!(state));
            }
            3 => sim.nodes.delete_pod(NS, "bids-jobmanager", 0),
            4 => sim
                .nodes
                .delete_pod(NS, "bids-taskmanager", rng.below(2) as usize),
            5 => sim
                .crash
                .store(if rng.below(2) == 0 { 500 } else { 0 }, Ordering::Relaxed),
            6 => sim.api.set_faults(if rng.below(2) == 0 {
                Faults {
                    error_before: 200,
                    error_after: 200,
                    conflict: 100,
                }
            } else {
                Faults::default()
            }),
            7 => sim.edit("bids", |s| {
                let n = s["job"]["savepointTriggerNonce"].as_i64().unwrap_or(0);
                s["job"]["savepointTriggerNonce"] = json!(n + 1);
            }),
            _ => {}
        }
        log.push(what);
        // Events land mid-transition and between them.
        std::thread::sleep(Duration::from_millis(100 + rng.below(600)));
        if i % 10 == 9 {
            eprintln!(
                "{} events, status {}",
                i + 1,
                sim.status("bids")["lifecycleState"]
            );
        }
    }
    sim.crash.store(0, Ordering::Relaxed);
    sim.api.set_faults(Faults::default());
    sim.edit("bids", |s| s["job"]["state"] = json!("running"));
    sim.wait_finished("bids");
    eprintln!(
        "random mix done: {} savepoints, {} deployments, events {log:?}",
        sim.status("bids")["savepoints"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0),
        sim.status("bids")["deployments"]
    );
    assert_exactly_once(sim, out, expected);
}
