//! Every reconcile branch against kube's mock service (`tower-test`): the requests the
//! reconciler makes, in order, with their bodies. The jobmanager's REST API is the scripted
//! `FakeJm` (no cluster runs here); the end-to-end suite (`tests/e2e`) uses real ones.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use flink_rs_operator::crd::CheckpointInfo;
use flink_rs_operator::crd::{FlinkJob, FlinkJobStatus, LifecycleState};
use flink_rs_operator::jm::{FakeJm, JmClient, JobView};
use flink_rs_operator::metrics::Metrics;
use flink_rs_operator::reconcile::{Context, reconcile, spec_hash};

/// A request the reconciler made: method, path (with query), JSON body.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    body: Value,
}

impl Req {
    fn short(&self) -> String {
        let path = self.path.split('?').next().unwrap_or_default();
        format!("{} {path}", self.method)
    }
}

/// Answers every request like an API server that accepts it, and records it.
fn api_server(fj: FlinkJob) -> (kube::Client, Arc<Mutex<Vec<Req>>>) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().to_string();
            let path = req.uri().to_string();
            let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            log2.lock().expect("log").push(Req {
                method: method.clone(),
                path: path.clone(),
                body: body.clone(),
            });
            // Echo objects back; FlinkJob patches answer the FlinkJob (status merged).
            let answer = if path.contains("/flinkjobs/") {
                let mut obj = serde_json::to_value(&fj).expect("fj");
                if let Some(st) = body.get("status") {
                    obj["status"] = st.clone();
                }
                if method == "PATCH" && body.is_array() {
                    // The finalizer's JSON patch: answer without it on removal.
                    obj["metadata"]["finalizers"] = json!([]);
                }
                obj
            } else if path.contains("/events") {
                let mut e = body.clone();
                e["metadata"]["name"] = json!("e1");
                e["metadata"]["namespace"] = json!("jobs");
                e
            } else {
                body.clone()
            };
            let code = if method == "POST" { 201 } else { 200 };
            let resp = Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&answer).expect("json")))
                .expect("response");
            send.send_response(resp);
        }
    });
    (kube::Client::new(svc, "jobs"), log)
}

fn job(extra: Value) -> FlinkJob {
    let mut v = json!({
        "apiVersion": "flinkrs.io/v1alpha1",
        "kind": "FlinkJob",
        "metadata": {
            "name": "bids", "namespace": "jobs", "uid": "uid-1", "generation": 3,
            "finalizers": ["flinkrs.io/finalizer"],
        },
        "spec": {
            "image": "flink-rs:test",
            "job": {
                "sql": "CREATE TABLE a (x BIGINT) WITH ('connector' = 'datagen');\nCREATE TABLE b (x BIGINT) WITH ('connector' = 'blackhole');\nINSERT INTO b SELECT x FROM a;",
                "parallelism": 2,
                "upgradeMode": "savepoint",
            },
            "taskManager": { "replicas": 2, "slots": 1 },
            "checkpointing": { "storage": "s3://bucket/checkpoints", "interval": "5 s" },
            "objectStoreSecret": "s3-credentials",
        },
    });
    merge(&mut v, &extra);
    serde_json::from_value(v).expect("FlinkJob")
}

