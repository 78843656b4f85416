//! The simulation's nodes: every Deployment in the API server model becomes real
//! `flink-rs jobmanager` / `taskmanager` processes on 127.0.0.1, started from the rendered
//! pod spec (its args, the ConfigMap it mounts at `/config` and the Secrets it mounts written
//! to folders), with
//! the Recreate strategy (old pods are gone before new ones start), containers restarted
//! when they exit, and Pod objects with container states written back to the model.
//!
//! A FlinkJob's Service is a fixed pair of loopback ports (REST and RPC) chosen at its first
//! jobmanager pod: a replaced jobmanager listens where the old one did, as behind a Service,
//! so taskmanagers find it again.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::apiserver::ApiServer;

const BIN: &str = env!("CARGO_BIN_EXE_flink-rs");

struct PodProc {
    name: String,
    template: String,
    child: Option<Child>,
    restarts: u32,
    exited_at: Option<Instant>,
}

impl Drop for PodProc {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// (namespace, FlinkJob name) → (rest port, rpc port).
type Services = HashMap<(String, String), (u16, u16)>;

pub struct Kubelet {
    api: ApiServer,
    dir: PathBuf,
    pods: HashMap<(String, String), Vec<PodProc>>,
    services: Arc<Mutex<Services>>,
    counter: u64,
    /// Pods to delete (`kubectl delete pod`), by deployment and index.
    kills: Arc<Mutex<Vec<(String, String, usize)>>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A handle to the running kubelet: where a FlinkJob's jobmanager answers, pod deletion.
#[derive(Clone)]
pub struct Nodes {
    services: Arc<Mutex<Services>>,
    kills: Arc<Mutex<Vec<(String, String, usize)>>>,
    stop: Arc<AtomicBool>,
}

impl Nodes {
    pub fn rest_url(&self, ns: &str, name: &str) -> String {
        let ports = self
            .services
            .lock()
            .ok()
            .and_then(|s| s.get(&(ns.to_string(), name.to_string())).copied());
        match ports {
            Some((rest, _)) => format!("http://127.0.0.1:{rest}"),
            // No Service endpoints yet: a port nothing listens on.
            None => "http://127.0.0.1:9".into(),
        }
    }

