//! The Helm chart: `helm lint` is clean and `helm template` renders manifests that parse as
//! the Kubernetes types they claim to be, with least-privilege RBAC. The helm binary comes
//! from `scripts/k8s-tools` (a PyPI package holds it); without it this test fails, saying so.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::Deserialize;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn helm() -> PathBuf {
    let out = Command::new(root().join("scripts/k8s-tools"))
        .output()
        .expect("run scripts/k8s-tools");
    assert!(
        out.status.success(),
        "cannot fetch helm from PyPI (scripts/k8s-tools): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("helm")
}

/// What the operator deploys for a running job.
fn running_plan() -> flink_rs_operator::resources::RunPlan {
    flink_rs_operator::resources::RunPlan {
        job_id: "id".into(),
        restore_from: None,
        running: true,
        restart_generation: 0,
        spec_hash: "h".into(),
        tls_version: None,
        rest_token_version: Some("0123456789abcdef".into()),
        allowed_paths: Some("/tmp".into()),
    }
}

fn template(helm: &Path, sets: &[&str]) -> Vec<Value> {
    let mut cmd = Command::new(helm);
    cmd.args([
        "template",
        "ops",
        "charts/flink-rs-operator",
        "--namespace",
        "flink-ops",
    ])
    .current_dir(root());
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("helm template");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|d| Value::deserialize(d).ok())
        .filter(|v| !v.is_null())
        .collect()
}

fn parse<T: serde::de::DeserializeOwned>(doc: &Value) -> T {
    serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{} does not parse: {e}\n{doc}", doc["kind"]))
}

fn check_rules(doc: &Value) {
    for rule in doc["rules"].as_array().expect("rules") {
        for field in ["apiGroups", "resources", "verbs"] {
            for v in rule[field].as_array().expect(field) {
                assert_ne!(v, "*", "wildcard {field} in {rule}");
            }
        }
        let verbs: Vec<&str> = rule["verbs"]
            .as_array()
            .expect("verbs")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            !verbs.contains(&"delete"),
            "the operator deletes nothing itself: {rule}"
        );
    }
}

/// What keeps a pod template from Pod Security "restricted" (the checks of the standard
/// that a rendered spec can fail: privilege escalation, capabilities, non-root, seccomp,
/// host namespaces and paths, privileged containers).
fn restricted_violations(pod: &Value) -> Vec<String> {
    let spec = &pod["spec"];
    let mut v = Vec::new();
    for k in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec[k] == true {
            v.push(k.to_string());
        }
    }
    if spec["volumes"]
        .as_array()
        .is_some_and(|vs| vs.iter().any(|x| !x["hostPath"].is_null()))
    {
        v.push("hostPath volume".into());
    }
    let pod_sc = &spec["securityContext"];
    for c in spec["containers"].as_array().into_iter().flatten() {
        let sc = &c["securityContext"];
        let name = c["name"].as_str().unwrap_or("?");
        if sc["privileged"] == true {
            v.push(format!("{name}: privileged"));
        }
        if sc["allowPrivilegeEscalation"] != false {
            v.push(format!("{name}: allowPrivilegeEscalation must be false"));
        }
        let drops_all = sc["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "ALL"));
        if !drops_all {
            v.push(format!("{name}: capabilities must drop ALL"));
        }
        if sc["runAsNonRoot"] != true && pod_sc["runAsNonRoot"] != true {
            v.push(format!("{name}: runAsNonRoot"));
        }
        let seccomp = |s: &Value| {
            matches!(
                s["seccompProfile"]["type"].as_str(),
                Some("RuntimeDefault" | "Localhost")
            )
        };
        if !seccomp(sc) && !seccomp(pod_sc) {
            v.push(format!("{name}: seccompProfile RuntimeDefault"));
        }
    }
    v
}

