//! The Kubernetes objects a FlinkJob owns: a ConfigMap (configuration and SQL), the
//! jobmanager Deployment and Service, the taskmanager Deployment, the Secret holding the
//! job's own CA and key pair for internal TLS. Pure functions of the FlinkJob and the
//! deployment decision, so every field is unit-tested.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::crd::FlinkJob;

pub const REST_PORT: i32 = 8081;
pub const RPC_PORT: i32 = 6123;
pub const DATA_PORT: i32 = 6121;
/// Prometheus (`metrics.reporter.prom.port`), on by default as Flink's charts set it.
pub const METRICS_PORT: i32 = 9249;
/// The uid the flink-rs image runs as.
pub const RUN_AS: i64 = 9999;

/// What the reconciler decided to run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    pub job_id: String,
    /// Checkpoint or savepoint directory to start from.
    pub restore_from: Option<String>,
    /// 0 when suspended.
    pub running: bool,
    /// Bumped to roll the jobmanager pod (a restart of a failed job).
    pub restart_generation: u32,
    /// The hash of the spec this plan deploys (`status.deployedSpecHash`).
    pub spec_hash: String,
    /// The version of the job's TLS Secret (its certificates' expiry) when the operator
    /// provides internal TLS: pods roll when the certificates are replaced.
    pub tls_version: Option<String>,
    /// The version of the job's REST token (a hash of it, never the token): the jobmanager
    /// pod rolls when the token Secret is replaced, since it reads the token at start.
    pub rest_token_version: Option<String>,
    /// `flink-rs.filesystem.allowed-paths` of the job's pods, when the operator restricts
    /// where jobs read and write files ([`allowed_paths`]).
    pub allowed_paths: Option<String>,
}

/// Where the pods mount the TLS Secret.
pub const TLS_DIR: &str = "/tls";
/// The TLS Secret's annotation: when its certificates expire, in seconds since the epoch.
pub const TLS_NOT_AFTER: &str = "flinkrs.io/tls-not-after";

/// Where the jobmanager pod mounts the job's REST token Secret.
pub const REST_TOKEN_DIR: &str = "/rest-token";
/// The jobmanager's key naming its REST bearer token file (`runtime/cluster/src/rest/auth.rs`).
pub const REST_TOKEN_FILE_KEY: &str = "rest.authentication.token-file";

/// The Secret holding the job's REST bearer token (key `token`): the jobmanager requires
/// it on every REST request, the operator sends it, and a user reads it from here for
/// `flink-rs job --token-file`.
pub fn rest_token_secret_name(fj: &FlinkJob) -> String {
    format!("{}-rest-token", fj.name_any())
}

/// The job's REST token Secret, owned by the FlinkJob (deleted with it).
pub fn rest_token_secret(fj: &FlinkJob, token: &str) -> Secret {
    let v = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(fj, rest_token_secret_name(fj), "rest-token"),
        "type": "Opaque",
    });
    let mut secret: Secret = serde_json::from_value(v).unwrap_or_default();
    secret.data = Some(BTreeMap::from([(
        "token".to_string(),
        ByteString(token.as_bytes().to_vec()),
    )]));
    secret
}

/// The version of a REST token as pod annotations show it: a short hash, never the token.
pub fn rest_token_version(token: &str) -> String {
    hash(&format!("rest-token|{token}"))
}

/// The jobs' configuration key for where they may read and write files
/// (`runtime/core/src/paths.rs`).
pub const ALLOWED_PATHS_KEY: &str = "flink-rs.filesystem.allowed-paths";

/// What a job may read and write when the operator restricts it to `prefixes`
/// (`--allowed-paths`): those, and where its checkpoints go (`spec.checkpointing.storage`:
/// the whole bucket for object storage, so results can go next to the checkpoints; the
/// directory itself for a local path), as the comma-separated value of
/// [`ALLOWED_PATHS_KEY`].
pub fn allowed_paths(fj: &FlinkJob, prefixes: &[String]) -> String {
    let mut all: Vec<String> = prefixes.to_vec();
    if let Some(cp) = &fj.spec.checkpointing {
        let storage = cp.storage.trim().trim_end_matches('/');
        let own = match storage.split_once("://") {
            Some((scheme, rest)) if scheme != "file" => {
                let bucket = rest.split('/').next().unwrap_or_default();
                format!("{scheme}://{bucket}")
            }
            _ => storage.to_string(),
        };
        if !all.contains(&own) {
            all.push(own);
        }
    }
    all.join(",")
}

/// The Secret holding the job's CA (`ca.pem`) and key pair (`cluster.pem`).
pub fn tls_secret_name(fj: &FlinkJob) -> String {
    format!("{}-tls", fj.name_any())
}