    /// Deletes pod `index` of a Deployment (its process is killed; the Deployment makes a
    /// new one).
    pub fn delete_pod(&self, ns: &str, deployment: &str, index: usize) {
        if let Ok(mut k) = self.kills.lock() {
            k.push((ns.into(), deployment.into(), index));
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Kubelet {
    /// Starts the kubelet's loop on its own thread.
    pub fn start(api: ApiServer, dir: PathBuf) -> (Nodes, std::thread::JoinHandle<()>) {
        let nodes = Nodes {
            services: Arc::default(),
            kills: Arc::default(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let mut k = Kubelet {
            api,
            dir,
            pods: HashMap::new(),
            services: nodes.services.clone(),
            counter: 0,
            kills: nodes.kills.clone(),
        };
        let stop = nodes.stop.clone();
        let handle = std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                k.tick();
                std::thread::sleep(Duration::from_millis(100));
            }
            k.pods.clear();
        });
        (nodes, handle)
    }

    fn tick(&mut self) {
        let deployments = self.api.list("deployments");
        let live: Vec<(String, String)> = deployments
            .iter()
            .map(|d| {
                (
                    d["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    d["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        // Deployments gone (garbage-collected): their pods go too.
        let gone: Vec<(String, String)> = self
            .pods
            .keys()
            .filter(|k| !live.contains(k))
            .cloned()
            .collect();
        for k in gone {
            for p in self.pods.remove(&k).unwrap_or_default() {
                self.api.remove_raw("pods", &k.0, &p.name);
            }
        }
        let kills: Vec<_> = self
            .kills
            .lock()
            .map(|mut k| std::mem::take(&mut *k))
            .unwrap_or_default();
        for (ns, dep, i) in kills {
            if let Some(pods) = self.pods.get_mut(&(ns.clone(), dep)) {
                if i < pods.len() {
                    let p = pods.remove(i);
                    self.api.remove_raw("pods", &ns, &p.name);
                }
            }
        }
        for d in deployments {
            self.reconcile_deployment(&d);
        }
    }

    fn reconcile_deployment(&mut self, d: &Value) {
        let ns = d["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = d["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let replicas = d["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
        let template = d["spec"]["template"].to_string();
        let key = (ns.clone(), name.clone());
        let mut pods = self.pods.remove(&key).unwrap_or_default();
        // Recreate: every pod of an old template goes before a new one starts.
        let (keep, old): (Vec<PodProc>, Vec<PodProc>) =
            pods.into_iter().partition(|p| p.template == template);
        pods = keep;
        for p in old {
            self.api.remove_raw("pods", &ns, &p.name);
        }
        while pods.len() > replicas {
            if let Some(p) = pods.pop() {
                self.api.remove_raw("pods", &ns, &p.name);
            }
        }
        // Containers that exited restart after a second (CrashLoopBackOff between).
        for p in &mut pods {
            let exited = match &mut p.child {
                Some(c) => matches!(c.try_wait(), Ok(Some(_))),
                None => true,
            };
            if exited && p.exited_at.is_none() {
                p.exited_at = Some(Instant::now());
                p.child = None;
            }
            if p.exited_at
                .is_some_and(|t| t.elapsed() >= Duration::from_secs(1))
            {
                p.restarts += 1;
                p.exited_at = None;
                p.child = self.run_container(&ns, d, &p.name);
            }
            self.write_pod(&ns, d, p);
        }
        while pods.len() < replicas {
            self.counter += 1;
            let pod_name = format!("{name}-{}", self.counter);
            let child = self.run_container(&ns, d, &pod_name);
            let p = PodProc {
                name: pod_name,
                template: template.clone(),
                exited_at: child.is_none().then(Instant::now),
                child,
                restarts: 0,
            };
            self.write_pod(&ns, d, &p);
            pods.push(p);
        }
        self.pods.insert(key, pods);
    }

    fn write_pod(&self, ns: &str, d: &Value, p: &PodProc) {
        let state = if p.exited_at.is_some() {
            json!({ "waiting": { "reason": "CrashLoopBackOff", "message": "the container exited" } })
        } else {
            json!({ "running": {} })
        };
        let labels = d["spec"]["template"]["metadata"]["labels"].clone();
        self.api.put_raw(
            "pods",
            ns,
            &p.name,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": p.name, "namespace": ns, "labels": labels },
                "status": {
                    "phase": "Running",
                    "containerStatuses": [{
                        "name": d["spec"]["template"]["spec"]["containers"][0]["name"],
                        "ready": p.exited_at.is_none(), "restartCount": p.restarts,
                        "image": "flink-rs:sim", "imageID": "", "state": state,
                    }],
                },
            }),
        );
    }

    /// Starts the pod's main container as a process: its args, `/config` from the
    /// ConfigMap, loopback addresses instead of cluster DNS.
    fn run_container(&mut self, ns: &str, d: &Value, pod: &str) -> Option<Child> {
        let spec = &d["spec"]["template"]["spec"];
        let container = &spec["containers"][0];
        let instance = d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/instance"]
            .as_str()?
            .to_string();
        let cm_name = spec["volumes"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == "config")?["configMap"]["name"]
            .as_str()?
            .to_string();
        let cm = self.api.get("configmaps", ns, &cm_name)?;
        let dir = self.dir.join("pods").join(pod);
        std::fs::create_dir_all(&dir).ok()?;
        for (file, text) in cm["data"].as_object()? {
            std::fs::write(dir.join(file), text.as_str().unwrap_or_default()).ok()?;
        }
        // Secret volumes (the job's internal-TLS Secret): their files in a folder of the
        // pod's, and the configuration's paths under the mount pointed there.
        let mut secret_paths: Vec<(String, String)> = Vec::new();
        for v in spec["volumes"].as_array()? {
            let Some(secret_name) = v["secret"]["secretName"].as_str() else {
                continue;
            };
            let mount = container["volumeMounts"]
                .as_array()?
                .iter()
                .find(|m| m["name"] == v["name"])?["mountPath"]
                .as_str()?
                .to_string();
            let secret = self.api.get("secrets", ns, secret_name)?;
            let folder = dir.join(v["name"].as_str()?);
            std::fs::create_dir_all(&folder).ok()?;
            for (file, b64) in secret["data"].as_object()? {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64.as_str().unwrap_or_default())
                    .ok()?;
                std::fs::write(folder.join(file), bytes).ok()?;
            }
            secret_paths.push((format!("{mount}/"), format!("{}/", folder.display())));
        }
        if !secret_paths.is_empty() {
            let conf = dir.join("config.yaml");
            let mut text = std::fs::read_to_string(&conf).ok()?;
            for (from, to) in &secret_paths {
                text = text.replace(&format!(": {from}"), &format!(": {to}"));
            }
            std::fs::write(&conf, text).ok()?;
        }
        let mut args: Vec<String> = container["args"]
            .as_array()?
            .iter()
            .filter_map(|a| a.as_str())
            .map(|a| match a.strip_prefix("/config/") {
                Some(f) => dir.join(f).display().to_string(),
                None => a.to_string(),
            })
            .collect();
        let (rest, rpc) = *self
            .services
            .lock()
            .ok()?
            .entry((ns.to_string(), instance))
            .or_insert_with(|| (free_port(), free_port()));
        let role = args.first()?.clone();
        let set = |k: &str, v: String| ["--set".to_string(), format!("{k}={v}")];
        // Every pod has its own Prometheus port 9249; pods sharing this host take any free one.
        args.extend(set("metrics.reporter.prom.port", "0".into()));
        match role.as_str() {
            "jobmanager" => {
                args.extend(set("jobmanager.bind-host", "127.0.0.1".into()));
                args.extend(set("rest.bind-address", "127.0.0.1".into()));
                args.extend(set("rest.port", rest.to_string()));
                args.extend(set("jobmanager.rpc.port", rpc.to_string()));
            }
            _ => {
                args.push("--jobmanager".into());
                args.push(format!("127.0.0.1:{rpc}"));
                // Many taskmanagers share this host: any free data port.
                args.extend(set("taskmanager.data.port", "0".into()));
                args.extend(
                    flink_rs::cluster::TASKMANAGER_LOOPBACK_ARGS
                        .iter()
                        .map(|s| s.to_string()),
                );
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{pod}.log")))
            .ok()?;
        let mut child = Command::new(BIN)
            .args(&args)
            .env("FLINK_RS_EXIT_WITH_PARENT", "1")
            .env("RUST_LOG", "info")
            .stdout(if role == "jobmanager" {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(log)
            .spawn()
            .ok()?;
        if role == "jobmanager" {
            // Serving once it printed its addresses (or gone, if it could not start).
            let mut line = String::new();
            let out = child.stdout.take()?;
            let _ = BufReader::new(out).read_line(&mut line);
        }
        Some(child)
    }
}