/// The jobmanager and taskmanager pods the operator renders meet "restricted" too, with
/// default resources and no service-account token.
#[test]
fn flinkjob_pods_meet_pod_security_restricted() {
    let fj: flink_rs_operator::crd::FlinkJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "flinkrs.io/v1alpha1", "kind": "FlinkJob",
        "metadata": { "name": "j", "namespace": "n", "uid": "u" },
        "spec": {
            "image": "img",
            "job": { "sql": "INSERT INTO b SELECT 1", "parallelism": 1 },
            "checkpointing": { "storage": "s3://b/cp" },
        },
    }))
    .expect("FlinkJob");
    let plan = running_plan();
    for d in [
        flink_rs_operator::resources::jobmanager(&fj, &plan),
        flink_rs_operator::resources::taskmanager(&fj, &plan),
    ] {
        let d = serde_json::to_value(&d).expect("json");
        let pod = &d["spec"]["template"];
        let violations = restricted_violations(pod);
        assert!(violations.is_empty(), "{violations:?}");
        assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
        let res = &pod["spec"]["containers"][0]["resources"];
        assert!(
            res["requests"]["cpu"].is_string() && res["limits"]["memory"].is_string(),
            "{res}"
        );
        assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    }
    // The per-FlinkJob checkpoint root.
    let conf = flink_rs_operator::resources::flink_config(&fj, &plan);
    assert_eq!(conf["state.checkpoints.dir"], "s3://b/cp/n/j-u");
    assert_eq!(conf["state.savepoints.dir"], "s3://b/cp/n/j-u/savepoints");
}