/// Whether the operator provides the job's internal TLS: unless the spec turns it off
/// (`security.ssl.internal.enabled: "false"`) or brings its own keystore.
pub fn managed_tls(fj: &FlinkJob) -> bool {
    let c = &fj.spec.flink_configuration;
    let off = c
        .get("security.ssl.internal.enabled")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
    !off && !c.contains_key("security.ssl.internal.keystore")
}

/// The job's TLS Secret holding `issued`, owned by the FlinkJob (deleted with it).
pub fn tls_secret(fj: &FlinkJob, issued: &flink_rs_certificates::Issued) -> Secret {
    let not_after = issued
        .not_after
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut meta = metadata(fj, tls_secret_name(fj), "tls");
    meta["annotations"] = json!({ TLS_NOT_AFTER: not_after.to_string() });
    let v = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "Opaque",
    });
    let mut secret: Secret = serde_json::from_value(v).unwrap_or_default();
    secret.data = Some(BTreeMap::from([
        (
            "ca.pem".to_string(),
            ByteString(issued.truststore.clone().into_bytes()),
        ),
        (
            "cluster.pem".to_string(),
            ByteString(issued.keystore.clone().into_bytes()),
        ),
    ]));
    secret
}

pub fn config_map_name(fj: &FlinkJob) -> String {
    format!("{}-config", fj.name_any())
}
pub fn jobmanager_name(fj: &FlinkJob) -> String {
    format!("{}-jobmanager", fj.name_any())
}
pub fn taskmanager_name(fj: &FlinkJob) -> String {
    format!("{}-taskmanager", fj.name_any())
}
/// The jobmanager's Service (REST 8081, RPC 6123).
pub fn service_name(fj: &FlinkJob) -> String {
    jobmanager_name(fj)
}

/// The jobmanager's REST base URL inside the cluster.
pub fn rest_url(fj: &FlinkJob) -> String {
    format!(
        "http://{}.{}.svc:{REST_PORT}",
        service_name(fj),
        fj.namespace().unwrap_or_else(|| "default".into())
    )
}

/// The checkpoint and savepoint root of one FlinkJob: `{checkpointing.storage}/{namespace}/
/// {name}-{uid}`. Two FlinkJobs on one bucket, or a FlinkJob deleted and created again with
/// the same name, never see each other's jobs or checkpoints.
pub fn checkpoint_root(fj: &FlinkJob) -> Option<String> {
    let cp = fj.spec.checkpointing.as_ref()?;
    Some(format!(
        "{}/{}/{}-{}",
        cp.storage.trim_end_matches('/'),
        fj.namespace().unwrap_or_else(|| "default".into()),
        fj.name_any(),
        fj.uid().unwrap_or_default()
    ))
}

/// The hash of what a jobmanager is deployed with ([`crate::jm::PLAN_KEY`]): the
/// job-affecting spec and the plan. A jobmanager whose configuration carries another one is
/// an old pod, and what it says is not about the current deployment.
pub fn plan_hash(fj: &FlinkJob, d: &RunPlan) -> String {
    hash(&format!(
        "{}|{}|{}|{}|{}|{}",
        fj.uid().unwrap_or_default(),
        d.spec_hash,
        d.job_id,
        d.restore_from.as_deref().unwrap_or(""),
        d.running,
        d.restart_generation
    ))
}

pub fn hash(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn labels(fj: &FlinkJob, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "flink-rs".into()),
        ("app.kubernetes.io/instance".into(), fj.name_any()),
        ("app.kubernetes.io/component".into(), component.into()),
        (
            "app.kubernetes.io/managed-by".into(),
            "flink-rs-operator".into(),
        ),
    ])
}

fn metadata(fj: &FlinkJob, name: String, component: &str) -> Value {
    let owner = fj
        .controller_owner_ref(&())
        .map(|o| serde_json::to_value(o).unwrap_or(Value::Null));
    json!({
        "name": name,
        "namespace": fj.namespace(),
        "labels": labels(fj, component),
        "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
    })
}

