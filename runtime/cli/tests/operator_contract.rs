//! The contract between the operator and the engine, without Kubernetes: the ConfigMap and
//! container arguments the operator generates start a real jobmanager (application mode)
//! and taskmanagers on 127.0.0.1, and the operator's own REST client reads the job's state
//! and checkpoints from that jobmanager. Only addresses and ports are overridden (there is no
//! cluster DNS here).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flink_rs_operator::crd::FlinkJob;
use flink_rs_operator::jm::{Endpoint, HttpJm, JobManagerApi};
use flink_rs_operator::job_state::JobStatus;
use flink_rs_operator::resources::{self, RunPlan};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_flink-rs"))
}

fn args_of(d: &k8s_openapi::api::apps::v1::Deployment) -> Vec<String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers[0].args.clone())
        .unwrap_or_default()
}

#[test]
fn operator_generated_configuration_runs_the_job_and_its_rest_client_reads_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let sql = format!(
        "CREATE TABLE g (id BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
         WITH ('connector' = 'datagen', 'number-of-rows' = '20000', 'rows-per-second' = '4000',
               'fields.id.kind' = 'sequence', 'fields.id.start' = '1',
               'fields.ts.kind' = 'sequence', 'fields.ts.start' = '1577836800000');
         CREATE TABLE o (window_end TIMESTAMP(3), n BIGINT)
         WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
         INSERT INTO o SELECT window_end, COUNT(*) FROM TABLE(TUMBLE(TABLE g, DESCRIPTOR(ts), INTERVAL '1' SECOND))
         GROUP BY window_start, window_end;",
        out.display()
    );
    let fj: FlinkJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "flinkrs.io/v1alpha1", "kind": "FlinkJob",
        "metadata": { "name": "contract", "namespace": "default", "uid": "u1" },
        "spec": {
            "image": "flink-rs:test",
            "checkpointing": { "storage": tmp.path().join("cp").display().to_string(), "interval": "500 ms", "retained": 2 },
            "flinkConfiguration": { "heartbeat.interval": "200" },
            "taskManager": { "replicas": 2, "slots": 1 },
            "job": { "sql": sql, "parallelism": 2 },
        },
    }))
    .expect("FlinkJob");
    let plan = RunPlan {
        job_id: flink_rs_operator::reconcile::job_id(&fj, 1),
        restore_from: None,
        running: true,
        restart_generation: 0,
        spec_hash: flink_rs_operator::reconcile::spec_hash(&fj),
        tls_version: None,
        rest_token_version: None,
        // Restricted as the chart runs it: the job's output here, its checkpoints allowed
        // by the operator itself.
        allowed_paths: Some(resources::allowed_paths(&fj, &[out.display().to_string()])),
    };
    // What the pods would mount at /config.
    let config_dir = tmp.path().join("config");
    std::fs::create_dir_all(&config_dir).expect("config dir");
    // The job's TLS Secret, as the operator issues it, where the pods would mount it: the
    // processes run with internal TLS on, as in Kubernetes.
    assert!(resources::managed_tls(&fj));
    let issued = flink_rs::cluster::tls::issue(&[], 2).expect("certificates");
    let secret = resources::tls_secret(&fj, &issued);
    let tls_dir = tmp.path().join("tls");
    std::fs::create_dir_all(&tls_dir).expect("tls dir");
    for (k, v) in secret.data.expect("secret data") {
        std::fs::write(tls_dir.join(k), v.0).expect("write secret file");
    }
    // The job's REST token Secret, likewise.
    let token = flink_rs_certificates::random_token().expect("token");
    let token_dir = tmp.path().join("rest-token");
    std::fs::create_dir_all(&token_dir).expect("token dir");
    for (k, v) in resources::rest_token_secret(&fj, &token)
        .data
        .expect("token data")
    {
        std::fs::write(token_dir.join(k), v.0).expect("write token file");
    }
    let cm = resources::config_map(&fj, &plan);
    for (k, v) in cm.data.expect("data") {
        let v = v
            .replace(
                &format!(": {}/", resources::TLS_DIR),
                &format!(": {}/", tls_dir.display()),
            )
            .replace(
                &format!(": {}/", resources::REST_TOKEN_DIR),
                &format!(": {}/", token_dir.display()),
            );
        std::fs::write(config_dir.join(k), v).expect("write config");
    }
    let localize = |args: Vec<String>| -> Vec<String> {
        args.into_iter()
            .map(|a| match a.strip_prefix("/config/") {
                Some(file) => config_dir.join(file).display().to_string(),
                None => a,
            })
            .collect()
    };
    let bin = binary();
    let mut jm_args = localize(args_of(&resources::jobmanager(&fj, &plan)));
    assert_eq!(jm_args[0], "jobmanager");
    jm_args.extend(flink_rs::cluster::JOBMANAGER_LOOPBACK_ARGS.map(String::from));
    // The pods' Prometheus port (9249 in the generated configuration) is per pod; processes
    // sharing this host take any free one.
    jm_args.extend(["--set", "metrics.reporter.prom.port=0"].map(String::from));
    let mut jm = Proc(
        Command::new(&bin)
            .args(&jm_args)
            .env("FLINK_RS_EXIT_WITH_PARENT", "1")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(tmp.path().join("jm.log")).expect("log"))
            .spawn()
            .expect("jobmanager"),
    );
    let mut line = String::new();
    BufReader::new(jm.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address line");
    let (rpc, rest) = flink_rs::cluster::started_addresses(&line).unwrap_or_else(|| {
        panic!(
            "jobmanager printed `{line}`; log:\n{}",
            std::fs::read_to_string(tmp.path().join("jm.log")).unwrap_or_default()
        )
    });
    let rest = format!("http://{rest}");
    let mut tms = Vec::new();
    for i in 0..2 {
        let mut a = localize(args_of(&resources::taskmanager(&fj, &plan)));
        assert_eq!(a[0], "taskmanager");
        a.extend(
            [
                "--jobmanager",
                &rpc,
                "--set",
                "taskmanager.data.port=0",
                "--set",
                "metrics.reporter.prom.port=0",
            ]
            .map(String::from),
        );
        a.extend(flink_rs::cluster::TASKMANAGER_LOOPBACK_ARGS.map(String::from));
        tms.push(Proc(
            Command::new(&bin)
                .args(&a)
                .env("FLINK_RS_EXIT_WITH_PARENT", "1")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(tmp.path().join(format!("tm{i}.log"))).expect("log"))
                .spawn()
                .expect("taskmanager"),
        ));
    }
    // The operator's REST client, as the reconciler uses it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = HttpJm::default();
    // Without the job's token the jobmanager answers nothing.
    let without = Endpoint {
        url: rest.clone(),
        token: None,
    };
    let at = Endpoint {
        url: rest.clone(),
        token: Some(token),
    };
    let start = Instant::now();
    let mut saw_checkpoint = None;
    loop {
        let view = rt.block_on(client.job(&at, &plan.job_id));
        if view.is_ok() {
            let refused = rt
                .block_on(client.job(&without, &plan.job_id))
                .expect_err("401 without the token");
            assert!(refused.to_string().contains("401"), "{refused}");
        }
        if let Ok(Some(v)) = &view {
            if v.last_checkpoint.is_some() {
                saw_checkpoint = v.last_checkpoint.clone();
            }
            assert_eq!(
                v.plan.as_deref(),
                Some(resources::plan_hash(&fj, &plan).as_str()),
                "the jobmanager reports the plan it was deployed with"
            );
            if v.state == JobStatus::Finished {
                break;
            }
            assert!(v.state != JobStatus::Failed, "job failed: {v:?}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "job did not finish: {view:?}\n{}",
            std::fs::read_to_string(tmp.path().join("jm.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let cp = saw_checkpoint.expect("a completed checkpoint seen through REST");
    assert!(cp.path.contains(&plan.job_id), "{cp:?}");
    assert!(
        cp.time.starts_with("20") && cp.time.ends_with('Z'),
        "{cp:?}"
    );
    // The job did its work: one row per 1-second window of 20000 rows at 1 ms apart.
    let mut rows = 0;
    for e in std::fs::read_dir(&out).expect("out").flatten() {
        if e.file_name().to_string_lossy().starts_with("part-") {
            rows += std::fs::read_to_string(e.path())
                .expect("read")
                .lines()
                .count();
        }
    }
    assert_eq!(rows, 20);
    drop(tms);
    drop(jm);
}
