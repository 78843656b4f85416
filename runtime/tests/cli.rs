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
    let r = flink_rs().arg("run").arg(&bad).output()?;
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("statement 1 (line 1, column 33): unknown connector 'nope'"),
        "{err}"
    );

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