/// The configuration file every process reads (Flink keys, `key: value` lines).
pub fn flink_config(fj: &FlinkJob, d: &RunPlan) -> BTreeMap<String, String> {
    let spec = &fj.spec;
    let mut c: BTreeMap<String, String> = BTreeMap::new();
    c.insert("jobmanager.rpc.address".into(), service_name(fj));
    c.insert("jobmanager.rpc.port".into(), RPC_PORT.to_string());
    c.insert("rest.port".into(), REST_PORT.to_string());
    c.insert("taskmanager.data.port".into(), DATA_PORT.to_string());
    c.insert(
        "metrics.reporter.prom.port".into(),
        METRICS_PORT.to_string(),
    );
    // A pod is reached through its Service or pod address, not loopback (the binary's
    // default when started by hand).
    for k in [
        "jobmanager.bind-host",
        "rest.bind-address",
        "taskmanager.bind-host",
    ] {
        c.insert(k.into(), "0.0.0.0".into());
    }
    c.insert(
        "taskmanager.numberOfTaskSlots".into(),
        spec.task_manager.slots.to_string(),
    );
    c.insert(
        "parallelism.default".into(),
        spec.job.parallelism.to_string(),
    );
    if managed_tls(fj) {
        // The job's own CA: only its jobmanager and taskmanagers hold a key pair it signed.
        // Host names are not checked (taskmanagers are reached at pod addresses, which no
        // certificate can list); the chain is.
        c.insert("security.ssl.internal.enabled".into(), "true".into());
        c.insert(
            "security.ssl.internal.keystore".into(),
            format!("{TLS_DIR}/cluster.pem"),
        );
        c.insert(
            "security.ssl.internal.truststore".into(),
            format!("{TLS_DIR}/ca.pem"),
        );
        c.insert("security.ssl.verify-hostname".into(), "false".into());
    }
    if let (Some(cp), Some(dir)) = (&spec.checkpointing, checkpoint_root(fj)) {
        c.insert("state.checkpoints.dir".into(), dir.clone());
        c.insert("state.savepoints.dir".into(), format!("{dir}/savepoints"));
        c.insert(
            "execution.checkpointing.interval".into(),
            cp.interval.clone().unwrap_or_else(|| "10 s".into()),
        );
        if let Some(r) = cp.retained {
            c.insert("state.checkpoints.num-retained".into(), r.to_string());
        }
    }
    // The user's keys win over the defaults above, but not over what the operator must
    // decide (where to restore from).
    for (k, v) in &spec.flink_configuration {
        c.insert(k.clone(), v.clone());
    }
    c.remove("execution.savepoint.path");
    if let Some(paths) = &d.allowed_paths {
        // The operator's restriction (validation refuses the key in flinkConfiguration then).
        c.insert(ALLOWED_PATHS_KEY.into(), paths.clone());
    }
    // The REST token is the operator's (validation refuses the key in flinkConfiguration).
    c.insert(
        REST_TOKEN_FILE_KEY.into(),
        format!("{REST_TOKEN_DIR}/token"),
    );
    if let Some(p) = &d.restore_from {
        // Holds until the job's first checkpoint after it: the jobmanager prefers the job's
        // own latest checkpoint (runtime/cluster/src/jobmanager.rs).
        c.insert("execution.savepoint.path".into(), p.clone());
    }
    c.insert(crate::jm::PLAN_KEY.into(), plan_hash(fj, d));
    c.insert(crate::jm::JOB_KEY.into(), d.job_id.clone());
    if spec.job.allow_non_restored_state == Some(true) {
        c.insert(
            "execution.savepoint.ignore-unclaimed-state".into(),
            "true".into(),
        );
    }
    c
}

pub fn config_map(fj: &FlinkJob, d: &RunPlan) -> ConfigMap {
    let conf: String = flink_config(fj, d)
        .iter()
        .map(|(k, v)| format!("{k}: {v}\n"))
        .collect();
    let v = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(fj, config_map_name(fj), "config"),
        "data": { "config.yaml": conf, "job.sql": fj.spec.job.sql },
    });
    serde_json::from_value(v).unwrap_or_default()
}

pub fn service(fj: &FlinkJob) -> Service {
    let v = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(fj, service_name(fj), "jobmanager"),
        "spec": {
            "selector": labels(fj, "jobmanager"),
            "ports": [
                { "name": "rest", "port": REST_PORT, "targetPort": REST_PORT },
                { "name": "rpc", "port": RPC_PORT, "targetPort": RPC_PORT },
            ],
        },
    });
    serde_json::from_value(v).unwrap_or_default()
}

/// Where the operator runs, for the NetworkPolicies that let it reach a jobmanager's REST
/// API: its namespace, and its pods' `app.kubernetes.io/name` label.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorPeer {
    pub namespace: String,
    pub name_label: String,
}

