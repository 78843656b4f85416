//! The `flink-rs` command line: `run` and `explain` on SQL scripts, as a user calls them.

use std::process::Command;

fn flink_rs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flink-rs"))
}

const SCRIPT: &str = "
CREATE TABLE bids (auction BIGINT, price BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH ('connector' = 'datagen', 'number-of-rows' = '20000',
      'fields.ts.kind' = 'sequence', 'fields.ts.start' = '0',
      'fields.auction.kind' = 'random', 'fields.auction.min' = '0', 'fields.auction.max' = '9');
CREATE TABLE out (window_start TIMESTAMP(3), auction BIGINT, n BIGINT)
WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'csv');
INSERT INTO out
SELECT window_start, auction, COUNT(*)
FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND))
GROUP BY window_start, window_end, auction;
";

#[test]
fn run_explain_and_errors() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let script = dir.path().join("job.sql");
    std::fs::write(&script, SCRIPT.replace("{out}", &out.display().to_string()))?;

    let explain = flink_rs().arg("explain").arg(&script).output()?;
    assert!(explain.status.success());
    let plan = String::from_utf8_lossy(&explain.stdout);
    assert!(plan.contains("Window(Tumbling"), "{plan}");

    let cp = format!("state.checkpoints.dir={}", dir.path().join("cp").display());
    let run = |extra: &[&str]| {
        flink_rs()
            .args([
                "run",
                "--parallelism",
                "2",
                "--set",
                "execution.checkpointing.interval=50ms",
            ])
            .args(["--set", &cp, "--set", "pipeline.job-id=cli-test"])
            .args(extra)
            .arg(&script)
            .output()
    };
    let rows = || -> usize {
        std::fs::read_dir(&out)
            .map(|it| {
                it.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("part-"))
                    .map(|e| {
                        std::fs::read_to_string(e.path())
                            .unwrap_or_default()
                            .lines()
                            .count()
                    })
                    .sum()
            })
            .unwrap_or(0)
    };
    let first = run(&[])?;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(rows(), 20 * 10, "20 one-second windows × 10 auctions");
    // Resuming from the finished job's final checkpoint: nothing is produced twice.
    let again = run(&["--from-checkpoint", "latest"])?;
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(rows(), 20 * 10, "resuming a finished job adds no rows");

    let bad = dir.path().join("bad.sql");
    std::fs::write(
        &bad,
        "CREATE TABLE t (a BIGINT) WITH ('connector' = 'nope');",
    )?;
    // A user's error is a message and status 1, without a Rust backtrace even when the
    // user has RUST_BACKTRACE on.
    for missing in [bad.clone(), dir.path().join("missing.sql")] {
        let r = flink_rs()
            .arg("run")
            .arg(&missing)
            .env("RUST_BACKTRACE", "1")
            .output()?;
        assert_eq!(r.status.code(), Some(1));
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(err.starts_with("error: "), "{err}");
        assert!(!err.contains("backtrace"), "{err}");
        assert!(!err.contains("at ./"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let r = flink_rs().arg("run").arg(&bad).output()?;
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("statement 1 (line 1, column 33): unknown connector 'nope'"),
        "{err}"
    );
    let r = flink_rs()
        .arg("run")
        .arg(dir.path().join("missing.sql"))
        .output()?;
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("missing.sql"), "{err}");
    assert!(err.contains("No such file"), "{err}");

    let r = flink_rs()
        .arg("run")
        .arg(&script)
        .arg("--from-checkpoint")
        .arg(dir.path().join("no-such-checkpoint"))
        .output()?;
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("no _metadata"), "{err}");
    Ok(())
}

mod common;

