//! End-to-end on the Kubernetes cluster named by `KUBECONFIG` (kind in CI:
//! `.github/workflows/e2e.yml`). Skipped, saying so, when `KUBECONFIG` is unset.
//!
//! Installs the operator chart (which installs the CRD) into a fresh namespace, applies a
//! bounded FlinkJob writing to the exactly-once file sink, waits for Running and a completed
//! checkpoint, deletes a taskmanager pod and then the jobmanager pod (measuring the time
//! until the job runs and checkpoints again), upgrades it with `upgradeMode: savepoint`,
//! waits for it to finish, compares its output with a failure-free run's record for record,
//! and deletes it through the finalizer.
//!
//! Environment: `E2E_IMAGE` (default `flink-rs:latest`, already loaded into the cluster:
//! `kind load docker-image`), `E2E_NODE` (the kind node container whose filesystem backs the
//! shared hostPath volume; default `kind-control-plane`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

struct Tools {
    kubectl: PathBuf,
    helm: PathBuf,
    ns: String,
}

impl Tools {
    fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let o = Command::new(&self.kubectl)
            .args(args)
            .output()
            .expect("kubectl");
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    }

    fn must(&self, args: &[&str]) -> String {
        let (ok, out) = self.kubectl(args);
        assert!(ok, "kubectl {args:?}: {out}");
        out
    }

    fn fj(&self) -> Value {
        let (_, out) = self.kubectl(&["-n", &self.ns, "get", "fj", "e2e", "-o", "json"]);
        serde_json::from_str(&out).unwrap_or(Value::Null)
    }

    fn apply(&self, manifest: &str) {
        let path = std::env::temp_dir().join(format!("{}.yaml", self.ns));
        std::fs::write(&path, manifest).expect("manifest");
        self.must(&["-n", &self.ns, "apply", "-f", path.to_str().expect("path")]);
    }
}

impl Drop for Tools {
    fn drop(&mut self) {
        let _ = Command::new(&self.helm)
            .args(["uninstall", "flink-rs-operator", "-n", &self.ns])
            .output();
        let _ = Command::new(&self.kubectl)
            .args(["delete", "namespace", &self.ns, "--wait=false"])
            .output();
    }
}

fn wait(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
    start.elapsed()
}

fn sql(out: &str, checkpoints_note: &str) -> String {
    // The same job as the cluster tests' (`tests/sql/bid_windows.sql`), 240 000 bids at 2000/s.
    format!(
        "-- {checkpoints_note}\n{}",
        include_str!("../sql/bid_windows.sql")
            .replace("{rows}", "240000")
            .replace("{rate}", "'rows-per-second' = '2000',")
            .replace("{out}", out)
    )
}

fn indent(s: &str, n: usize) -> String {
    s.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(n)))
        .collect()
}

fn manifest(image: &str, host_dir: &str, config_note: &str) -> String {
    let volume = format!(
        "podTemplate:
      spec:
        volumes: [{{ name: data, hostPath: {{ path: {host_dir}, type: Directory }} }}]
        containers: [{{ name: flink-main-container, volumeMounts: [{{ name: data, mountPath: /data }}] }}]"
    );
    format!(
        "apiVersion: flinkrs.io/v1alpha1
kind: FlinkJob
metadata:
  name: e2e
spec:
  image: {image}
  imagePullPolicy: IfNotPresent
  checkpointing:
    storage: /data/checkpoints
    interval: 2 s
  flinkConfiguration:
    heartbeat.timeout: \"10000\"
  jobManager:
    {volume}
  taskManager:
    replicas: 2
    slots: 1
    {volume}
  job:
    parallelism: 2
    upgradeMode: savepoint
    sql: |
{}",
        indent(&sql("/data/out", config_note), 6)
    )
}