/// The job's NetworkPolicies (`{name}-jobmanager`, `{name}-taskmanager`): a jobmanager is
/// reached on its RPC port only by this job's taskmanagers and on REST only by the
/// operator; a taskmanager's data port only by this job's taskmanagers. Prometheus ports
/// stay open to scrapers (read-only metrics). Other traffic to the pods is dropped where the
/// cluster's network plugin enforces policies; egress (object storage) is not restricted.
pub fn network_policies(fj: &FlinkJob, operator: &OperatorPeer) -> Vec<NetworkPolicy> {
    let from_taskmanagers =
        json!([{ "podSelector": { "matchLabels": labels(fj, "taskmanager") } }]);
    let port = |p: i32| json!([{ "protocol": "TCP", "port": p }]);
    let metrics = json!({ "ports": port(metrics_port(fj)) });
    // The pods of `component` admit `ingress` only.
    let policy = |name: String, component: &str, ingress: Value| {
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": metadata(fj, name, component),
            "spec": {
                "podSelector": { "matchLabels": labels(fj, component) },
                "policyTypes": ["Ingress"],
                "ingress": ingress,
            },
        })
    };
    let from_operator = json!([{
        "namespaceSelector": {
            "matchLabels": { "kubernetes.io/metadata.name": operator.namespace },
        },
        "podSelector": {
            "matchLabels": { "app.kubernetes.io/name": operator.name_label },
        },
    }]);
    let jm = policy(
        jobmanager_name(fj),
        "jobmanager",
        json!([
            { "from": from_taskmanagers, "ports": port(RPC_PORT) },
            { "from": from_operator, "ports": port(REST_PORT) },
            metrics,
        ]),
    );
    let tm = policy(
        taskmanager_name(fj),
        "taskmanager",
        json!([{ "from": from_taskmanagers, "ports": port(DATA_PORT) }, metrics]),
    );
    [jm, tm]
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap_or_default())
        .collect()
}

/// Requests and limits: the spec's, else `defaults` (cpu, memory), so no pod runs unbounded.
fn resources(r: Option<&crate::crd::Resources>, defaults: (&str, &str)) -> Value {
    let cpu = r.and_then(|r| r.cpu.clone()).unwrap_or(defaults.0.into());
    let memory = r
        .and_then(|r| r.memory.clone())
        .unwrap_or(defaults.1.into());
    json!({
        "requests": { "cpu": cpu, "memory": memory },
        "limits": { "memory": memory },
    })
}

/// Default (cpu, memory) of a jobmanager and of a taskmanager.
pub const JOBMANAGER_RESOURCES: (&str, &str) = ("500m", "1Gi");
pub const TASKMANAGER_RESOURCES: (&str, &str) = ("1", "2Gi");

/// Overlays `over` on `base`: objects merge key by key, anything else is replaced. A pod
/// template's container named like the flink-rs container (`jobmanager`, `taskmanager`) or
/// `flink-main-container` (the Flink operator's name) merges into it, its `env`,
/// `volumeMounts` and `envFrom` appended; other containers (sidecars) are added.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                if k == "containers" {
                    merge_containers(b.entry(k.clone()).or_insert(json!([])), v);
                    continue;
                }
                // Lists the pod needs both parts of.
                if matches!(
                    k.as_str(),
                    "volumes" | "tolerations" | "imagePullSecrets" | "initContainers"
                ) && let (Some(Value::Array(mine)), Some(theirs)) = (b.get_mut(k), v.as_array())
                {
                    mine.extend(theirs.iter().cloned());
                    continue;
                }
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn merge_containers(base: &mut Value, over: &Value) {
    let (Some(ours), Some(theirs)) = (base.as_array_mut(), over.as_array()) else {
        return;
    };
    for c in theirs {
        let name = c["name"].as_str().unwrap_or_default();
        let main = ours
            .first()
            .and_then(|m| m["name"].as_str())
            .is_some_and(|m| m == name)
            || name == "flink-main-container";
        match (main, ours.first_mut()) {
            (true, Some(m)) => {
                for (k, v) in c.as_object().into_iter().flatten() {
                    match (k.as_str(), m.get_mut(k.as_str())) {
                        ("name", _) => {}
                        ("env" | "volumeMounts" | "envFrom", Some(Value::Array(a))) => {
                            a.extend(v.as_array().into_iter().flatten().cloned());
                        }
                        _ => merge(
                            m.as_object_mut()
                                .map(|o| o.entry(k.clone()).or_insert(Value::Null))
                                .unwrap_or(&mut Value::Null),
                            v,
                        ),
                    }
                }
            }
            _ => ours.push(c.clone()),
        }
    }
}

/// The Prometheus port the pods serve: the user's `metrics.reporter.prom.port` when it is
/// one port, else [`METRICS_PORT`].
fn metrics_port(fj: &FlinkJob) -> i32 {
    fj.spec
        .flink_configuration
        .get("metrics.reporter.prom.port")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(METRICS_PORT)
}