#[test]
fn chart_lints_and_renders_valid_least_privilege_manifests() {
    let helm = helm();
    let lint = Command::new(&helm)
        .args(["lint", "charts/flink-rs-operator"])
        .current_dir(root())
        .output()
        .expect("helm lint");
    let text = String::from_utf8_lossy(&lint.stdout);
    assert!(
        lint.status.success() && text.contains("0 chart(s) failed"),
        "{text}"
    );

    // All namespaces: a ClusterRole.
    let docs = template(&helm, &[]);
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for k in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
    ] {
        assert!(kinds.contains(&k), "{k} missing: {kinds:?}");
    }
    for d in &docs {
        match d["kind"].as_str() {
            Some("Deployment") => {
                let dep: Deployment = parse(d);
                let spec = dep.spec.expect("spec").template.spec.expect("pod spec");
                let c = &spec.containers[0];
                assert_eq!(
                    c.command.as_deref(),
                    Some(
                        &[
                            "/usr/local/bin/flink-rs-operator".to_string(),
                            "run".to_string()
                        ][..]
                    )
                );
                let sc = c.security_context.as_ref().expect("security context");
                assert_eq!(sc.read_only_root_filesystem, Some(true));
                assert_eq!(sc.allow_privilege_escalation, Some(false));
                assert_eq!(
                    spec.security_context
                        .as_ref()
                        .and_then(|s| s.run_as_non_root),
                    Some(true)
                );
                let violations = restricted_violations(&d["spec"]["template"]);
                assert!(
                    violations.is_empty(),
                    "Pod Security restricted: {violations:?}"
                );
                assert!(c.liveness_probe.is_some() && c.readiness_probe.is_some());
                assert_eq!(spec.service_account_name.as_deref(), Some("ops"));
            }
            Some("ClusterRole") => {
                let _: ClusterRole = parse(d);
                check_rules(d);
            }
            Some("Role") => {
                let _: Role = parse(d);
                check_rules(d);
            }
            Some("ClusterRoleBinding") => {
                let _: ClusterRoleBinding = parse(d);
            }
            Some("RoleBinding") => {
                let _: RoleBinding = parse(d);
            }
            Some("ServiceAccount") => {
                let _: ServiceAccount = parse(d);
            }
            other => panic!("unexpected kind {other:?}"),
        }
    }

    // The jobs' internal-TLS Secrets and NetworkPolicies: the operator may make them, and
    // is told to make the policies (on by default).
    let rules_of = |docs: &[Value]| -> Vec<String> {
        docs.iter()
            .filter(|d| d["kind"] == "ClusterRole")
            .flat_map(|d| d["rules"].as_array().cloned().unwrap_or_default())
            .flat_map(|r| {
                r["resources"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
            })
            .collect()
    };
    let env_of = |docs: &[Value], name: &str| -> Option<Value> {
        docs.iter().find(|d| d["kind"] == "Deployment")?["spec"]["template"]["spec"]["containers"]
            [0]["env"]
            .as_array()?
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    let resources = rules_of(&docs);
    assert!(resources.iter().any(|r| r == "secrets"), "{resources:?}");
    assert!(
        resources.iter().any(|r| r == "networkpolicies"),
        "{resources:?}"
    );
    assert_eq!(
        env_of(&docs, "FLINKRS_NETWORK_POLICIES"),
        Some(Value::from("true"))
    );
    assert_eq!(
        env_of(&docs, "FLINKRS_ALLOWED_PATHS"),
        Some(Value::from("/tmp")),
        "jobs' file paths are restricted by default"
    );
    let open = template(&helm, &["filesystem.allowedPaths={}"]);
    assert_eq!(
        env_of(&open, "FLINKRS_ALLOWED_PATHS"),
        Some(Value::from(""))
    );
    let without = template(&helm, &["networkPolicies.enabled=false"]);
    assert!(!rules_of(&without).iter().any(|r| r == "networkpolicies"));
    assert_eq!(
        env_of(&without, "FLINKRS_NETWORK_POLICIES"),
        Some(Value::from("false"))
    );

    // A list of namespaces: a Role per namespace, no cluster-wide permissions.
    let docs = template(&helm, &["watchNamespaces={team-a,team-b}"]);
    assert!(docs.iter().all(|d| d["kind"] != "ClusterRole"));
    let roles: Vec<&str> = docs
        .iter()
        .filter(|d| d["kind"] == "Role")
        .filter_map(|d| d["metadata"]["namespace"].as_str())
        .collect();
    assert_eq!(roles, ["team-a", "team-b", "flink-ops"]);
    let dep = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("deployment");
    let env = &dep["spec"]["template"]["spec"]["containers"][0]["env"][0];
    assert_eq!(env["value"], "team-a,team-b");
}

/// With monitoring on, the PodMonitor selects the pods the operator makes (by their labels,
/// port `metrics`), the ServiceMonitor the operator's own port, and the Grafana dashboard
/// queries only metrics flink-rs exports (docs/metrics.md, itself checked against the code).
#[test]
fn monitoring_selects_flink_pods_and_the_dashboard_queries_real_metrics() {
    let helm = helm();
    let docs = template(
        &helm,
        &[
            "monitoring.podMonitor.enabled=true",
            "monitoring.serviceMonitor.enabled=true",
            "monitoring.grafanaDashboard.enabled=true",
        ],
    );
    let of = |kind: &str| -> Vec<&Value> { docs.iter().filter(|d| d["kind"] == kind).collect() };
    let pm = of("PodMonitor");
    assert_eq!(pm.len(), 1);
    let selector = &pm[0]["spec"]["selector"]["matchLabels"];
    assert_eq!(selector["app.kubernetes.io/name"], "flink-rs");
    assert_eq!(
        selector["app.kubernetes.io/managed-by"],
        "flink-rs-operator"
    );
    assert_eq!(pm[0]["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
    // The labels the operator puts on a FlinkJob's pods match the selector.
    let fj: flink_rs_operator::crd::FlinkJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "flinkrs.io/v1alpha1", "kind": "FlinkJob",
        "metadata": { "name": "j", "namespace": "n", "uid": "u" },
        "spec": { "image": "img", "job": { "sql": "INSERT INTO b SELECT 1", "parallelism": 1 } },
    }))
    .expect("flinkjob");
    let plan = running_plan();
    let tm = serde_json::to_value(flink_rs_operator::resources::taskmanager(&fj, &plan))
        .expect("deployment");
    let pod_labels = &tm["spec"]["template"]["metadata"]["labels"];
    for (k, v) in selector.as_object().expect("labels") {
        assert_eq!(&pod_labels[k], v, "{k}");
    }
    let sm = of("ServiceMonitor");
    assert_eq!(sm.len(), 1);
    let svc = of("Service");
    assert_eq!(svc[0]["spec"]["ports"][0]["name"], "metrics");
    let dashboards = of("ConfigMap");
    assert_eq!(
        dashboards[0]["metadata"]["labels"]["grafana_dashboard"],
        "1"
    );
    let json: Value = serde_json::from_str(
        dashboards[0]["data"]["flink-rs.json"]
            .as_str()
            .expect("dashboard json"),
    )
    .expect("the dashboard parses");
    let documented = std::fs::read_to_string(root().join("docs/metrics.md")).expect("docs");
    let mut queried = 0;
    for panel in json["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("flink_") {
                    queried += 1;
                    assert!(
                        documented.contains(&format!("`{word}`")),
                        "panel `{}` queries {word}, which flink-rs does not export",
                        panel["title"]
                    );
                }
            }
        }
    }
    assert!(queried >= 12, "{queried}");
}