fn committed_lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
#[ignore = "needs a Kubernetes cluster named by KUBECONFIG (kind, in .github/workflows/e2e.yml); run with --ignored"]
fn operator_keeps_a_job_running_through_pod_loss_upgrade_and_deletion() {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: the end-to-end suite needs a Kubernetes cluster"
    );
    let image = std::env::var("E2E_IMAGE").unwrap_or_else(|_| "flink-rs:latest".into());
    let node = std::env::var("E2E_NODE").unwrap_or_else(|_| "kind-control-plane".into());
    let tools_dir = Command::new(root().join("scripts/k8s-tools"))
        .output()
        .expect("k8s-tools");
    assert!(tools_dir.status.success(), "cannot fetch kubectl and helm");
    let dir = PathBuf::from(String::from_utf8_lossy(&tools_dir.stdout).trim());
    let ns = format!("flinkrs-e2e-{}", std::process::id());
    let t = Tools {
        kubectl: dir.join("kubectl"),
        helm: dir.join("helm"),
        ns: ns.clone(),
    };
    // Shared storage: a directory on the (single) kind node, writable by the pods' uid.
    let host_dir = format!("/tmp/{ns}");
    let mk = Command::new("docker")
        .args([
            "exec",
            &node,
            "sh",
            "-c",
            &format!("mkdir -p -m 0777 {host_dir}"),
        ])
        .output()
        .expect("docker exec");
    assert!(mk.status.success(), "cannot prepare {host_dir} on {node}");

    let (repo, tag) = image.rsplit_once(':').unwrap_or((image.as_str(), "latest"));
    let install = Command::new(&t.helm)
        .current_dir(root())
        .args([
            "install",
            "flink-rs-operator",
            "charts/flink-rs-operator",
            "-n",
            &ns,
            "--create-namespace",
            "--wait",
            "--timeout",
            "3m",
            "--set",
            &format!("image.repository={repo}"),
            "--set",
            &format!("image.tag={tag}"),
            "--set",
            &format!("watchNamespaces={{{ns}}}"),
            // The job writes its results here (its checkpoints, under /data/checkpoints,
            // are allowed by the operator itself).
            "--set",
            "filesystem.allowedPaths={/data/out}",
        ])
        .output()
        .expect("helm install");
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );

    t.apply(&manifest(&image, &host_dir, "v1"));
    let state = |t: &Tools| {
        let v = t.fj();
        (
            v["status"]["lifecycleState"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            v["status"]["jobState"].as_str().unwrap_or("").to_string(),
            v["status"]["lastCheckpoint"]["id"].as_u64().unwrap_or(0),
        )
    };
    wait(
        "Running with a checkpoint",
        Duration::from_secs(300),
        || {
            let (l, j, cp) = state(&t);
            l == "Running" && j == "RUNNING" && cp > 0
        },
    );

    // Lose a taskmanager pod: the Deployment replaces it, the job restarts from its checkpoint.
    for (what, selector) in [
        ("taskmanager", "app.kubernetes.io/component=taskmanager"),
        ("jobmanager", "app.kubernetes.io/component=jobmanager"),
    ] {
        let (_, _, before) = state(&t);
        let pods = t.must(&["-n", &ns, "get", "pods", "-l", selector, "-o", "name"]);
        let pod = pods.lines().next().expect("a pod").trim().to_string();
        t.must(&["-n", &ns, "delete", &pod, "--wait=false"]);
        let took = wait(
            "the job to checkpoint again",
            Duration::from_secs(300),
            || {
                let (_, j, cp) = state(&t);
                j == "RUNNING" && cp > before + 1
            },
        );
        eprintln!(
            "{what} pod deleted -> job running and checkpointing again: {:.1} s",
            took.as_secs_f64()
        );
    }

    // Upgrade through a savepoint: a spec change (the script's comment) makes a new job
    // from a savepoint of the old one.
    let old_id = t.fj()["status"]["jobId"].as_str().unwrap_or("").to_string();
    t.apply(&manifest(&image, &host_dir, "v2"));
    wait("the upgraded job", Duration::from_secs(300), || {
        let v = t.fj();
        v["status"]["jobId"].as_str().is_some_and(|id| id != old_id)
            && v["status"]["savepoints"]
                .as_array()
                .is_some_and(|s| s.iter().any(|p| p["trigger"] == "upgrade"))
    });
    wait("the job to finish", Duration::from_secs(600), || {
        state(&t).1 == "FINISHED"
    });

    // Record for record against a failure-free run.
    let cat = Command::new("docker")
        .args([
            "exec",
            &node,
            "sh",
            "-c",
            &format!("cat {host_dir}/out/part-*"),
        ])
        .output()
        .expect("read output");
    let got = committed_lines(&String::from_utf8_lossy(&cat.stdout));
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("reference");
    let reference =
        sql(out.to_str().expect("path"), "reference").replace("'rows-per-second' = '2000',", "");
    flink_rs::sql::compile(&reference, flink_rs::graph::ExecutionConfig::default(), &[])
        .expect("compile")
        .env
        .execute()
        .expect("reference run");
    let mut expected = Vec::new();
    for e in std::fs::read_dir(&out).expect("reference out").flatten() {
        if e.file_name().to_string_lossy().starts_with("part-") {
            expected.push(std::fs::read_to_string(e.path()).expect("read"));
        }
    }
    assert_eq!(got, committed_lines(&expected.concat()));

    // Deletion runs through the finalizer; the owned objects go with it.
    t.must(&[
        "-n",
        &ns,
        "delete",
        "fj",
        "e2e",
        "--wait=true",
        "--timeout=120s",
    ]);
    let left = t.must(&[
        "-n",
        &ns,
        "get",
        "deployments",
        "-l",
        "app.kubernetes.io/instance=e2e",
        "-o",
        "name",
    ]);
    assert!(
        left.trim().is_empty() || left.contains("No resources"),
        "left: {left}"
    );
}
