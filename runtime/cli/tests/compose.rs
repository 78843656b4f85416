//! The cluster in containers, as users run it: build the image (FROM scratch, nothing
//! pulled), `docker-compose up` one jobmanager and two taskmanagers on a private network
//! (REST published on 127.0.0.1 only), submit a SQL job over REST from the host, `docker
//! kill` a taskmanager container mid-run, and check the job finishes from its checkpoint with
//! the exactly-once output equal to a failure-free run's, with internal TLS on (as the compose
//! file has it). `docker-compose down` runs whatever happens.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use flink_rs::cluster::client::RestClient;

const BIN: &str = env!("CARGO_BIN_EXE_flink-rs");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

struct Compose {
    project: String,
    env: Vec<(String, String)>,
}

impl Compose {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker-compose")
            .args([
                "-p",
                &self.project,
                "-f",
                root()
                    .join("docker/docker-compose.yml")
                    .to_str()
                    .expect("path"),
            ])
            .args(args)
            .envs(self.env.iter().cloned())
            .output()
            .expect("docker-compose")
    }

    fn logs(&self) -> String {
        let o = self.run(&["logs", "--no-color", "--tail", "30"]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        let _ = self.run(&["down", "-v", "--remove-orphans", "-t", "1"]);
    }
}

fn docker_ok() -> bool {
    Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
        && Command::new("docker-compose")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
}

fn wait(what: &str, timeout: Duration, compose: &Compose, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < until,
            "timed out waiting for {what}\n{}",
            compose.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn compose_cluster_survives_a_killed_taskmanager_container() {
    if !docker_ok() {
        eprintln!("SKIPPED: no usable Docker engine or docker-compose on this machine");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    // The reference: the same job in the embedded mini-cluster, without failures.
    let reference = tmp.path().join("reference");
    let sql = common::job(reference.to_str().expect("path"), 60_000, 0)
        .replace("SET 'execution.checkpointing.interval' = '500 ms';", "");
    flink_rs::sql::compile(&sql, flink_rs::graph::ExecutionConfig::default(), &[])
        .expect("compile")
        .env
        .execute()
        .expect("reference run");
    let expected = common::committed(&reference);
    assert!(expected.len() > 100);

    let tag = format!("flink-rs:test-{}", std::process::id());
    let built = Command::new(root().join("docker/build-image.sh"))
        .args([BIN, &tag])
        .output()
        .expect("build image");
    assert!(
        built.status.success(),
        "image build failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    // The containers run as uid 9999.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let compose = Compose {
        project: format!("flinkrstest{}", std::process::id()),
        env: vec![
            ("FLINK_RS_IMAGE".into(), tag.clone()),
            ("FLINK_RS_REST_PORT".into(), port.to_string()),
            ("FLINK_RS_DATA".into(), data.display().to_string()),
            ("FLINK_RS_HEARTBEAT_TIMEOUT".into(), "3000".into()),
        ],
    };
    let up = compose.run(&["up", "-d", "--scale", "taskmanager=2"]);
    assert!(
        up.status.success(),
        "compose up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let c = RestClient::new(&format!("http://127.0.0.1:{port}")).expect("client");
    wait(
        "two taskmanagers",
        Duration::from_secs(60),
        &compose,
        || {
            c.get("/overview")
                .ok()
                .is_some_and(|v| v["slots-available"] == 2)
        },
    );
    // Internal TLS is on (certificates from the compose file's `tls` service): the
    // taskmanagers registered over it.
    let started = compose.run(&["logs", "--no-color", "jobmanager", "taskmanager"]);
    let started = String::from_utf8_lossy(&started.stdout);
    assert_eq!(
        started.matches("internal_tls=true").count(),
        3,
        "jobmanager and two taskmanagers with internal TLS:\n{started}"
    );
    let id = c
        .submit(&common::job("/data/out", 60_000, 5000), &[])
        .expect("submit");
    let checkpoints = || {
        c.get(&format!("/jobs/{id}/checkpoints"))
            .ok()
            .and_then(|v| v["counts"]["completed"].as_u64())
            .unwrap_or(0)
    };
    wait("two checkpoints", Duration::from_secs(60), &compose, || {
        checkpoints() >= 2
    });
    let victim = format!("{}_taskmanager_1", compose.project);
    let killed = Command::new("docker")
        .args(["kill", &victim])
        .output()
        .expect("docker kill");
    assert!(
        killed.status.success(),
        "docker kill: {}",
        String::from_utf8_lossy(&killed.stderr)
    );
    let state = |c: &RestClient| {
        c.get(&format!("/jobs/{id}"))
            .map(|v| {
                (
                    v["state"].as_str().unwrap_or("").to_string(),
                    v["restarts"].as_u64().unwrap_or(0),
                )
            })
            .unwrap_or_default()
    };
    wait(
        "the job to restart",
        Duration::from_secs(60),
        &compose,
        || {
            let (s, restarts) = state(&c);
            s == "RESTARTING" || restarts >= 1
        },
    );
    // A replacement taskmanager (restart policy, or compose bringing the service back).
    let _ = compose.run(&["up", "-d", "--scale", "taskmanager=2", "--no-recreate"]);
    wait(
        "the job to finish",
        Duration::from_secs(180),
        &compose,
        || {
            let (s, _) = state(&c);
            assert!(
                s != "FAILED" && s != "CANCELED",
                "job {s}\n{}",
                compose.logs()
            );
            s == "FINISHED"
        },
    );
    assert!(state(&c).1 >= 1, "the job restarted");
    assert_eq!(
        common::committed(&data.join("out")),
        expected,
        "{}",
        compose.logs()
    );
    drop(compose);
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
}