fn pod_template(
    fj: &FlinkJob,
    component: &str,
    args: Vec<String>,
    extra_annotations: BTreeMap<String, String>,
    user: Option<&Value>,
    resources: Value,
    probes: Value,
) -> Value {
    let spec = &fj.spec;
    let mut container = json!({
        "name": component,
        "image": spec.image,
        "args": args,
        "env": [
            { "name": "JOB_MANAGER_RPC_ADDRESS", "value": service_name(fj) },
            { "name": "RUST_LOG", "value": "info" },
        ],
        "ports": [
            { "name": "rest", "containerPort": REST_PORT },
            { "name": "rpc", "containerPort": RPC_PORT },
            { "name": "data", "containerPort": DATA_PORT },
            { "name": "metrics", "containerPort": metrics_port(fj) },
        ],
        "resources": resources,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": RUN_AS,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] },
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "volumeMounts": [
            { "name": "config", "mountPath": "/config", "readOnly": true },
            { "name": "tmp", "mountPath": "/tmp" },
        ],
    });
    if let Some(p) = spec.image_pull_policy {
        container["imagePullPolicy"] = serde_json::to_value(p).unwrap_or(Value::Null);
    }
    if let Some(secret) = &spec.object_store_secret {
        container["envFrom"] = json!([{ "secretRef": { "name": secret } }]);
    }
    if let Value::Object(p) = probes {
        for (k, v) in p {
            container[k] = v;
        }
    }
    let mut pod = json!({
        "metadata": { "labels": labels(fj, component), "annotations": extra_annotations },
        "spec": {
            "containers": [container],
            // Pod Security "restricted".
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": RUN_AS,
                "fsGroup": RUN_AS,
                "seccompProfile": { "type": "RuntimeDefault" },
            },
            // flink-rs never talks to the Kubernetes API.
            "automountServiceAccountToken": false,
            "volumes": [
                { "name": "config", "configMap": { "name": config_map_name(fj) } },
                { "name": "tmp", "emptyDir": {} },
            ],
        },
    });
    if let Some(sa) = &spec.service_account {
        pod["spec"]["serviceAccountName"] = json!(sa);
    }
    if managed_tls(fj) {
        if let Some(v) = pod["spec"]["volumes"].as_array_mut() {
            // Readable by the pod's group (fsGroup), not by others.
            v.push(json!({
                "name": "tls",
                "secret": { "secretName": tls_secret_name(fj), "defaultMode": 0o440 },
            }));
        }
        if let Some(m) = pod["spec"]["containers"][0]["volumeMounts"].as_array_mut() {
            m.push(json!({ "name": "tls", "mountPath": TLS_DIR, "readOnly": true }));
        }
    }
    if component == "jobmanager" {
        // Only the jobmanager reads the REST token.
        if let Some(v) = pod["spec"]["volumes"].as_array_mut() {
            v.push(json!({
                "name": "rest-token",
                "secret": { "secretName": rest_token_secret_name(fj), "defaultMode": 0o440 },
            }));
        }
        if let Some(m) = pod["spec"]["containers"][0]["volumeMounts"].as_array_mut() {
            m.push(json!({ "name": "rest-token", "mountPath": REST_TOKEN_DIR, "readOnly": true }));
        }
    }
    if let Some(u) = user {
        merge(&mut pod, u);
    }
    pod
}

/// The pod annotation that rolls the pods when the TLS Secret's certificates are replaced.
fn tls_annotation(d: &RunPlan) -> Option<(String, String)> {
    d.tls_version
        .clone()
        .map(|v| ("flinkrs.io/tls-version".to_string(), v))
}

fn config_hash(fj: &FlinkJob, d: &RunPlan) -> String {
    let cm = config_map(fj, d);
    hash(&serde_json::to_string(&cm.data).unwrap_or_default())
}

pub fn jobmanager(fj: &FlinkJob, d: &RunPlan) -> Deployment {
    let annotations: BTreeMap<String, String> = BTreeMap::from([
        ("flinkrs.io/config-hash".to_string(), config_hash(fj, d)),
        ("flinkrs.io/job-id".to_string(), d.job_id.clone()),
        (
            "flinkrs.io/restart-generation".to_string(),
            d.restart_generation.to_string(),
        ),
    ])
    .into_iter()
    .chain(tls_annotation(d))
    .chain(
        d.rest_token_version
            .clone()
            .map(|v| ("flinkrs.io/rest-token-version".to_string(), v)),
    )
    .collect();
    let probes = json!({
        "readinessProbe": {
            "httpGet": { "path": "/overview", "port": REST_PORT },
            "periodSeconds": 5,
        },
        "livenessProbe": {
            "httpGet": { "path": "/overview", "port": REST_PORT },
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
    });
    let template = pod_template(
        fj,
        "jobmanager",
        vec![
            "jobmanager".into(),
            "--config".into(),
            "/config/config.yaml".into(),
            "--job".into(),
            "/config/job.sql".into(),
            "--job-id".into(),
            d.job_id.clone(),
        ],
        annotations,
        fj.spec.job_manager.pod_template.as_ref(),
        resources(fj.spec.job_manager.resources.as_ref(), JOBMANAGER_RESOURCES),
        probes,
    );
    let v = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(fj, jobmanager_name(fj), "jobmanager"),
        "spec": {
            "replicas": i32::from(d.running),
            "strategy": { "type": "Recreate" },
            "selector": { "matchLabels": labels(fj, "jobmanager") },
            "template": template,
        },
    });
    serde_json::from_value(v).unwrap_or_default()
}