/// `flink-rs run job.sql | head -n 3`: when the reader closes the pipe, an unbounded job
/// printing to stdout ends at once and quietly, as `yes | head` does, instead of failing its
/// printing task (and restarting it) for ever.
#[test]
fn a_closed_stdout_pipe_ends_an_unbounded_print_job_quietly() -> std::io::Result<()> {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("print.sql");
    std::fs::write(
        &script,
        "CREATE TABLE g (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '2000',
           'fields.id.kind' = 'sequence', 'fields.id.start' = '1');
         CREATE TABLE out (id BIGINT) WITH ('connector' = 'print');
         SET 'execution.checkpointing.interval' = '100ms';
         SET 'restart-strategy.type' = 'fixed-delay';
         INSERT INTO out SELECT id FROM g;",
    )?;
    let mut child = flink_rs()
        .arg("run")
        .arg(&script)
        .arg("--quiet")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .env("RUST_LOG", "warn")
        .spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    for _ in 0..3 {
        let line = lines.next().transpose()?;
        assert!(line.is_some_and(|l| l.starts_with("+I[")));
    }
    // What `head` does once it has its lines: close the pipe.
    drop(lines);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if std::time::Instant::now() > deadline {
            child.kill()?;
            panic!("the job kept running after its output pipe closed");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut err)?;
    }
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(13), "ended by SIGPIPE: {status:?}");
    assert!(!err.contains("WARN"), "{err}");
    assert!(!err.contains("ERROR"), "{err}");
    assert!(!err.contains("failed"), "{err}");
    Ok(())
}

/// Whether `dir/{job}/chk-*` holds a completed checkpoint newer than `after`.
fn newest_checkpoint(cp: &std::path::Path) -> Option<(String, u64)> {
    let mut best: Option<(String, u64)> = None;
    for job in std::fs::read_dir(cp).ok()?.flatten() {
        for chk in std::fs::read_dir(job.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = chk.file_name().to_string_lossy().to_string();
            let Some(n) = name
                .strip_prefix("chk-")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if chk.path().join("_metadata").exists() && best.as_ref().is_none_or(|b| n > b.1) {
                best = Some((job.file_name().to_string_lossy().to_string(), n));
            }
        }
    }
    best
}