fn merge(a: &mut Value, b: &Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

/// A FlinkJob already deployed as job `id` (status as the reconciler left it).
fn deployed(extra: Value, lifecycle: &str) -> FlinkJob {
    let mut fj = job(extra);
    let hash = spec_hash(&fj);
    let status: FlinkJobStatus = serde_json::from_value(json!({
        "jobId": "job-1",
        "lifecycleState": lifecycle,
        "deployments": 1,
        "deployedSpecHash": hash,
        "conditions": [],
        "savepoints": [],
    }))
    .expect("status");
    fj.status = Some(status);
    fj
}

struct Run {
    action: Action,
    reqs: Vec<Req>,
    jm_calls: Vec<String>,
}

impl Run {
    fn shorts(&self) -> Vec<String> {
        self.reqs.iter().map(Req::short).collect()
    }

    fn find(&self, fragment: &str) -> &Req {
        self.reqs
            .iter()
            .find(|r| r.path.contains(fragment))
            .unwrap_or_else(|| panic!("no request to {fragment}: {:?}", self.shorts()))
    }

    fn status(&self) -> FlinkJobStatus {
        let r = self.find("/status");
        assert_eq!(r.method, "PATCH");
        assert!(
            r.path.contains("fieldManager=flink-rs-operator"),
            "{}",
            r.path
        );
        serde_json::from_value(r.body["status"].clone()).expect("status body")
    }

    fn events(&self) -> Vec<String> {
        self.reqs
            .iter()
            .filter(|r| r.path.contains("/events"))
            .map(|r| r.body["reason"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

async fn run(fj: FlinkJob, jm: FakeJm) -> Run {
    let (client, log) = api_server(fj.clone());
    let jm = Arc::new(Mutex::new(jm));
    let mut ctx = Context::new(
        client,
        JmClient::Fake(jm.clone()),
        Arc::new(Metrics::default()),
    );
    ctx.restart_backoff = Duration::from_secs(10);
    let action = tokio::time::timeout(
        Duration::from_secs(10),
        reconcile(Arc::new(fj), Arc::new(ctx)),
    )
    .await
    .expect("reconcile hangs")
    .expect("reconcile");
    let reqs = log.lock().expect("log").clone();
    let jm_calls = jm.lock().expect("jm").calls.clone();
    Run {
        action,
        reqs,
        jm_calls,
    }
}

fn running_jm(id: &str, state: &str) -> FakeJm {
    let mut jm = FakeJm {
        reachable: true,
        ..FakeJm::default()
    };
    jm.jobs.insert(
        id.into(),
        JobView {
            state: state.into(),
            last_checkpoint: Some(CheckpointInfo {
                id: 7,
                path: format!("s3://bucket/checkpoints/{id}/chk-7"),
                time: "2026-11-25T18:00:00Z".into(),
            }),
            failure: (state == "FAILED").then(|| "task Sink (1/2) failed: disk full".into()),
        },
    );
    jm
}

const APPLY: [&str; 4] = [
    "PATCH /api/v1/namespaces/jobs/configmaps/bids-config",
    "PATCH /api/v1/namespaces/jobs/services/bids-jobmanager",
    "PATCH /apis/apps/v1/namespaces/jobs/deployments/bids-jobmanager",
    "PATCH /apis/apps/v1/namespaces/jobs/deployments/bids-taskmanager",
];

fn applied(r: &Run) -> Vec<String> {
    r.shorts()
        .into_iter()
        .filter(|s| !s.contains("/events") && !s.contains("flinkjobs"))
        .collect()
}

fn config_yaml(r: &Run) -> String {
    r.find("configmaps/bids-config").body["data"]["config.yaml"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn jm_args(r: &Run) -> Vec<String> {
    serde_json::from_value(
        r.find("deployments/bids-jobmanager").body["spec"]["template"]["spec"]["containers"][0]
            ["args"]
            .clone(),
    )
    .expect("args")
}

#[tokio::test]
async fn create_applies_owned_objects_and_reports_deploying() {
    let r = run(job(json!({})), FakeJm::default()).await;
    assert_eq!(applied(&r), APPLY, "exact requests: {:?}", r.shorts());
    for req in r.reqs.iter().filter(|q| !q.path.contains("/events")) {
        assert!(
            req.path.contains("fieldManager=flink-rs-operator") && req.path.contains("force=true"),
            "server-side apply: {}",
            req.path
        );
    }
    // Every object is owned by the FlinkJob.
    for frag in [
        "configmaps/",
        "services/",
        "deployments/bids-jobmanager",
        "deployments/bids-taskmanager",
    ] {
        let owner = &r.find(frag).body["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "FlinkJob", "{frag}");
        assert_eq!(owner["uid"], "uid-1");
        assert_eq!(owner["controller"], true);
    }
    let conf = config_yaml(&r);
    for line in [
        "state.checkpoints.dir: s3://bucket/checkpoints\n",
        "state.savepoints.dir: s3://bucket/checkpoints/savepoints\n",
        "execution.checkpointing.interval: 5 s\n",
        "parallelism.default: 2\n",
        "jobmanager.rpc.address: bids-jobmanager\n",
    ] {
        assert!(conf.contains(line), "{line} in {conf}");
    }
    assert!(!conf.contains("execution.savepoint.path"), "{conf}");
    let st = r.status();
    let id = st.job_id.clone().expect("job id");
    assert_eq!(id.len(), 32);
    assert_eq!(
        jm_args(&r),
        [
            "jobmanager",
            "--config",
            "/config/config.yaml",
            "--job",
            "/config/job.sql",
            "--job-id",
            &id
        ]
    );
    let jm = &r.find("deployments/bids-jobmanager").body;
    assert_eq!(jm["spec"]["replicas"], 1);
    assert_eq!(jm["spec"]["strategy"]["type"], "Recreate");
    let c = &jm["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["envFrom"][0]["secretRef"]["name"], "s3-credentials");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/overview");
    assert_eq!(
        r.find("deployments/bids-taskmanager").body["spec"]["replicas"],
        2
    );
    let svc = &r.find("services/bids-jobmanager").body;
    assert_eq!(svc["spec"]["ports"][0]["port"], 8081);
    assert_eq!(svc["spec"]["ports"][1]["port"], 6123);
    assert_eq!(st.lifecycle_state, Some(LifecycleState::Deploying));
    assert_eq!(st.observed_generation, Some(3));
    assert_eq!(st.deployments, 1);
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Progressing" && c.status == "True")
    );
    assert_eq!(r.events(), ["Deploying"]);
    assert_eq!(r.action, Action::requeue(Duration::from_secs(3)));
}

#[tokio::test]
async fn running_job_reports_checkpoint_and_ready() {
    let r = run(
        deployed(json!({}), "Deploying"),
        running_jm("job-1", "RUNNING"),
    )
    .await;
    assert_eq!(applied(&r), APPLY);
    assert_eq!(r.jm_calls, ["GET /jobs/job-1"]);
    let st = r.status();
    assert_eq!(st.lifecycle_state, Some(LifecycleState::Running));
    assert_eq!(st.job_state.as_deref(), Some("RUNNING"));
    assert_eq!(st.last_checkpoint.as_ref().map(|c| c.id), Some(7));
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    assert_eq!(r.events(), ["Running"], "an event for the transition");
    assert_eq!(
        jm_args(&r).last().map(String::as_str),
        Some("job-1"),
        "same job"
    );
}

#[tokio::test]
async fn deleted_jobmanager_pod_keeps_the_job_and_waits() {
    // The Deployment replaces the pod; until it serves, REST is unreachable.
    let jm = FakeJm::default();
    let r = run(deployed(json!({}), "Running"), jm).await;
    assert_eq!(applied(&r), APPLY, "the same objects, re-applied");
    assert_eq!(
        jm_args(&r).last().map(String::as_str),
        Some("job-1"),
        "no new job"
    );
    let st = r.status();
    assert_eq!(st.job_id.as_deref(), Some("job-1"));
    assert_eq!(st.lifecycle_state, Some(LifecycleState::Deploying));
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Progressing" && c.status == "True")
    );
    assert_eq!(st.deployments, 1);
}

#[tokio::test]
async fn failed_job_restarts_from_its_checkpoint_with_backoff() {
    let r = run(
        deployed(json!({}), "Running"),
        running_jm("job-1", "FAILED"),
    )
    .await;
    assert_eq!(applied(&r), APPLY);
    let st = r.status();
    assert_eq!(st.restarts, 1);
    assert_eq!(
        st.job_id.as_deref(),
        Some("job-1"),
        "same job: resumes its latest checkpoint"
    );
    let tpl = &r.find("deployments/bids-jobmanager").body["spec"]["template"];
    assert_eq!(
        tpl["metadata"]["annotations"]["flinkrs.io/restart-generation"], "1",
        "the jobmanager pod is rolled"
    );
    assert_eq!(r.events(), ["Deploying"]);

    // Failing again right away: backoff, nothing re-applied, the wait in status.
    let mut fj = deployed(json!({}), "Deploying");
    if let Some(s) = fj.status.as_mut() {
        s.restarts = 1;
        s.last_restart_time = Some(flink_rs_operator::jm::now());
    }
    let r = run(fj, running_jm("job-1", "FAILED")).await;
    assert!(applied(&r).is_empty(), "{:?}", r.shorts());
    let st = r.status();
    assert_eq!(st.lifecycle_state, Some(LifecycleState::Failed));
    let degraded = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .expect("degraded");
    assert_eq!(degraded.status, "True");
    assert!(
        degraded.message.contains("disk full") && degraded.message.contains("20s"),
        "{}",
        degraded.message
    );
    assert_eq!(r.action, Action::requeue(Duration::from_secs(5)));
}

#[tokio::test]
async fn upgrade_savepoint_mode_stops_with_savepoint_and_starts_a_new_job_from_it() {
    let mut fj = deployed(json!({}), "Running");
    fj.spec.job.parallelism = 1; // a spec change
    let r = run(fj, running_jm("job-1", "RUNNING")).await;
    assert_eq!(r.jm_calls, ["GET /jobs/job-1", "POST /jobs/job-1/stop"]);
    let st = r.status();
    assert_ne!(st.job_id.as_deref(), Some("job-1"));
    assert_eq!(st.deployments, 2);
    assert_eq!(st.savepoints.len(), 1);
    assert_eq!(st.savepoints[0].trigger, "upgrade");
    let sp = st.savepoints[0].path.clone();
    assert!(config_yaml(&r).contains(&format!("execution.savepoint.path: {sp}\n")));
    assert_eq!(st.lifecycle_state, Some(LifecycleState::Upgrading));
    assert_eq!(r.events(), ["Upgrading"]);
}

#[tokio::test]
async fn upgrade_stateless_mode_starts_fresh() {
    let mut fj = deployed(
        json!({ "spec": { "job": { "upgradeMode": "stateless" } } }),
        "Running",
    );
    fj.spec.job.parallelism = 1;
    let r = run(fj, running_jm("job-1", "RUNNING")).await;
    assert_eq!(r.jm_calls, ["GET /jobs/job-1"], "no savepoint");
    let st = r.status();
    assert_ne!(st.job_id.as_deref(), Some("job-1"));
    assert!(!config_yaml(&r).contains("execution.savepoint.path"));
    assert!(st.savepoints.is_empty());
}

#[tokio::test]
async fn upgrade_last_state_mode_keeps_the_job_and_its_checkpoints() {
    let mut fj = deployed(
        json!({ "spec": { "job": { "upgradeMode": "last-state" } } }),
        "Running",
    );
    fj.spec.job.parallelism = 1;
    let r = run(fj, running_jm("job-1", "RUNNING")).await;
    assert_eq!(r.jm_calls, ["GET /jobs/job-1"], "no savepoint");
    let st = r.status();
    assert_eq!(
        st.job_id.as_deref(),
        Some("job-1"),
        "the new jobmanager resumes job-1's latest checkpoint"
    );
    assert!(!config_yaml(&r).contains("execution.savepoint.path"));
    assert!(config_yaml(&r).contains("parallelism.default: 1\n"));
    assert_eq!(st.lifecycle_state, Some(LifecycleState::Upgrading));
}

#[tokio::test]
async fn suspend_takes_a_savepoint_and_scales_to_zero_then_resume_starts_from_it() {
    let fj = deployed(
        json!({ "spec": { "job": { "state": "suspended" } } }),
        "Running",
    );
    let r = run(fj, running_jm("job-1", "RUNNING")).await;
    assert_eq!(r.jm_calls, ["GET /jobs/job-1", "POST /jobs/job-1/stop"]);
    assert_eq!(
        r.find("deployments/bids-jobmanager").body["spec"]["replicas"],
        0
    );
    assert_eq!(
        r.find("deployments/bids-taskmanager").body["spec"]["replicas"],
        0
    );
    let st = r.status();
    assert_eq!(st.lifecycle_state, Some(LifecycleState::Suspended));
    assert_eq!(st.savepoints[0].trigger, "suspend");
    let sp = st.savepoints[0].path.clone();
    assert_eq!(st.restored_from.as_deref(), Some(sp.as_str()));
    assert_eq!(r.events(), ["Suspended"]);

    // Resume.
    let mut fj = deployed(json!({}), "Suspended");
    fj.status = Some(st);
    let r = run(fj, FakeJm::default()).await;
    assert!(r.jm_calls.is_empty(), "{:?}", r.jm_calls);
    assert_eq!(
        r.find("deployments/bids-jobmanager").body["spec"]["replicas"],
        1
    );
    assert_eq!(
        r.find("deployments/bids-taskmanager").body["spec"]["replicas"],
        2
    );
    assert!(config_yaml(&r).contains(&format!("execution.savepoint.path: {sp}\n")));
    let st = r.status();
    assert_eq!(st.deployments, 2);
    assert_ne!(st.job_id.as_deref(), Some("job-1"));
    assert_eq!(st.lifecycle_state, Some(LifecycleState::Deploying));
}

#[tokio::test]
async fn savepoint_trigger_nonce_takes_a_savepoint() {
    let fj = deployed(
        json!({ "spec": { "job": { "savepointTriggerNonce": 5 } } }),
        "Running",
    );
    let r = run(fj, running_jm("job-1", "RUNNING")).await;
    assert_eq!(
        r.jm_calls,
        ["GET /jobs/job-1", "POST /jobs/job-1/savepoints"]
    );
    let st = r.status();
    assert_eq!(st.last_savepoint_trigger_nonce, Some(5));
    assert_eq!(st.savepoints.len(), 1);
    assert_eq!(st.savepoints[0].trigger, "manual");
    assert_eq!(st.job_id.as_deref(), Some("job-1"));
    assert!(r.events().contains(&"SavepointCompleted".to_string()));
}

#[tokio::test]
async fn bad_spec_creates_nothing_and_names_the_field() {
    let fj = job(
        json!({ "spec": { "job": { "parallelism": 4 }, "taskManager": { "replicas": 1, "slots": 2 } } }),
    );
    let r = run(fj, FakeJm::default()).await;
    assert!(applied(&r).is_empty(), "nothing created: {:?}", r.shorts());
    assert!(r.jm_calls.is_empty());
    let st = r.status();
    let d = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .expect("degraded");
    assert_eq!(
        (d.status.as_str(), d.reason.as_str()),
        ("True", "InvalidSpec")
    );
    assert!(
        d.message.starts_with("spec.taskManager.replicas:"),
        "{}",
        d.message
    );
    assert!(
        d.message
            .contains("2 slots, fewer than spec.job.parallelism 4"),
        "{}",
        d.message
    );
    assert_eq!(st.lifecycle_state, Some(LifecycleState::Failed));
    assert_eq!(r.events(), ["InvalidSpec"]);
    let ev = r.find("/events");
    assert_eq!(ev.body["type"], "Warning");
    assert_eq!(r.action, Action::await_change());
}

#[tokio::test]
async fn new_object_gets_the_finalizer_first() {
    let fj = job(json!({ "metadata": { "finalizers": [] } }));
    let r = run(fj, FakeJm::default()).await;
    assert_eq!(
        r.shorts(),
        ["PATCH /apis/flinkrs.io/v1alpha1/namespaces/jobs/flinkjobs/bids"]
    );
    let patch = &r.reqs[0].body;
    assert!(
        patch.to_string().contains("flinkrs.io/finalizer"),
        "{patch}"
    );
}

#[tokio::test]
async fn deletion_takes_a_savepoint_then_releases_the_finalizer() {
    let mut fj = deployed(
        json!({ "spec": { "job": { "savepointOnDeletion": true } } }),
        "Running",
    );
    fj.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let r = run(fj, running_jm("job-1", "RUNNING")).await;
    assert_eq!(r.jm_calls, ["GET /jobs/job-1", "POST /jobs/job-1/stop"]);
    assert!(applied(&r).is_empty(), "{:?}", r.shorts());
    let st = r.status();
    assert_eq!(st.lifecycle_state, Some(LifecycleState::Deleting));
    assert_eq!(st.savepoints[0].trigger, "deletion");
    let last = r.reqs.last().expect("requests");
    assert_eq!(
        last.short(),
        "PATCH /apis/flinkrs.io/v1alpha1/namespaces/jobs/flinkjobs/bids"
    );
    assert!(
        last.body.to_string().contains("remove"),
        "finalizer removed: {}",
        last.body
    );
}

#[tokio::test]
async fn reconcile_latency() {
    // A rough figure for the note: reconciles of a running job against the mock.
    let start = std::time::Instant::now();
    let n = 50;
    for _ in 0..n {
        run(
            deployed(json!({}), "Running"),
            running_jm("job-1", "RUNNING"),
        )
        .await;
    }
    eprintln!(
        "reconcile of a running FlinkJob against the mock API: {:?} each",
        start.elapsed() / n
    );
}