pub fn taskmanager(fj: &FlinkJob, d: &RunPlan) -> Deployment {
    let annotations: BTreeMap<String, String> =
        BTreeMap::from([("flinkrs.io/config-hash".to_string(), config_hash(fj, d))])
            .into_iter()
            .chain(tls_annotation(d))
            .collect();
    let probes = json!({
        "livenessProbe": {
            "tcpSocket": { "port": DATA_PORT },
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
        },
    });
    let template = pod_template(
        fj,
        "taskmanager",
        vec![
            "taskmanager".into(),
            "--config".into(),
            "/config/config.yaml".into(),
        ],
        annotations,
        fj.spec.task_manager.pod_template.as_ref(),
        resources(
            fj.spec.task_manager.resources.as_ref(),
            TASKMANAGER_RESOURCES,
        ),
        probes,
    );
    let v = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(fj, taskmanager_name(fj), "taskmanager"),
        "spec": {
            "replicas": if d.running { fj.spec.task_manager.replicas } else { 0 },
            // Old taskmanagers must not register with the new jobmanager.
            "strategy": { "type": "Recreate" },
            "selector": { "matchLabels": labels(fj, "taskmanager") },
            "template": template,
        },
    });
    serde_json::from_value(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fj(pod_template: Value) -> FlinkJob {
        serde_json::from_value(json!({
            "apiVersion": "flinkrs.io/v1alpha1", "kind": "FlinkJob",
            "metadata": { "name": "j", "namespace": "n", "uid": "u" },
            "spec": {
                "image": "img", "serviceAccount": "runner",
                "job": { "sql": "INSERT INTO b SELECT 1", "parallelism": 1 },
                "taskManager": { "replicas": 1, "podTemplate": pod_template },
            },
        }))
        .expect("fj")
    }

    fn running_plan() -> RunPlan {
        RunPlan {
            job_id: "id".into(),
            restore_from: None,
            running: true,
            restart_generation: 0,
            spec_hash: "h".into(),
            tls_version: Some("1700000000".into()),
            rest_token_version: Some("0123456789abcdef".into()),
            allowed_paths: None,
        }
    }

    #[test]
    fn pod_template_merges_into_the_pod_and_the_main_container() {
        let f = fj(json!({
            "metadata": { "labels": { "team": "data" } },
            "spec": {
                "nodeSelector": { "pool": "stream" },
                "volumes": [{ "name": "data", "hostPath": { "path": "/srv" } }],
                "containers": [
                    { "name": "flink-main-container",
                      "volumeMounts": [{ "name": "data", "mountPath": "/data" }],
                      "env": [{ "name": "EXTRA", "value": "1" }] },
                    { "name": "sidecar", "image": "logs" },
                ],
            },
        }));
        let plan = running_plan();
        let d = serde_json::to_value(taskmanager(&f, &plan)).expect("json");
        let pod = &d["spec"]["template"];
        assert_eq!(pod["metadata"]["labels"]["team"], "data");
        assert_eq!(
            pod["metadata"]["labels"]["app.kubernetes.io/component"],
            "taskmanager"
        );
        assert_eq!(pod["spec"]["nodeSelector"]["pool"], "stream");
        assert_eq!(pod["spec"]["serviceAccountName"], "runner");
        let volumes: Vec<&str> = pod["spec"]["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert_eq!(
            volumes,
            ["config", "tmp", "tls", "data"],
            "both parts of the list"
        );
        let containers = pod["spec"]["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 2);
        assert_eq!(containers[0]["name"], "taskmanager");
        assert_eq!(containers[0]["image"], "img");
        let mounts: Vec<&str> = containers[0]["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .filter_map(|m| m["mountPath"].as_str())
            .collect();
        assert_eq!(mounts, ["/config", "/tmp", "/tls", "/data"]);
        assert!(containers[0]["env"].to_string().contains("EXTRA"));
        assert_eq!(containers[1]["name"], "sidecar");
    }

    #[test]
    fn the_jobmanager_alone_mounts_the_rest_token_and_rolls_when_it_changes() {
        let f = fj(json!({}));
        let plan = running_plan();
        let c = flink_config(&f, &plan);
        assert_eq!(
            c.get(REST_TOKEN_FILE_KEY).map(String::as_str),
            Some("/rest-token/token")
        );
        let mounts_of = |d: &Deployment| -> Vec<String> {
            let v = serde_json::to_value(d).expect("json");
            v["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
                .as_array()
                .expect("mounts")
                .iter()
                .filter_map(|m| m["mountPath"].as_str().map(str::to_string))
                .collect()
        };
        let jm = jobmanager(&f, &plan);
        assert!(mounts_of(&jm).contains(&REST_TOKEN_DIR.to_string()));
        assert!(!mounts_of(&taskmanager(&f, &plan)).contains(&REST_TOKEN_DIR.to_string()));
        let v = serde_json::to_value(&jm).expect("json");
        let volume = v["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == "rest-token")
            .cloned()
            .expect("rest-token volume");
        assert_eq!(volume["secret"]["secretName"], "j-rest-token");
        assert_eq!(volume["secret"]["defaultMode"], 0o440);
        assert_eq!(
            v["spec"]["template"]["metadata"]["annotations"]["flinkrs.io/rest-token-version"],
            "0123456789abcdef"
        );
        // The Secret holds the token; its version is a hash, not the token.
        let secret = rest_token_secret(&f, "s3cr3t");
        let data = secret.data.expect("data");
        assert_eq!(
            data.get("token").map(|b| b.0.as_slice()),
            Some(&b"s3cr3t"[..])
        );
        assert!(!rest_token_version("s3cr3t").contains("s3cr3t"));
        assert_ne!(rest_token_version("a"), rest_token_version("b"));
    }

    #[test]
    fn allowed_paths_are_the_operator_s_and_the_checkpoint_bucket() {
        let mut f = fj(json!({}));
        assert_eq!(allowed_paths(&f, &["/tmp".into()]), "/tmp");
        for (storage, own) in [
            ("s3://flink-rs/checkpoints/", "s3://flink-rs"),
            ("gs://b", "gs://b"),
            ("file:///data/cp", "file:///data/cp"),
            ("/data/cp/", "/data/cp"),
        ] {
            f.spec.checkpointing =
                Some(serde_json::from_value(json!({ "storage": storage })).expect("checkpointing"));
            assert_eq!(
                allowed_paths(&f, &["/tmp".into()]),
                format!("/tmp,{own}"),
                "{storage}"
            );
        }
        let mut plan = running_plan();
        assert!(!flink_config(&f, &plan).contains_key(ALLOWED_PATHS_KEY));
        plan.allowed_paths = Some("/tmp,/data/cp".into());
        assert_eq!(
            flink_config(&f, &plan)
                .get(ALLOWED_PATHS_KEY)
                .map(String::as_str),
            Some("/tmp,/data/cp")
        );
    }

    #[test]
    fn pods_listen_on_all_interfaces_unless_the_user_says_otherwise() {
        let plan = running_plan();
        let c = flink_config(&fj(json!({})), &plan);
        for k in [
            "jobmanager.bind-host",
            "rest.bind-address",
            "taskmanager.bind-host",
        ] {
            assert_eq!(c.get(k).map(String::as_str), Some("0.0.0.0"), "{k}");
        }
        let mut own = fj(json!({}));
        own.spec
            .flink_configuration
            .insert("rest.bind-address".into(), "10.0.0.1".into());
        assert_eq!(
            flink_config(&own, &plan)
                .get("rest.bind-address")
                .map(String::as_str),
            Some("10.0.0.1")
        );
    }

    #[test]
    fn internal_tls_is_on_with_the_jobs_own_secret_unless_the_spec_says_otherwise() {
        let plan = running_plan();
        let f = fj(json!({}));
        assert!(managed_tls(&f));
        let c = flink_config(&f, &plan);
        let get = |c: &BTreeMap<String, String>, k: &str| c.get(k).cloned();
        assert_eq!(
            get(&c, "security.ssl.internal.enabled").as_deref(),
            Some("true")
        );
        assert_eq!(
            get(&c, "security.ssl.internal.keystore").as_deref(),
            Some("/tls/cluster.pem")
        );
        assert_eq!(
            get(&c, "security.ssl.internal.truststore").as_deref(),
            Some("/tls/ca.pem")
        );
        assert_eq!(
            get(&c, "security.ssl.verify-hostname").as_deref(),
            Some("false")
        );
        for d in [jobmanager(&f, &plan), taskmanager(&f, &plan)] {
            let v = serde_json::to_value(&d).expect("json");
            let pod = &v["spec"]["template"];
            let volumes = pod["spec"]["volumes"].as_array().expect("volumes");
            let tls = volumes
                .iter()
                .find(|v| v["name"] == "tls")
                .expect("tls volume");
            assert_eq!(tls["secret"]["secretName"], "j-tls");
            assert_eq!(tls["secret"]["defaultMode"], 0o440);
            let mounts = pod["spec"]["containers"][0]["volumeMounts"]
                .as_array()
                .expect("mounts");
            assert!(
                mounts.iter().any(|m| m["name"] == "tls"
                    && m["mountPath"] == "/tls"
                    && m["readOnly"] == true),
                "{mounts:?}"
            );
            // Renewed certificates roll the pods.
            assert_eq!(
                pod["metadata"]["annotations"]["flinkrs.io/tls-version"],
                "1700000000"
            );
        }
        let issued = flink_rs_certificates::issue(&[], 2).expect("certificates");
        let secret = tls_secret(&f, &issued);
        assert_eq!(secret.metadata.name.as_deref(), Some("j-tls"));
        assert_eq!(
            secret.owner_references().len(),
            1,
            "deleted with its FlinkJob"
        );
        let data = secret.data.expect("data");
        assert_eq!(data["ca.pem"].0, issued.truststore.as_bytes());
        assert_eq!(data["cluster.pem"].0, issued.keystore.as_bytes());
        assert!(
            secret
                .metadata
                .annotations
                .expect("annotations")
                .contains_key(TLS_NOT_AFTER)
        );

        // Turned off, or the user's own keystore: no Secret of the operator's is mounted.
        for (k, v) in [
            ("security.ssl.internal.enabled", "False"),
            ("security.ssl.internal.keystore", "/mine/ks.pem"),
        ] {
            let mut own = fj(json!({}));
            own.spec.flink_configuration.insert(k.into(), v.into());
            assert!(!managed_tls(&own), "{k}");
            let c = flink_config(&own, &plan);
            assert_ne!(
                get(&c, "security.ssl.internal.keystore").as_deref(),
                Some("/tls/cluster.pem")
            );
            let v = serde_json::to_value(jobmanager(&own, &plan)).expect("json");
            assert!(
                !v["spec"]["template"]["spec"]["volumes"]
                    .as_array()
                    .expect("volumes")
                    .iter()
                    .any(|v| v["name"] == "tls")
            );
        }
    }

    #[test]
    fn network_policies_admit_only_the_jobs_own_pods_and_the_operator() {
        let f = fj(json!({}));
        let op = OperatorPeer {
            namespace: "flink-ops".into(),
            name_label: "flink-rs-operator".into(),
        };
        let policies: Vec<Value> = network_policies(&f, &op)
            .iter()
            .map(|p| serde_json::to_value(p).expect("json"))
            .collect();
        assert_eq!(policies.len(), 2);
        let (jm, tm) = (&policies[0], &policies[1]);
        assert_eq!(jm["metadata"]["name"], "j-jobmanager");
        assert_eq!(jm["metadata"]["ownerReferences"][0]["name"], "j");
        assert_eq!(
            jm["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
            "jobmanager"
        );
        assert_eq!(jm["spec"]["policyTypes"], json!(["Ingress"]));
        let rules = jm["spec"]["ingress"].as_array().expect("ingress");
        // RPC: this job's taskmanagers (same namespace, same instance label).
        assert_eq!(rules[0]["ports"][0]["port"], RPC_PORT);
        let from = &rules[0]["from"][0]["podSelector"]["matchLabels"];
        assert_eq!(from["app.kubernetes.io/instance"], "j");
        assert_eq!(from["app.kubernetes.io/component"], "taskmanager");
        assert!(rules[0]["from"][0]["namespaceSelector"].is_null());
        // REST: the operator's pods in its namespace.
        assert_eq!(rules[1]["ports"][0]["port"], REST_PORT);
        assert_eq!(
            rules[1]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "flink-ops"
        );
        assert_eq!(
            rules[1]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
            "flink-rs-operator"
        );
        // Metrics: open, and nothing else.
        assert_eq!(rules[2]["ports"][0]["port"], METRICS_PORT);
        assert!(rules[2]["from"].is_null());
        assert_eq!(rules.len(), 3);
        // A taskmanager's data port: this job's taskmanagers only.
        let rules = tm["spec"]["ingress"].as_array().expect("ingress");
        assert_eq!(
            tm["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
            "taskmanager"
        );
        assert_eq!(rules[0]["ports"][0]["port"], DATA_PORT);
        assert_eq!(
            rules[0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"],
            "j"
        );
        assert_eq!(rules.len(), 2);
    }

    #[test]
    fn pods_serve_prometheus_on_a_named_port_by_default() {
        let f = fj(json!({}));
        let plan = running_plan();
        assert_eq!(
            flink_config(&f, &plan)
                .get("metrics.reporter.prom.port")
                .map(String::as_str),
            Some("9249")
        );
        for d in [
            serde_json::to_value(jobmanager(&f, &plan)).expect("json"),
            serde_json::to_value(taskmanager(&f, &plan)).expect("json"),
        ] {
            let ports = &d["spec"]["template"]["spec"]["containers"][0]["ports"];
            let metrics = ports
                .as_array()
                .and_then(|p| p.iter().find(|p| p["name"] == "metrics"))
                .expect("a metrics port");
            assert_eq!(metrics["containerPort"], 9249);
        }
    }
}