/// README's way to resume a job run by hand: the same script run again with
/// `--from-checkpoint latest` finds its own checkpoints (a stable job id), so a job killed
/// twice and resumed writes exactly what a run without failures writes; `latest` with no
/// checkpoint is an error naming the directory and the job, never a fresh start.
#[test]
fn killed_runs_resumed_with_latest_are_exactly_once() -> std::io::Result<()> {
    const ROWS: u64 = 80_000;
    let dir = tempfile::tempdir()?;
    let (out, cp) = (dir.path().join("out"), dir.path().join("cp"));
    let script = dir.path().join("job.sql");
    std::fs::write(
        &script,
        common::job(&out.display().to_string(), ROWS, 8_000),
    )?;
    let reference_out = dir.path().join("reference");
    let reference = dir.path().join("reference.sql");
    std::fs::write(
        &reference,
        common::job(&reference_out.display().to_string(), ROWS, 0),
    )?;
    let r = flink_rs().arg("run").arg(&reference).output()?;
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));

    let cp_set = format!("state.checkpoints.dir={}", cp.display());
    let start = |resume: bool| -> std::io::Result<std::process::Child> {
        let mut c = flink_rs();
        c.args(["run", "--set", &cp_set])
            .env("FLINK_RS_EXIT_WITH_PARENT", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if resume {
            c.args(["--from-checkpoint", "latest"]);
        }
        c.arg(&script).spawn()
    };
    let mut jobs = Vec::new();
    for attempt in 0..3 {
        let mut child = start(attempt > 0)?;
        let before = newest_checkpoint(&cp).map(|c| c.1).unwrap_or(0);
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        // Killed once a checkpoint newer than the last run's is complete, mid-interval.
        while newest_checkpoint(&cp).is_none_or(|c| c.1 <= before + 1) {
            assert!(
                std::time::Instant::now() < until,
                "no new checkpoint in attempt {attempt}"
            );
            assert!(
                child.try_wait()?.is_none(),
                "the job ended before it was killed"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
        child.kill()?;
        let out = child.wait_with_output()?;
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let job = err
            .lines()
            .find_map(|l| l.strip_prefix("job ")?.strip_suffix(" started"))
            .map(str::to_string);
        jobs.push(job.unwrap_or_else(|| panic!("no job id printed: {err}")));
    }
    assert!(jobs.windows(2).all(|w| w[0] == w[1]), "{jobs:?}");
    let last = start(true)?.wait_with_output()?;
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    assert_eq!(common::committed(&out), common::committed(&reference_out));

    // `latest` where there is nothing: an error naming the directory and the job id.
    let empty = dir.path().join("empty-cp");
    let r = flink_rs()
        .args(["run", "--from-checkpoint", "latest", "--set"])
        .arg(format!("state.checkpoints.dir={}", empty.display()))
        .arg(&script)
        .output()?;
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("no completed checkpoint of job")
            && err.contains(&jobs[0])
            && err.contains(&empty.display().to_string()),
        "{err}"
    );
    Ok(())
}

/// `flink-rs run` with `metrics.reporter.prom.port` set answers Prometheus for its job,
/// under Flink's names: the source's records and watermark advance between two scrapes at
/// the rate the generator is held to.
#[test]
fn run_serves_prometheus_metrics_of_its_job() -> std::io::Result<()> {
    use std::io::BufRead;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("job.sql");
    std::fs::write(
        &script,
        format!(
            "SET 'pipeline.name' = 'metered';\n{}",
            common::bids_per_auction(2_000)
        ),
    )?;
    let mut child = flink_rs()
        .args(["run", "--set", "metrics.reporter.prom.port=0"])
        .arg(&script)
        .env("FLINK_RS_EXIT_WITH_PARENT", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let err = child.stderr.take().expect("stderr");
    let child = Kill(child);
    let mut seen = String::new();
    let mut addr = None;
    for line in std::io::BufReader::new(err).lines() {
        let line = line?;
        seen.push_str(&line);
        seen.push('\n');
        addr = flink_rs::metrics::reporter::announced_address(&line);
        if addr.is_some() {
            break;
        }
    }
    let addr = addr.unwrap_or_else(|| panic!("no reporter announced: {seen}"));
    let source = |text: &str, name: &str| -> f64 {
        common::samples(text, name)
            .into_iter()
            .filter(|(l, _)| l.contains("task_name=\"Source: bids"))
            .map(|(_, v)| v)
            .sum()
    };
    let scrape = || common::scrape(&addr).expect("scrape");
    common::wait_until(
        "records to flow",
        std::time::Duration::from_secs(30),
        || source(&scrape(), "flink_taskmanager_job_task_numRecordsOut") > 0.0,
    );
    let first = scrape();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let second = scrape();
    let out = "flink_taskmanager_job_task_numRecordsOut";
    let wm = "flink_taskmanager_job_task_operator_currentOutputWatermark";
    assert!(source(&second, out) > source(&first, out), "{second}");
    assert!(
        source(&second, wm) > source(&first, wm),
        "{first}\n{second}"
    );
    let rate = source(&second, "flink_taskmanager_job_task_numRecordsOutPerSecond");
    assert!((1_000.0..3_000.0).contains(&rate), "{rate}/s: {second}");
    let running = common::samples(&second, "flink_jobmanager_job_RUNNINGState");
    assert_eq!(running.len(), 1, "{second}");
    assert!(running[0].0.contains("job_name=\"metered\""), "{second}");
    assert_eq!(running[0].1, 1.0);
    assert!(!common::samples(&second, "flink_taskmanager_Status_Process_CPU_Time").is_empty());
    drop(child);
    Ok(())
}

/// An application-mode jobmanager whose configuration names another job than its
/// `--job-id` (a pod of an older Deployment template restarted after the operator changed
/// the ConfigMap) runs neither job: it exits with an error naming both.
#[test]
fn a_jobmanager_whose_configuration_is_for_another_job_does_not_start() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("job.sql");
    let out = dir.path().join("out");
    std::fs::write(&script, SCRIPT.replace("{out}", &out.display().to_string()))?;
    let cp = format!("state.checkpoints.dir={}", dir.path().join("cp").display());
    let mut jm = flink_rs()
        .args(["jobmanager", "--job"])
        .arg(&script)
        .args(["--job-id", "old-job", "--set", &cp])
        .args(["--set", "flink-rs.operator.job-id=new-job"])
        .args(["--set", "jobmanager.rpc.port=0", "--set", "rest.port=0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(s) = jm.try_wait()? {
            break s;
        }
        if std::time::Instant::now() > until {
            let _ = jm.kill();
            let _ = jm.wait();
            panic!("the jobmanager runs a job although its configuration is for another");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = jm.stderr.take() {
        use std::io::Read as _;
        e.read_to_string(&mut err)?;
    }
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("flink-rs.operator.job-id")
            && err.contains("new-job")
            && err.contains("old-job"),
        "{err}"
    );
    assert!(!out.exists(), "no job ran");
    Ok(())
}
