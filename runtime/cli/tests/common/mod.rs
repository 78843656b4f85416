//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod openapi;

use std::path::Path;

/// A windowed aggregation over `rows` generated bids (`rate` rows/s, 0: unlimited) into the
/// exactly-once file sink at `out`, checkpointed every 500 ms, parallelism 2.
pub fn job(out: &str, rows: u64, rate: u64) -> String {
    let rate = if rate > 0 {
        format!("'rows-per-second' = '{rate}',")
    } else {
        String::new()
    };
    format!(
        "SET 'parallelism.default' = '2';
SET 'execution.checkpointing.interval' = '500 ms';
{}",
        bid_windows(out, rows, &rate)
    )
}

/// `tests/sql/bid_windows.sql` (the job the cluster, compose and Kubernetes end-to-end tests
/// run): `rows` generated bids, `rate` the datagen rate option or empty, results at `out`.
pub fn bid_windows(out: &str, rows: u64, rate: &str) -> String {
    include_str!("../../../../tests/sql/bid_windows.sql")
        .replace("{rows}", &rows.to_string())
        .replace("{rate}", rate)
        .replace("{out}", out)
}

/// The published part files' lines under `dir`, sorted.
pub fn committed(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with("part-") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            lines.extend(text.lines().map(str::to_string));
        }
    }
    lines.sort();
    lines
}

/// Waits until `done` holds, checking every 10 ms; panics naming `what` after `timeout`.
/// Tests wait for what they can observe (records through a task, completed checkpoints)
/// rather than for a fixed time.
pub fn wait_until(what: &str, timeout: std::time::Duration, mut done: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + timeout;
    while !done() {
        assert!(
            std::time::Instant::now() < until,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Records the job's source tasks have emitted so far.
pub fn source_records(job: &flink_rs::executor::JobHandle) -> u64 {
    job.task_metrics()
        .iter()
        .filter(|(task, _, _)| task.starts_with("Source"))
        .map(|(_, _, out)| out)
        .sum()
}

/// Starts one of the project's test servers (`scripts/NAME ARGS…`, which installs what it
/// needs and exits with this process) and waits for its first line: `READY <port> …`.
/// Returns the process and the words after `READY`; the process is killed when it did not
/// say that.
pub fn start_test_server(
    name: &str,
    args: &[&str],
) -> flink_rs::error::Result<(std::process::Child, Vec<String>)> {
    use flink_rs::error::Error;
    use std::io::BufRead;
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(name);
    let mut child = std::process::Command::new(&script)
        .arg(std::process::id().to_string())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("start", &script, e))?;
    let mut line = String::new();
    let read = match child.stdout.take() {
        Some(out) => std::io::BufReader::new(out)
            .read_line(&mut line)
            .map_err(|e| Error::io("read", &script, e)),
        None => Err(Error::User(format!("no output from {name}"))),
    };
    match read.map(|_| line.strip_prefix("READY ")) {
        Ok(Some(rest)) => Ok((child, rest.split_whitespace().map(str::to_string).collect())),
        other => {
            let _ = child.kill();
            let _ = child.wait();
            Err(match other {
                Err(e) => e,
                _ => Error::User(format!("{name} did not start: {line:?}")),
            })
        }
    }
}

/// The Prometheus exposition at `http://ADDR/metrics`, or the error.
pub fn scrape(addr: &str) -> Result<String, String> {
    let c = flink_rs::cluster::client::RestClient::new(&format!("http://{addr}"))
        .map_err(|e| e.to_string())?;
    match c.raw("GET", "/metrics", None, "") {
        Ok((200, serde_json::Value::String(text))) => Ok(text),
        Ok((code, v)) => Err(format!("{code}: {v}")),
        Err(e) => Err(e.to_string()),
    }
}

/// The samples of metric `name` in an exposition: each sample's label text (between the
/// braces, empty without labels) and value.
pub fn samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => {
                    let end = r.rfind('}')?;
                    (r[..end].to_string(), r[end + 1..].trim())
                }
                None if rest.starts_with(' ') => (String::new(), rest.trim()),
                None => return None,
            };
            Some((labels, value.parse().ok()?))
        })
        .collect()
}

/// An unbounded event-time job held to `rate` bids a second: bids per auction in 1-second
/// tumbling windows into a blackhole sink (two vertices joined by a hash exchange).
pub fn bids_per_auction(rate: u64) -> String {
    format!(
        "CREATE TABLE bids (auction BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH ('connector' = 'datagen', 'rows-per-second' = '{rate}',
      'fields.ts.kind' = 'sequence', 'fields.ts.start' = '0', 'fields.ts.end' = '1000000000',
      'fields.auction.kind' = 'random', 'fields.auction.min' = '0', 'fields.auction.max' = '9');
CREATE TABLE out (auction BIGINT, n BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out SELECT auction, COUNT(*) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts),
  INTERVAL '1' SECOND)) GROUP BY window_start, window_end, auction;"
    )
}

/// The S3-compatible test server (moto on 127.0.0.1, installed by the project's script);
/// killed when dropped, and it exits by itself when this process is gone.
pub struct S3Server {
    child: std::process::Child,
    pub port: u16,
    pub bucket: String,
}

impl S3Server {
    pub fn start(bucket: &str) -> flink_rs::error::Result<Self> {
        let (child, ready) = start_test_server("s3-test-server", &[bucket])?;
        // Dropped (and so stopped) below when it named no port.
        let mut server = S3Server {
            child,
            port: 0,
            bucket: bucket.into(),
        };
        server.port = ready.first().and_then(|p| p.parse().ok()).ok_or_else(|| {
            flink_rs::error::Error::User(format!("the S3 test server said READY {ready:?}"))
        })?;
        Ok(server)
    }

    pub fn options(&self) -> std::collections::BTreeMap<String, String> {
        [
            ("s3.endpoint", format!("http://127.0.0.1:{}", self.port)),
            ("s3.access-key", "test".into()),
            ("s3.secret-key", "test".into()),
            ("s3.region", "us-east-1".into()),
            ("s3.path.style.access", "true".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
