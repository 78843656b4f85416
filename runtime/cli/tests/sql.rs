//! SQL jobs against an independent oracle: the same query run by DataFusion in batch mode
//! over the same bounded input, at parallelism 1 and 4; and error messages with positions.

mod common;

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::catalog::MemTable;
use datafusion::prelude::SessionContext;
use flink_rs::connectors::{DataGen, FieldGen};
use flink_rs::graph::ExecutionConfig;
use flink_rs::prelude::*;
use flink_rs::source::{Source, SourcePoll};
use flink_rs::sql::compile;

const ROWS: u64 = 60_000;
const BASE_TS: i64 = 1_577_836_800_000;

fn input_schema() -> SchemaRef {
    schema(&[
        ("auction", DataType::Int64, true),
        ("price", DataType::Int64, true),
        ("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ])
}

/// The DDL of the input table; the same rows as [`input_batches`].
fn bids_ddl(delay_s: u32) -> String {
    format!(
        "CREATE TABLE bids (
           auction BIGINT, price BIGINT, ts TIMESTAMP(3),
           bucket AS auction % 7,
           WATERMARK FOR ts AS ts - INTERVAL '{delay_s}' SECOND
         ) WITH ('connector' = 'datagen', 'number-of-rows' = '{ROWS}',
           'fields.auction.kind' = 'random', 'fields.auction.min' = '1', 'fields.auction.max' = '200',
           'fields.price.kind' = 'random', 'fields.price.min' = '1', 'fields.price.max' = '1000',
           'fields.ts.kind' = 'sequence', 'fields.ts.start' = '{BASE_TS}');"
    )
}

/// The rows the datagen table produces, read directly from the connector.
fn input_batches() -> Result<Vec<RecordBatch>> {
    let g = DataGen::new(input_schema())?
        .rows(ROWS)
        .field("auction", FieldGen::Random { min: 1, max: 200 })?
        .field("price", FieldGen::Random { min: 1, max: 1000 })?
        .field(
            "ts",
            FieldGen::Sequence {
                start: BASE_TS,
                end: None,
            },
        )?;
    let mut r = g.create_reader(0, 1)?;
    let mut out = Vec::new();
    while let SourcePoll::Batch { batch, .. } = r.poll_next()? {
        out.push(batch);
    }
    Ok(out)
}

/// Result rows as the filesystem sink's csv writes them (Flink's text for timestamps,
/// `2020-01-01 00:00:49.367`).
fn csv_lines(batches: &[RecordBatch]) -> Vec<String> {
    let as_files: Vec<RecordBatch> = batches
        .iter()
        .map(|b| {
            flink_rs::connectors::with_flink_temporal_text(b, Default::default())
                .expect("temporal columns as text")
        })
        .collect();
    printed_lines(&as_files)
}

/// Result rows as the print sink shows them (timestamps `2020-01-01T00:00:49.367`).
fn printed_lines(batches: &[RecordBatch]) -> Vec<String> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::csv::WriterBuilder::new()
            .with_header(false)
            .build(&mut buf);
        for b in batches {
            w.write(b).expect("csv");
        }
    }
    let mut lines: Vec<String> = String::from_utf8_lossy(&buf)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// Runs `script` (with `{out}` the output directory) at parallelism `p`; returns the sorted
/// lines of the committed output.
/// The settings of the disk state backend's runs: a 64 KiB budget, so values go to disk and
/// come back all through the run.
const DISK: &[(&str, &str)] = &[
    ("state.backend.type", "disk"),
    ("taskmanager.memory.managed.size", "64kb"),
];

fn run_streaming(script: &str, p: usize) -> Result<Vec<String>> {
    run_streaming_with(script, p, &[])
}

fn run_streaming_with(script: &str, p: usize, settings: &[(&str, &str)]) -> Result<Vec<String>> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "", e))?;
    let out = dir.path().join("out");
    let script = script.replace("{out}", &out.display().to_string());
    let mut settings: Vec<(String, String)> = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    settings.push(("parallelism.default".into(), p.to_string()));
    let job = compile(&script, ExecutionConfig::default(), &settings)
        .map_err(|e| Error::User(e.to_string()))?;
    assert_eq!(job.env.execute()?, JobOutcome::Finished);
    let mut lines = Vec::new();
    for e in std::fs::read_dir(&out)
        .map_err(|e| Error::io("ls", &out, e))?
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with("part-") {
            let t = std::fs::read_to_string(e.path())
                .map_err(|e| Error::io("read", e.to_string(), e))?;
            lines.extend(t.lines().map(str::to_string));
        }
    }
    lines.sort();
    Ok(lines)
}

/// Runs a batch query over the input in DataFusion, its columns cast to `types`.
fn run_batch(sql: &str) -> Result<Vec<String>> {
    oracle("bids", input_batches()?, &[], sql)
}

/// `run_batch` with the rows as the print sink shows them.
fn run_batch_printed(sql: &str) -> Result<Vec<String>> {
    oracle_as(printed_lines, "bids", input_batches()?, &[], sql)
}

/// DataFusion in batch mode: `table` holds `batches`; `setup` statements (views) run first;
/// returns the sorted CSV lines of `sql`'s result.
fn oracle(
    table: &str,
    batches: Vec<RecordBatch>,
    setup: &[&str],
    sql: &str,
) -> Result<Vec<String>> {
    oracle_as(csv_lines, table, batches, setup, sql)
}

/// `oracle` with the result rows turned into text by `lines`.
fn oracle_as(
    lines: fn(&[RecordBatch]) -> Vec<String>,
    table: &str,
    batches: Vec<RecordBatch>,
    setup: &[&str],
    sql: &str,
) -> Result<Vec<String>> {
    let ctx = SessionContext::new_with_config(
        datafusion::prelude::SessionConfig::new()
            .set_bool("datafusion.sql_parser.enable_ident_normalization", false)
            // `0.908 * price` is exact decimal arithmetic in Flink (and flink-rs).
            .set_bool("datafusion.sql_parser.parse_float_as_decimal", true),
    );
    flink_rs::sql::register_flink_functions(&ctx);
    let schema = batches
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(input_schema);
    let t = MemTable::try_new(schema, vec![batches]).map_err(|e| Error::User(e.to_string()))?;
    ctx.register_table(table, Arc::new(t))
        .map_err(|e| Error::User(e.to_string()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("tokio", "", e))?;
    let result = rt
        .block_on(async {
            for st in setup {
                ctx.sql(st).await?;
            }
            ctx.sql(sql).await?.collect().await
        })
        .map_err(|e| Error::User(format!("oracle: {e}")))?;
    Ok(lines(&result))
}

fn check(name: &str, sink_cols: &str, query: &str, oracle: &str) -> Result<()> {
    check_with(name, "", sink_cols, query, oracle)
}

/// `check` with `setup` statements (views) after the input's DDL.
fn check_with(name: &str, setup: &str, sink_cols: &str, query: &str, oracle: &str) -> Result<()> {
    let script = format!(
        "{}\n{setup}\nCREATE TABLE out ({sink_cols}) WITH ('connector' = 'filesystem', 'path' = '{{out}}', 'format' = 'csv');\nINSERT INTO out {query};",
        bids_ddl(0)
    );
    let expected = run_batch(oracle)?;
    assert!(
        expected.len() > 10,
        "{name}: the oracle returned only {} rows",
        expected.len()
    );
    // The heap backend at parallelism 1 and 4, the disk backend at 2.
    for (p, settings) in [(1, &[][..]), (4, &[][..]), (2, DISK)] {
        let got = run_streaming_with(&script, p, settings)?;
        let backend = if settings.is_empty() { "heap" } else { "disk" };
        assert_eq!(
            got.len(),
            expected.len(),
            "{name} at parallelism {p} on {backend}: row count"
        );
        assert!(
            got == expected,
            "{name} at parallelism {p} on {backend}: rows differ, e.g. {:?} vs {:?}",
            got.iter().zip(&expected).find(|(a, b)| a != b),
            ()
        );
    }
    Ok(())
}

const WIN_COLS: &str = "window_start TIMESTAMP(3), window_end TIMESTAMP(3), bucket BIGINT, cnt BIGINT, total BIGINT, lo BIGINT, hi BIGINT, mean DOUBLE";

fn win(ws: &str, size_ms: i64) -> String {
    format!(
        "to_timestamp_millis({ws}) AS window_start, to_timestamp_millis({ws} + {size_ms}) AS window_end"
    )
}

#[test]
fn projection_and_filter_match_the_batch_oracle() -> Result<()> {
    check(
        "calc",
        "auction BIGINT, doubled BIGINT, bucket BIGINT, ts TIMESTAMP(3)",
        "SELECT auction, price * 2, bucket, ts FROM bids WHERE price > 250 AND auction % 3 = 0",
        "SELECT auction, price * 2, auction % 7, ts FROM bids WHERE price > 250 AND auction % 3 = 0",
    )
}

#[test]
fn tumbling_windows_match_the_batch_oracle() -> Result<()> {
    check(
        "tumble",
        WIN_COLS,
        "SELECT window_start, window_end, bucket, COUNT(*), SUM(price), MIN(price), MAX(price), ROUND(AVG(CAST(price AS DOUBLE)), 4)
         FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECOND))
         GROUP BY window_start, window_end, bucket",
        &format!(
            "SELECT {}, auction % 7, COUNT(*), SUM(price), MIN(price), MAX(price), ROUND(AVG(CAST(price AS DOUBLE)), 4)
             FROM (SELECT *, CAST(ts AS BIGINT) - CAST(ts AS BIGINT) % 5000 AS ws FROM bids)
             GROUP BY ws, auction % 7",
            win("ws", 5000)
        ),
    )
}

/// Cascaded windows, as in Flink's docs: a window TVF over the rows of a window aggregate,
/// its `window_time` (renamed) as the event time. Ten-second windows summed from two-second
/// ones equal ten-second windows of the input.
#[test]
fn cascaded_windows_on_window_time_match_the_batch_oracle() -> Result<()> {
    check_with(
        "cascade",
        "CREATE VIEW w2 AS SELECT window_start AS s2, window_time AS rowtime, bucket,
           COUNT(*) AS c, SUM(price) AS total, MAX(price) AS hi
         FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '2' SECOND))
         GROUP BY window_start, window_end, window_time, bucket;",
        "window_start TIMESTAMP(3), window_end TIMESTAMP(3), bucket BIGINT, cnt BIGINT, total BIGINT, hi BIGINT",
        "SELECT window_start, window_end, bucket, SUM(c), SUM(total), MAX(hi)
         FROM TABLE(TUMBLE(TABLE w2, DESCRIPTOR(rowtime), INTERVAL '10' SECOND))
         GROUP BY window_start, window_end, bucket",
        &format!(
            "SELECT {}, auction % 7, COUNT(*), SUM(price), MAX(price)
             FROM (SELECT *, CAST(ts AS BIGINT) - CAST(ts AS BIGINT) % 10000 AS ws FROM bids)
             GROUP BY ws, auction % 7",
            win("ws", 10000)
        ),
    )
}

/// OVER aggregates in event-time order, as Flink runs them: a ROWS frame, a RANGE frame of
/// an interval and the default (unbounded) frame, each equal to DataFusion's batch result,
/// at parallelism 1 and 4 and on the disk backend.
#[test]
fn over_aggregates_match_the_batch_oracle() -> Result<()> {
    let cols =
        "auction BIGINT, price BIGINT, ts TIMESTAMP(3), s BIGINT, c BIGINT, lo BIGINT, hi BIGINT";
    for (name, frame) in [
        ("rows", "ROWS BETWEEN 2 PRECEDING AND CURRENT ROW"),
        (
            "range",
            "RANGE BETWEEN INTERVAL '2' SECOND PRECEDING AND CURRENT ROW",
        ),
        ("unbounded", ""),
    ] {
        let q = format!(
            "SELECT auction, price, ts, SUM(price) OVER w, COUNT(*) OVER w, MIN(price) OVER w,
               MAX(price) OVER w
             FROM bids WINDOW w AS (PARTITION BY auction ORDER BY ts {frame})"
        );
        check(name, cols, &q, &q)?;
    }
    Ok(())
}

/// `IN` and `EXISTS` subqueries (semi joins) over unbounded-style streaming execution, and
/// `NOT EXISTS` (an anti join) over bounded input, equal DataFusion's result at parallelism
/// 1 and 4 and on the disk backend.
#[test]
fn in_and_exists_subqueries_match_the_batch_oracle() -> Result<()> {
    for (name, q) in [
        (
            "in",
            "SELECT auction, price, ts FROM bids WHERE auction IN (SELECT auction FROM bids WHERE price > 995)",
        ),
        (
            "exists",
            "SELECT auction, price, ts FROM bids b1 WHERE EXISTS
               (SELECT * FROM bids b2 WHERE b2.auction = b1.auction AND b2.price > 998)",
        ),
        (
            "not exists",
            "SELECT auction, price, ts FROM bids b1 WHERE NOT EXISTS
               (SELECT * FROM bids b2 WHERE b2.auction = b1.auction AND b2.price > 990)",
        ),
    ] {
        check(name, "auction BIGINT, price BIGINT, ts TIMESTAMP(3)", q, q)?;
    }
    Ok(())
}

#[test]
fn hopping_windows_match_the_batch_oracle() -> Result<()> {
    let parts: Vec<String> = (0..3)
        .map(|k| {
            format!(
                "SELECT *, CAST(ts AS BIGINT) - CAST(ts AS BIGINT) % 2000 - {} AS ws FROM bids",
                k * 2000
            )
        })
        .collect();
    check(
        "hop",
        WIN_COLS,
        "SELECT window_start, window_end, bucket, COUNT(*), SUM(price), MIN(price), MAX(price), ROUND(AVG(CAST(price AS DOUBLE)), 4)
         FROM TABLE(HOP(TABLE bids, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '6' SECOND))
         WHERE price < 900
         GROUP BY window_start, window_end, bucket",
        &format!(
            "SELECT {}, auction % 7, COUNT(*), SUM(price), MIN(price), MAX(price), ROUND(AVG(CAST(price AS DOUBLE)), 4)
             FROM ({}) WHERE price < 900 GROUP BY ws, auction % 7",
            win("ws", 6000),
            parts.join(" UNION ALL ")
        ),
    )
}

#[test]
fn cumulating_windows_match_the_batch_oracle() -> Result<()> {
    let parts: Vec<String> = (1..=3)
        .map(|j| format!(
            "SELECT *, CAST(ts AS BIGINT) - CAST(ts AS BIGINT) % 15000 AS ws, CAST(ts AS BIGINT) - CAST(ts AS BIGINT) % 15000 + {} AS we FROM bids WHERE CAST(ts AS BIGINT) - CAST(ts AS BIGINT) % 15000 + {} > CAST(ts AS BIGINT)",
            j * 5000, j * 5000))
        .collect();
    check(
        "cumulate",
        WIN_COLS,
        "SELECT window_start, window_end, bucket, COUNT(*), SUM(price), MIN(price), MAX(price), ROUND(AVG(CAST(price AS DOUBLE)), 4)
         FROM TABLE(CUMULATE(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '15' SECOND))
         GROUP BY window_start, window_end, bucket",
        &format!(
            "SELECT to_timestamp_millis(ws), to_timestamp_millis(we), auction % 7, COUNT(*), SUM(price), MIN(price), MAX(price), ROUND(AVG(CAST(price AS DOUBLE)), 4)
             FROM ({}) GROUP BY ws, we, auction % 7",
            parts.join(" UNION ALL ")
        ),
    )
}

#[test]
fn group_by_on_a_bounded_input_matches_the_batch_oracle() -> Result<()> {
    check(
        "group by",
        "auction BIGINT, cnt BIGINT, total BIGINT",
        "SELECT auction, COUNT(*), SUM(price) FROM bids GROUP BY auction",
        "SELECT auction, COUNT(*), SUM(price) FROM bids GROUP BY auction",
    )
}

/// GROUPING SETS, ROLLUP and CUBE, in window aggregates (every set groups by the window, as
/// Flink requires) and in a plain GROUP BY; `GROUPING(…)` tells the sets apart; a set given
/// twice gives its rows twice.
#[test]
fn grouping_sets_rollup_and_cube_match_the_batch_oracle() -> Result<()> {
    check(
        "rollup in tumbling windows",
        "window_start TIMESTAMP(3), window_end TIMESTAMP(3), bucket BIGINT, parity BIGINT, cnt BIGINT, total BIGINT, g INT",
        "SELECT window_start, window_end, bucket, auction % 2, COUNT(*), SUM(price), GROUPING(bucket)
         FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECOND))
         GROUP BY window_start, window_end, ROLLUP(bucket, auction % 2)",
        &format!(
            "SELECT {}, auction % 7, auction % 2, COUNT(*), SUM(price), GROUPING(auction % 7)
             FROM (SELECT *, CAST(ts AS BIGINT) - CAST(ts AS BIGINT) % 5000 AS ws FROM bids)
             GROUP BY ws, ROLLUP(auction % 7, auction % 2)",
            win("ws", 5000)
        ),
    )?;
    check(
        "cube",
        "bucket BIGINT, parity BIGINT, cnt BIGINT, total BIGINT",
        "SELECT bucket, auction % 2, COUNT(*), SUM(price) FROM bids GROUP BY CUBE(bucket, auction % 2)",
        "SELECT auction % 7, auction % 2, COUNT(*), SUM(price) FROM bids GROUP BY CUBE(auction % 7, auction % 2)",
    )?;
    check(
        "grouping sets with a repeated set",
        "bucket BIGINT, cnt BIGINT, g INT",
        "SELECT bucket, COUNT(*), GROUPING(bucket) FROM bids GROUP BY GROUPING SETS ((bucket), (bucket), ())",
        "SELECT auction % 7, COUNT(*), GROUPING(auction % 7) FROM bids GROUP BY GROUPING SETS ((auction % 7), (auction % 7), ())",
    )
}

/// `'path' = 's3://…'`: the filesystem sink writes into object storage (the S3 test server,
/// opened with the job's `s3.*` settings, as checkpoints are), exactly once, at parallelism
/// 3; the rows equal the batch oracle's and no in-progress object is left; a second job
/// reads them back from S3.
#[test]
fn the_filesystem_connector_writes_and_reads_s3() -> Result<()> {
    let s3 = common::S3Server::start("sql-results")?;
    let mut settings: Vec<(String, String)> = s3.options().into_iter().collect();
    settings.push(("execution.checkpointing.interval".into(), "100 ms".into()));
    settings.push(("parallelism.default".into(), "3".into()));
    let url = format!("s3://{}/daily/bids", s3.bucket);
    let script = format!(
        "{}\nCREATE TABLE out (auction BIGINT, price BIGINT) WITH ('connector' = 'filesystem', 'path' = '{url}/', 'format' = 'csv');\nINSERT INTO out SELECT auction, price FROM bids WHERE price > 500;",
        bids_ddl(0)
    );
    let job = compile(&script, ExecutionConfig::default(), &settings)
        .map_err(|e| Error::User(e.to_string()))?;
    assert_eq!(job.env.execute()?, JobOutcome::Finished);
    let store = flink_rs::checkpoint::CheckpointStorage::open(&url, &s3.options())?;
    let names = store.list_files("")?;
    let mut got = Vec::new();
    for n in names.iter().filter(|n| n.starts_with("part-")) {
        let bytes = store.get(n)?.unwrap_or_default();
        got.extend(String::from_utf8_lossy(&bytes).lines().map(str::to_string));
    }
    got.sort();
    let expected = run_batch("SELECT auction, price FROM bids WHERE price > 500")?;
    assert!(expected.len() > 100, "{}", expected.len());
    assert!(
        got == expected,
        "{} rows in S3 against {}",
        got.len(),
        expected.len()
    );
    assert!(
        !names.iter().any(|n| n.ends_with(".inprogress")),
        "{names:?}"
    );
    // Read back from S3 by a second job, into a local directory.
    let read = format!(
        "CREATE TABLE src (auction BIGINT, price BIGINT) WITH ('connector' = 'filesystem', 'path' = '{url}', 'format' = 'csv');\nCREATE TABLE out (auction BIGINT, price BIGINT) WITH ('connector' = 'filesystem', 'path' = '{{out}}', 'format' = 'csv');\nINSERT INTO out SELECT auction, price FROM src;"
    );
    let settings: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let back = run_streaming_with(&read, 2, &settings)?;
    assert!(
        back == expected,
        "{} rows read back against {}",
        back.len(),
        expected.len()
    );
    Ok(())
}

/// `PARTITIONED BY`: one directory per value (`bucket=2/`), the partition column left out
/// of the files, each partition holding the oracle's rows for it; a small
/// `sink.rolling-policy.file-size` rolls several parts per partition between checkpoints.
#[test]
fn partitioned_filesystem_sink_writes_one_directory_per_value() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "", e))?;
    let out = dir.path().join("out");
    let script = format!(
        "SET 'execution.checkpointing.interval' = '200 ms';\n{}\nCREATE TABLE out (auction BIGINT, price BIGINT, bucket BIGINT) PARTITIONED BY (bucket) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv', 'sink.rolling-policy.file-size' = '4kb');\nINSERT INTO out SELECT auction, price, auction % 3 FROM bids;",
        bids_ddl(0),
        out.display()
    );
    let settings = [("parallelism.default".to_string(), "2".to_string())];
    let job = compile(&script, ExecutionConfig::default(), &settings)
        .map_err(|e| Error::User(e.to_string()))?;
    assert_eq!(job.env.execute()?, JobOutcome::Finished);
    let mut partitions: Vec<String> = std::fs::read_dir(&out)
        .map_err(|e| Error::io("ls", &out, e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    partitions.sort();
    assert_eq!(partitions, ["bucket=0", "bucket=1", "bucket=2"]);
    for b in 0..3 {
        let pdir = out.join(format!("bucket={b}"));
        let mut lines = Vec::new();
        let mut parts = 0;
        for e in std::fs::read_dir(&pdir)
            .map_err(|e| Error::io("ls", &pdir, e))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                name.starts_with("part-"),
                "left in {}: {name}",
                pdir.display()
            );
            parts += 1;
            let t = std::fs::read_to_string(e.path())
                .map_err(|e| Error::io("read", e.to_string(), e))?;
            lines.extend(t.lines().map(str::to_string));
        }
        lines.sort();
        let expected = run_batch(&format!(
            "SELECT auction, price FROM bids WHERE auction % 3 = {b}"
        ))?;
        assert!(
            lines == expected,
            "bucket={b}: {} rows against {}",
            lines.len(),
            expected.len()
        );
        assert!(
            parts > 2,
            "bucket={b}: {parts} parts; the size policy rolls more"
        );
    }
    Ok(())
}

const T: &str = "CREATE TABLE bids (auction BIGINT, price BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH ('connector' = 'datagen', 'number-of-rows' = '10');\nCREATE TABLE out (a BIGINT, b BIGINT) WITH ('connector' = 'blackhole');\n";

/// (script, statement, line, column, words the message must contain)
fn error_cases() -> Vec<(String, usize, usize, usize, &'static str)> {
    let t = |q: &str| format!("{T}{q}");
    vec![
        (t("INSERT INTO out SELECT auction, nope FROM bids;"), 3, 3, 33, "No field named nope"),
        (t("INSERT INTO out SELECT auction, price FROM missing;"), 3, 3, 44, "missing' not found"),
        (t("INSERT INTO out SELECT auction, price FROM bids WHERE;"), 3, 3, 54, "Expected: an expression"),
        (t("INSERT INTO out SELECT auction, price FROM bids ORDER BY price;"), 3, 3, 49, "ORDER BY is not supported"),
        (t("INSERT INTO out SELECT a.auction, b.price FROM bids a LEFT JOIN bids b ON a.auction = b.auction;"), 3, 3, 55, "a LEFT join needs a time bound"),
        (t("INSERT INTO out SELECT a.auction, b.price FROM bids a LEFT JOIN bids b ON a.auction = b.auction AND a.ts BETWEEN b.ts AND b.ts + INTERVAL '1' SECOND AND a.price + 1 > b.price;"), 3, 3, 55, "ON condition of a LEFT join"),
        (t("INSERT INTO out SELECT auction, price FROM bids WHERE auction NOT IN (SELECT price FROM bids);"), 3, 3, 67, "NOT IN (SELECT …) is not supported"),
        (t("INSERT INTO out SELECT auction, price FROM bids a WHERE NOT EXISTS (SELECT * FROM bids b WHERE b.auction = a.auction);").replace("'number-of-rows' = '10'", "'rows-per-second' = '10'"), 3, 3, 61, "NOT EXISTS over unbounded input is an updating result"),
        (t("INSERT INTO out SELECT auction, SUM(DISTINCT price) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY window_start, window_end, auction;"), 3, 3, 37, "SUM(DISTINCT"),
        (t("INSERT INTO out SELECT auction, price FROM TABLE(SESSION(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND));"), 3, 3, 44, "SESSION windows exist only aggregated"),
        (t("INSERT INTO out SELECT auction, COUNT(*) FROM TABLE(SESSION(TABLE bids PARTITION BY price, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY window_start, window_end, auction;"), 3, 3, 47, "exactly the PARTITION BY columns (price), found (auction)"),
        (t("INSERT INTO out SELECT auction, COUNT(*) FROM TABLE(TUMBLE(TABLE bids PARTITION BY auction, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY window_start, window_end, auction;"), 3, 3, 71, "TUMBLE takes no PARTITION BY"),
        (t("INSERT INTO out SELECT auction, price FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(price), INTERVAL '1' SECOND));"), 3, 3, 44, "must name the event-time column"),
        (t("INSERT INTO out SELECT auction, price FROM TABLE(HOP(TABLE bids, DESCRIPTOR(ts), INTERVAL '3' SECOND, INTERVAL '10' SECOND));"), 3, 3, 50, "multiple of the slide"),
        (t("INSERT INTO out SELECT auction, price FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), 10));"), 3, 3, 84, "expected an interval"),
        (t("SELECT * FROM bids;"), 3, 3, 1, "INSERT INTO"),
        (t("DROP TABLE bids;"), 3, 3, 1, "unsupported statement `DROP TABLE bids`"),
        (T.to_string(), 2, 2, 1, "no INSERT INTO"),
        ("CREATE TABLE t (a BIGINT, b MAP<INT,INT>) WITH ('connector' = 'datagen');".into(), 1, 1, 29, "supported types"),
        ("CREATE TABLE t (a BIGINT) WITH ('connector' = 'kafka');".into(), 1, 1, 33, "needs 'properties.bootstrap.servers'"),
        ("CREATE TABLE t (a BIGINT) WITH ('connector' = 'kafka', 'topic' = 'x', 'properties.bootstrap.servers' = 'b:9092', 'format' = 'json', 'scan.startup.mod' = 'earliest-offset');".into(), 1, 1, 133, "unsupported option 'scan.startup.mod'"),
        ("CREATE TABLE t (a BIGINT, o BIGINT METADATA FROM 'offset') WITH ('connector' = 'datagen');".into(), 1, 1, 66, "the datagen connector has no metadata"),
        ("CREATE TABLE t (a BIGINT, o BIGINT METADATA FROM 'ofset' VIRTUAL) WITH ('connector' = 'kafka', 'topic' = 'x', 'properties.bootstrap.servers' = 'b:9092', 'format' = 'json');".into(), 1, 1, 73, "no metadata key 'ofset'"),
        ("CREATE TABLE t (a BIGINT) WITH ('connector' = 'wombat');".into(), 1, 1, 33, "unknown connector 'wombat'"),
        ("CREATE TABLE t (a BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = 'fast');".into(), 1, 1, 58, "must be a number"),
        ("CREATE TABLE t (a BIGINT, WATERMARK FOR ts AS ts) WITH ('connector' = 'datagen');".into(), 1, 1, 27, "watermark column `ts` is not a column"),
        ("CREATE TABLE t (a BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' FORTNIGHT) WITH ('connector' = 'datagen');".into(), 1, 1, 82, "unknown interval unit"),
        ("CREATE TABLE t (a BIGINT, ts AS a + 1, WATERMARK FOR ts AS ts) WITH ('connector' = 'datagen');".into(), 1, 1, 33, "the watermark column `ts` must be a TIMESTAMP(3) or TIMESTAMP_LTZ(3), but `a + 1` is Int64"),
        ("CREATE TABLE t (a BIGINT, d AS a +) WITH ('connector' = 'datagen');".into(), 1, 1, 32, "computed column `d`"),
        ("CREATE TABLE t (a BIGINT) WITH (connector = 'datagen');".into(), 1, 1, 33, "quoted option name"),
        ("CREATE TABLE t (a BIGINT) WITH ('connector' = 'datagen');\nCREATE TABLE t (b BIGINT) WITH ('connector' = 'datagen');".into(), 2, 2, 14, "already declared"),
        ("CREATE TABLE t (a BIGINT) WITH ('connector' = 'filesystem', 'path' = 'hdfs://nn/out', 'format' = 'csv');".into(), 1, 1, 61, "hdfs:// paths are not supported"),
        ("CREATE TABLE t (a BIGINT) WITH ('connector' = 'filesystem', 'path' = 's3:///out', 'format' = 'csv');".into(), 1, 1, 61, "names no bucket"),
        ("CREATE TABLE t (a BIGINT) WITH ('connector' = 'filesystem', 'path' = 'file://host/out', 'format' = 'csv');".into(), 1, 1, 61, "names a host"),
        ("CREATE TABLE t (a BIGINT) WITH ('connector' = 'filesystem', 'path' = '/tmp/x', 'format' = 'csv', 'csv.quote-character' = '''', 'csv.disable-quote-character' = 'true');".into(), 1, 1, 98, "cannot be set together"),
        ("CREATE TABLE t (a BIGINT) WITH ('connector' = 'filesystem', 'path' = '/tmp/x', 'format' = 'csv', 'csv.field-delimiter' = ';;');".into(), 1, 1, 98, "must be one ASCII character, not ';;'"),
        ("CREATE TABLE t (a BIGINT) WITH ('connector' = 'filesystem', 'path' = '/tmp/x', 'format' = 'json', 'json.timestamp-format.standard' = 'RFC');".into(), 1, 1, 99, "must be 'SQL' or 'ISO-8601', not 'RFC'"),
        ("CREATE TABLE t (a BIGINT) WITH ('connector' = 'filesystem', 'path' = '/tmp/x', 'format' = 'json', 'csv.field-delimiter' = ';');".into(), 1, 1, 99, "unknown option 'csv.field-delimiter' for connector 'filesystem'; known: connector, path, format, sink.parallelism, sink.rolling-policy.file-size, sink.rolling-policy.rollover-interval, partition.default-name, json.timestamp-format.standard"),
        ("CREATE TABLE t (a DECIMAL(10, 2)) WITH ('connector' = 'datagen');".into(), 1, 1, 41, "datagen generates BOOLEAN"),
        ("CREATE TABLE t (a BIGINT) WITH ('connector' = 'datagen', 'fields.a.kind' = 'sequence', 'fields.a.min' = '1');".into(), 1, 1, 88, "unsupported option 'fields.a.min' for datagen: a sequence Int64 column takes 'fields.a.kind', 'fields.a.start', 'fields.a.end'"),
        ("CREATE TABLE t (a BIGINT) WITH ('connector' = 'datagen', 'fields.a.kind' = 'sequence', 'fields.a.start' = '5', 'fields.a.end' = '1');".into(), 1, 1, 112, "end 1 is less than start 5"),
        ("CREATE TABLE t (a BIGINT NOT NULL) WITH ('connector' = 'datagen', 'fields.a.null-rate' = '0.1');".into(), 1, 1, 67, "column `a` is NOT NULL"),
        ("CREATE TABLE t (s STRING) WITH ('connector' = 'datagen', 'fields.s.max' = '3');".into(), 1, 1, 58, "takes 'fields.s.kind', 'fields.s.length', 'fields.s.null-rate'"),
        ("CREATE TABLE t (ts TIMESTAMP(3)) WITH ('connector' = 'datagen', 'fields.ts.max-past' = 'a while');".into(), 1, 1, 65, "expected a duration"),
        ("CREATE TABLE t (a BIGINT) WITH ('connector' = 'datagen', 'fields.b.kind' = 'random');".into(), 1, 1, 58, "names column `b`"),
        ("CREATE TABLE t (a BIGINT) WITH ('connector' = 'print', 'path' = '/tmp');".into(), 1, 1, 56, "unknown option 'path'"),
        (t("INSERT INTO bids SELECT auction, price, ts FROM bids;"), 3, 3, 13, "source connector and cannot be written"),
        (t("SET 'execution.checkpointing.interval' = 'often';"), 3, 3, 1, "expected a duration"),
        (t("INSERT INTO out SELECT auction, COUNT(*) FROM bids GROUP BY auction;").replace("'number-of-rows' = '10'", "'rows-per-second' = '10'").replace("'connector' = 'blackhole'", "'connector' = 'filesystem', 'path' = '/tmp/x', 'format' = 'csv'"), 3, 3, 52, "accepts inserts only"),
        (t("INSERT INTO out SELECT auction, UPPER(price, 1) FROM bids;"), 3, 3, 33, "Function 'upper'"),
        (t("INSERT INTO out SELECT cnt, COUNT(*) FROM (SELECT auction, COUNT(*) AS cnt FROM bids GROUP BY auction) GROUP BY cnt;").replace("'number-of-rows' = '10'", "'rows-per-second' = '10'"), 3, 3, 86, "aggregate over an updating result"),
        (t("INSERT INTO out SELECT auction FROM bids;"), 3, 3, 1, "different number of columns"),
        (t("INSERT INTO out SELECT auction, rn FROM (SELECT auction, RANK() OVER (PARTITION BY auction ORDER BY price) AS rn FROM bids) WHERE rn <= 1;").replace("'number-of-rows' = '10'", "'rows-per-second' = '10'"), 3, 3, 65, "updating Top-N: it needs ROW_NUMBER()"),
        (t("INSERT INTO out SELECT auction, LAG(price) OVER (PARTITION BY auction ORDER BY ts) FROM bids;"), 3, 3, 44, "LAG() OVER is not supported"),
        (t("INSERT INTO out SELECT auction, SUM(price) OVER (PARTITION BY auction ORDER BY price) FROM bids;"), 3, 3, 44, "must ORDER BY the input's event-time attribute (a column with a WATERMARK), ascending"),
        (t("INSERT INTO out SELECT auction, SUM(price) OVER (PARTITION BY auction ORDER BY ts ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING) FROM bids;"), 3, 3, 44, "must end at CURRENT ROW"),
        (t("INSERT INTO out SELECT auction, ROW_NUMBER() OVER (PARTITION BY auction) FROM bids;"), 3, 3, 46, "needs an ORDER BY"),
        (t("INSERT INTO out SELECT auction, price\nFROM bids\nWHERE pricee > 1;"), 3, 5, 7, "No field named pricee"),
        (t("INSERT INTO out SELECT auction, COUNT(*) FROM bids WHERE DATE_FORMAT(ts, 'yyyy-ww') > '' GROUP BY auction;"), 3, 3, 1, "date pattern letter `ww`"),
    ]
}

/// Files move between Flink and flink-rs: lines as Flink's csv format writes them (here with
/// `csv.field-delimiter` and `csv.null-literal`) are read, and written again by the json
/// format as Flink's json writes them: timestamps `2024-01-01 00:00:05.98` (no fixed-width
/// fraction, no `T`), NULL fields as `null`, decimals as numbers with their scale.
#[test]
fn flinks_csv_text_is_read_and_json_written_as_flink_writes_it() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "", e))?;
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).map_err(|e| Error::io("mkdir", &input, e))?;
    std::fs::write(
        input.join("part-0.csv"),
        "1;2024-01-01 00:00:05.98;12.30;a b\n2;2024-01-01 00:00:06;N/A;N/A\n",
    )
    .map_err(|e| Error::io("write", &input, e))?;
    let script = format!(
        "CREATE TABLE src (id INT, ts TIMESTAMP(3), amount DECIMAL(10, 2), s STRING)
           WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv',
                 'csv.field-delimiter' = ';', 'csv.null-literal' = 'N/A');
         CREATE TABLE j (id INT, ts TIMESTAMP(3), amount DECIMAL(10, 2), s STRING)
           WITH ('connector' = 'filesystem', 'path' = '{{out}}', 'format' = 'json');
         INSERT INTO j SELECT * FROM src;",
        input.display()
    );
    assert_eq!(
        run_streaming(&script, 1)?,
        vec![
            r#"{"id":1,"ts":"2024-01-01 00:00:05.98","amount":12.30,"s":"a b"}"#,
            r#"{"id":2,"ts":"2024-01-01 00:00:06","amount":null,"s":null}"#,
        ]
    );
    Ok(())
}

/// The most common Flink DDL: event time computed from an epoch column
/// (`ts AS TO_TIMESTAMP_LTZ(epoch_ms, 3), WATERMARK FOR ts AS ts - INTERVAL …`). Over bounded
/// input the windows are the exact counts at parallelism 1 and 2; over unbounded input the
/// computed column's watermark closes windows while the source still runs.
#[test]
fn a_watermark_on_a_computed_column_drives_event_time_windows() -> Result<()> {
    let ddl = |rows: &str, end: u64| {
        format!(
            "CREATE TABLE src (id BIGINT, epoch_ms BIGINT,
               ts AS TO_TIMESTAMP_LTZ(epoch_ms, 3),
               WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
             WITH ('connector' = 'datagen', {rows},
               'fields.epoch_ms.kind' = 'sequence',
               'fields.epoch_ms.start' = '1704067200000', 'fields.epoch_ms.end' = '{end}');
             CREATE TABLE out (ws TIMESTAMP(3), n BIGINT)
               WITH ('connector' = 'filesystem', 'path' = '{{out}}', 'format' = 'csv');
             INSERT INTO out SELECT window_start, COUNT(*)
               FROM TABLE(TUMBLE(TABLE src, DESCRIPTOR(ts), INTERVAL '1' SECOND))
               GROUP BY window_start, window_end;"
        )
    };
    let bounded = ddl("'number-of-rows' = '5000'", 1_704_067_204_999);
    let expected: Vec<String> = (0..5)
        .map(|s| format!("2024-01-01 00:00:0{s},1000"))
        .collect();
    for p in [1, 2] {
        assert_eq!(run_streaming(&bounded, p)?, expected, "parallelism {p}");
    }

    // Unbounded: 2,000 rows a second, committed at each checkpoint.
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "", e))?;
    let out = dir.path().join("out");
    let script = format!(
        "SET 'execution.checkpointing.interval' = '500 ms';\n{}",
        ddl("'rows-per-second' = '2000'", 1_704_167_200_000)
    )
    .replace("{out}", &out.display().to_string());
    let job = compile(&script, ExecutionConfig::default(), &[])
        .map_err(|e| Error::User(e.to_string()))?
        .env
        .execute_async()?;
    common::wait_until(
        "a closed window",
        std::time::Duration::from_secs(60),
        || !common::committed(&out).is_empty(),
    );
    job.cancel();
    let _ = job.wait();
    let windows = common::committed(&out);
    assert!(
        windows.iter().all(|l| l.ends_with(",1000")),
        "whole windows only: {windows:?}"
    );
    assert!(
        windows.contains(&"2024-01-01 00:00:00,1000".to_string()),
        "{windows:?}"
    );
    Ok(())
}

/// Flink's datagen options: a sequence with an end ends the source after its last value
/// (here before `number-of-rows`), `null-rate` empties that share of a column, `length` fixes
/// a string's length, and every column type datagen supports is filled. The sink's path is a
/// `file://` URI, as Flink users write it.
#[test]
fn datagen_sequences_end_and_options_shape_the_rows() -> Result<()> {
    let script = "CREATE TABLE g (id INT, s STRING, b BOOLEAN, f FLOAT, d DATE, small SMALLINT,
        n BIGINT, ts TIMESTAMP(3))
      WITH ('connector' = 'datagen', 'number-of-rows' = '1000000',
        'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '3000',
        'fields.s.length' = '5', 'fields.n.null-rate' = '0.25',
        'fields.small.min' = '-3', 'fields.small.max' = '3',
        'fields.d.kind' = 'sequence', 'fields.d.start' = '19000', 'fields.d.end' = '99999',
        'fields.ts.max-past' = '1 h');
    CREATE TABLE out (id INT, s STRING, b BOOLEAN, f FLOAT, d DATE, small SMALLINT, n BIGINT,
        recent BOOLEAN)
      WITH ('connector' = 'filesystem', 'path' = 'file://{out}', 'format' = 'csv');
    INSERT INTO out SELECT id, s, b, f, d, small, n,
        ts > CURRENT_TIMESTAMP - INTERVAL '2' HOUR FROM g;";
    for p in [1, 3] {
        let lines = run_streaming(script, p)?;
        // The id sequence (1..=3000) ran out first.
        assert_eq!(lines.len(), 3000, "parallelism {p}");
        let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split(',').collect()).collect();
        let mut ids: Vec<i64> = rows
            .iter()
            .map(|r| r[0].parse().expect("an INT id"))
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, (1..=3000).collect::<Vec<_>>());
        for r in &rows {
            assert_eq!(r[1].len(), 5, "{r:?}");
            assert!(r[2] == "true" || r[2] == "false", "{r:?}");
            let small: i64 = r[5].parse().expect("a SMALLINT");
            assert!((-3..=3).contains(&small), "{r:?}");
            // The date sequence runs alongside the ids: day 19000 is 2022-01-08.
            let id: i64 = r[0].parse().expect("an INT id");
            if id == 1 {
                assert_eq!(r[4], "2022-01-08", "{r:?}");
            }
            assert_eq!(r[7], "true", "a timestamp at most an hour old: {r:?}");
        }
        let nulls = rows.iter().filter(|r| r[6].is_empty()).count();
        assert!(
            (600..=900).contains(&nulls),
            "about a quarter of 3000 NULLs, got {nulls}"
        );
    }
    Ok(())
}

#[test]
fn errors_name_the_statement_position_and_problem() {
    let cases = error_cases();
    assert!(cases.len() >= 20);
    for (i, (script, statement, line, column, words)) in cases.iter().enumerate() {
        let e = compile(script, ExecutionConfig::default(), &[]);
        let Err(e) = e else {
            panic!("case {i}: compiled, expected an error: {script}");
        };
        assert_eq!(
            (e.statement, e.line, e.column),
            (*statement, *line, *column),
            "case {i}: {e}"
        );
        assert!(
            e.message.contains(words),
            "case {i}: `{}` lacks `{words}`",
            e.message
        );
        // The message format users see.
        assert!(e.to_string().starts_with(&format!(
            "statement {statement} (line {line}, column {column}): "
        )));
    }
}

#[test]
fn statement_sets_run_every_insert_in_one_job() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "", e))?;
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let script = format!(
        "{}\nCREATE TABLE a (auction BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
         CREATE TABLE b (auction BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
         EXECUTE STATEMENT SET BEGIN
           INSERT INTO a SELECT auction FROM bids WHERE price < 100;
           INSERT INTO b SELECT auction FROM bids WHERE price >= 100;
         END;",
        bids_ddl(0),
        a.display(),
        b.display()
    );
    let job = compile(&script, ExecutionConfig::default(), &[])
        .map_err(|e| Error::User(e.to_string()))?;
    assert_eq!(job.inserts, 2);
    assert_eq!(job.env.execute()?, JobOutcome::Finished);
    let count = |d: &std::path::Path| -> usize {
        std::fs::read_dir(d)
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
    assert_eq!(count(&a) + count(&b), ROWS as usize);
    assert!(count(&a) > 0 && count(&b) > 0);
    Ok(())
}

/// Every Nexmark example, on 200 000 events (20 s of event time), equals DataFusion running
/// the same query over the same generated events (views included; window TVFs written out as
/// arithmetic on the event time), at parallelism 1 and 4.
#[test]
fn nexmark_examples_match_the_batch_oracle() -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/nexmark");
    let read = |f: &str| std::fs::read_to_string(root.join(f)).map_err(|e| Error::io("read", f, e));
    let events = 200_000u64;
    let ddl = read("ddl.sql")?.replace(
        "'events.num' = '10000000'",
        &format!("'events.num' = '{events}'"),
    );
    let input = flink_rs::connectors::NexmarkGenerator::bounded(events).generate(0, events)?;
    // Window starts in milliseconds: HOP(2 s, 10 s) gives five windows per bid.
    let ms = "CAST(\"dateTime\" AS BIGINT)";
    let hop = (0..5)
        .map(|k| {
            format!(
                "SELECT auction, {ms} - {ms} % 2000 - {} AS ws FROM bid",
                k * 2000
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let tumble =
        |cols: &str, from: &str| format!("SELECT {cols}, {ms} - {ms} % 10000 AS ws FROM {from}");
    let ts = |e: &str| format!("to_timestamp_millis({e})");
    let sessions = "WITH s AS (SELECT bidder, CAST(\"dateTime\" AS BIGINT) AS t,
           CASE WHEN CAST(\"dateTime\" AS BIGINT) - LAG(CAST(\"dateTime\" AS BIGINT)) OVER (PARTITION BY bidder ORDER BY \"dateTime\") <= 10000 THEN 0 ELSE 1 END AS brk FROM bid),
         g AS (SELECT bidder, t, SUM(brk) OVER (PARTITION BY bidder ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS sid FROM s)
         SELECT bidder, COUNT(*), to_timestamp_millis(MIN(t)), to_timestamp_millis(MAX(t) + 10000) FROM g GROUP BY bidder, sid";
    let oracles = [
        ("q11.sql", sessions.to_string()),
        (
            "q5_counts.sql",
            format!("SELECT auction, COUNT(*), {}, {} FROM ({hop}) GROUP BY auction, ws", ts("ws"), ts("ws + 10000")),
        ),
        (
            "q5.sql",
            format!(
                "WITH c AS (SELECT auction, COUNT(*) AS num, ws FROM ({hop}) GROUP BY auction, ws)
                 SELECT c.auction, c.num FROM c JOIN (SELECT MAX(num) AS maxn, ws FROM c GROUP BY ws) m
                 ON c.ws = m.ws AND c.num >= m.maxn"
            ),
        ),
        (
            "q7.sql",
            format!(
                "SELECT B.auction, B.price, B.bidder, B.\"dateTime\", B.extra FROM bid B
                 JOIN (SELECT MAX(price) AS maxprice, {} AS \"dateTime\" FROM ({}) GROUP BY ws) B1
                 ON B.price = B1.maxprice
                 WHERE B.\"dateTime\" BETWEEN B1.\"dateTime\" - INTERVAL '10' SECOND AND B1.\"dateTime\"",
                ts("ws + 10000"),
                tumble("price", "bid")
            ),
        ),
        (
            "q8.sql",
            format!(
                "SELECT P.id, P.name, P.starttime FROM
                 (SELECT id, name, {} AS starttime, {} AS endtime FROM ({}) GROUP BY id, name, ws) P
                 JOIN (SELECT seller, {} AS starttime, {} AS endtime FROM ({}) GROUP BY seller, ws) A
                 ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime",
                ts("ws"),
                ts("ws + 10000"),
                tumble("id, name", "person"),
                ts("ws"),
                ts("ws + 10000"),
                tumble("seller", "auction")
            ),
        ),
    ];
    for q in [
        "q0.sql",
        "q1.sql",
        "q2.sql",
        "q3.sql",
        "q4.sql",
        "q5_counts.sql",
        "q5.sql",
        "q7.sql",
        "q8.sql",
        "q15.sql",
        "q16.sql",
        "q17.sql",
        "q18.sql",
        "q20.sql",
        "q21.sql",
        "q22.sql",
    ] {
        let query = read(q)?;
        let select = match oracles.iter().find(|(n, _)| *n == q) {
            Some((_, o)) => o.clone(),
            None => query
                .split("discard_sink")
                .last()
                .map(|s| s.trim().trim_end_matches(';').to_string())
                .unwrap_or_default(),
        };
        // q4 and q17 average a BIGINT: Flink's AVG is then a BIGINT (the fraction dropped),
        // which the sink's DOUBLE column holds as `78982.0`.
        let select = select
            .replace("AVG(Q.final)", "CAST(AVG(Q.final) AS DOUBLE)")
            .replace("AVG(price)", "CAST(AVG(price) AS DOUBLE)")
            // q1's `0.908 * price` is a DECIMAL(24, 3), written to the sink's DOUBLE column.
            .replace(
                "0.908 * price AS price",
                "CAST(0.908 * price AS DOUBLE) AS price",
            );
        // Oracle: DataFusion over the generated events, with the same views.
        let views: Vec<&str> = ddl
            .split(';')
            .filter(|s| s.contains("CREATE VIEW"))
            .collect();
        let expected = oracle("nexmark", vec![input.clone()], &views, &select)?;
        // q15 reports per day, and the test's events all fall on one day.
        let least = if q == "q15.sql" { 1 } else { 2 };
        assert!(
            expected.len() >= least,
            "{q}: oracle has {} rows",
            expected.len()
        );
        let script = format!(
            "{ddl}\n{}",
            query.replace(
                "'connector' = 'blackhole'",
                "'connector' = 'filesystem', 'path' = '{out}', 'format' = 'csv'"
            )
        );
        for p in [1, 4] {
            let got = run_streaming(&script, p)?;
            assert_eq!(
                got.len(),
                expected.len(),
                "{q} at parallelism {p}: row count"
            );
            assert!(
                got == expected,
                "{q} at parallelism {p}: rows differ, e.g. {:?}",
                got.iter().zip(&expected).find(|(a, b)| a != b)
            );
        }
    }
    Ok(())
}

/// Nexmark q10: every bid into files partitioned by day and minute (`dt=…/hm=…/`); the
/// rows of each partition, with its values, equal the oracle's, at parallelism 1 and 3.
#[test]
fn nexmark_q10_writes_a_partition_per_day_and_minute() -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/nexmark");
    let read = |f: &str| std::fs::read_to_string(root.join(f)).map_err(|e| Error::io("read", f, e));
    // 10 000 events per event-time second: 65 s, two minutes' partitions.
    let events = 650_000u64;
    let ddl = read("ddl.sql")?.replace(
        "'events.num' = '10000000'",
        &format!("'events.num' = '{events}'"),
    );
    let input = flink_rs::connectors::NexmarkGenerator::bounded(events).generate(0, events)?;
    let views: Vec<&str> = ddl
        .split(';')
        .filter(|s| s.contains("CREATE VIEW"))
        .collect();
    let expected = oracle(
        "nexmark",
        vec![input],
        &views,
        "SELECT auction, bidder, price, \"dateTime\", extra, DATE_FORMAT(\"dateTime\", 'yyyy-MM-dd'), DATE_FORMAT(\"dateTime\", 'HH:mm') FROM bid",
    )?;
    for p in [1, 3] {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "", e))?;
        let out = dir.path().join("q10");
        let script = format!(
            "{ddl}\n{}",
            read("q10.sql")?.replace(
                "file:///tmp/flink-rs-nexmark-q10",
                &format!("file://{}", out.display())
            )
        );
        let settings = [("parallelism.default".to_string(), p.to_string())];
        let job = compile(&script, ExecutionConfig::default(), &settings)
            .map_err(|e| Error::User(e.to_string()))?;
        assert_eq!(job.env.execute()?, JobOutcome::Finished);
        let mut got = Vec::new();
        let mut partitions = 0;
        for day in std::fs::read_dir(&out)
            .map_err(|e| Error::io("ls", &out, e))?
            .flatten()
        {
            let dt = day.file_name().to_string_lossy().into_owned();
            let dt = dt
                .strip_prefix("dt=")
                .unwrap_or_else(|| panic!("{dt}"))
                .to_string();
            for minute in std::fs::read_dir(day.path())
                .map_err(|e| Error::io("ls", "", e))?
                .flatten()
            {
                let hm = minute.file_name().to_string_lossy().into_owned();
                let hm = hm
                    .strip_prefix("hm=")
                    .unwrap_or_else(|| panic!("{hm}"))
                    .to_string();
                partitions += 1;
                for part in std::fs::read_dir(minute.path())
                    .map_err(|e| Error::io("ls", "", e))?
                    .flatten()
                {
                    let text = std::fs::read_to_string(part.path())
                        .map_err(|e| Error::io("read", part.path(), e))?;
                    // Flink's escaping of `:` in a partition value (`09%3A01`).
                    let hm_value = hm.replace("%3A", ":");
                    got.extend(text.lines().map(|l| format!("{l},{dt},{hm_value}")));
                }
            }
        }
        got.sort();
        assert!(partitions > 1, "{partitions} partitions");
        assert_eq!(got.len(), expected.len(), "q10 at parallelism {p}: rows");
        assert!(
            got == expected,
            "q10 at parallelism {p}: rows differ, e.g. {:?}",
            got.iter().zip(&expected).find(|(a, b)| a != b)
        );
    }
    Ok(())
}

/// Group keys that are expressions take the generic aggregation path (rows per window,
/// keyed process function); it must agree with the oracle too.
#[test]
fn windows_grouped_by_expressions_match_the_batch_oracle() -> Result<()> {
    check(
        "tumble by expression",
        WIN_COLS,
        "SELECT window_start, window_end, auction % 7, COUNT(*), SUM(price), MIN(price), MAX(price), ROUND(AVG(CAST(price AS DOUBLE)), 4)
         FROM TABLE(HOP(TABLE bids, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '4' SECOND))
         GROUP BY window_start, window_end, auction % 7",
        &format!(
            "SELECT {}, auction % 7, COUNT(*), SUM(price), MIN(price), MAX(price), ROUND(AVG(CAST(price AS DOUBLE)), 4)
             FROM (SELECT *, CAST(ts AS BIGINT) - CAST(ts AS BIGINT) % 2000 AS ws FROM bids
                   UNION ALL SELECT *, CAST(ts AS BIGINT) - CAST(ts AS BIGINT) % 2000 - 2000 AS ws FROM bids)
             GROUP BY ws, auction % 7",
            win("ws", 4000)
        ),
    )
}

/// COUNT(DISTINCT …) on both aggregation paths (plain-column keys: the window operator;
/// expression keys: the generic path).
#[test]
fn count_distinct_matches_the_batch_oracle() -> Result<()> {
    let cols = "window_start TIMESTAMP(3), window_end TIMESTAMP(3), bucket BIGINT, auctions BIGINT, prices BIGINT";
    check(
        "count distinct (window operator)",
        cols,
        "SELECT window_start, window_end, bucket, COUNT(DISTINCT auction), COUNT(DISTINCT price)
         FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECOND))
         GROUP BY window_start, window_end, bucket",
        &format!(
            "SELECT {}, auction % 7, COUNT(DISTINCT auction), COUNT(DISTINCT price)
             FROM (SELECT *, CAST(ts AS BIGINT) - CAST(ts AS BIGINT) % 5000 AS ws FROM bids)
             GROUP BY ws, auction % 7",
            win("ws", 5000)
        ),
    )?;
    check(
        "count distinct (generic)",
        cols,
        "SELECT window_start, window_end, auction % 7, COUNT(DISTINCT auction), COUNT(DISTINCT price)
         FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECOND))
         GROUP BY window_start, window_end, auction % 7",
        &format!(
            "SELECT {}, auction % 7, COUNT(DISTINCT auction), COUNT(DISTINCT price)
             FROM (SELECT *, CAST(ts AS BIGINT) - CAST(ts AS BIGINT) % 5000 AS ws FROM bids)
             GROUP BY ws, auction % 7",
            win("ws", 5000)
        ),
    )
}

/// The SQL inside every FlinkJob manifest of `examples/k8s/` compiles (the operator cannot
/// check SQL; the jobmanager would refuse it at start).
#[test]
fn kubernetes_example_manifests_hold_sql_that_compiles() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/k8s");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("examples/k8s").flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&p).expect("read")).expect("yaml");
        let sql = doc["spec"]["job"]["sql"].as_str().expect("spec.job.sql");
        flink_rs::sql::compile(sql, flink_rs::graph::ExecutionConfig::default(), &[])
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        n += 1;
    }
    assert!(n >= 2);
}

/// The `bids` connector is the benchmark bid stream: W1 in SQL keeps exactly the rows the
/// stream's formula says it should, at parallelism 1 and 3.
#[test]
fn bids_connector_is_the_benchmark_stream() {
    let n: u64 = 50_000;
    let expected: Vec<i64> = (0..n)
        .map(|i| 1000 + ((i as u128 * 2_654_435_761) % 100_000) as i64)
        .filter(|a| a % 123 == 0)
        .collect();
    for p in [1, 3] {
        let dir = tempfile::tempdir().expect("tmp");
        let script = format!(
            "SET 'parallelism.default' = '{p}';
             CREATE TABLE bids WITH ('connector' = 'bids', 'number-of-rows' = '{n}');
             CREATE TABLE out (auction BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
             INSERT INTO out SELECT auction FROM bids WHERE auction % 123 = 0;",
            dir.path().display()
        );
        flink_rs::sql::compile(&script, flink_rs::graph::ExecutionConfig::default(), &[])
            .expect("compile")
            .env
            .execute()
            .expect("run");
        let mut got: Vec<i64> = Vec::new();
        for e in std::fs::read_dir(dir.path()).expect("out").flatten() {
            if e.file_name().to_string_lossy().starts_with("part-") {
                let text = std::fs::read_to_string(e.path()).expect("read");
                got.extend(
                    text.lines()
                        .map(|l| l.trim().parse::<i64>().expect("number")),
                );
            }
        }
        got.sort_unstable();
        let mut want = expected.clone();
        want.sort_unstable();
        assert_eq!(got, want, "parallelism {p}");
    }
}

/// Joins over randomized input: a regular join (no time bound), an interval join and a window
/// join of two window aggregates, each equal to DataFusion's batch join at parallelism 1 and 4.
#[test]
fn joins_match_the_batch_oracle() -> Result<()> {
    let cols = "auction BIGINT, a_price BIGINT, b_price BIGINT";
    check(
        "regular join",
        cols,
        "SELECT a.auction, a.price, b.price FROM bids a JOIN bids b
         ON a.auction = b.auction AND a.price = b.price WHERE a.price < 500",
        "SELECT a.auction, a.price, b.price FROM bids a JOIN bids b
         ON a.auction = b.auction AND a.price = b.price WHERE a.price < 500",
    )?;
    let interval = "SELECT a.auction, a.price, b.price FROM bids a JOIN bids b
         ON a.auction = b.auction AND a.ts BETWEEN b.ts - INTERVAL '1' SECOND AND b.ts + INTERVAL '2' SECOND
         WHERE a.price > 980 AND a.price >= b.price AND b.price <> 500";
    check("interval join", cols, interval, interval)?;
    let strict = "SELECT a.auction, a.price, b.price FROM bids a, bids b
         WHERE a.auction = b.auction AND a.ts > b.ts AND b.ts + INTERVAL '500' MILLISECOND >= a.ts
         AND b.price > 900";
    check(
        "interval join (comma join, strict bound)",
        cols,
        strict,
        strict,
    )?;
    let window = |size: &str, filter: &str, agg: &str| {
        format!(
            "SELECT auction, window_start, window_end, {agg} FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '{size}' SECOND)) {filter} GROUP BY auction, window_start, window_end"
        )
    };
    let tumble = |filter: &str, agg: &str| {
        format!(
            "SELECT auction, {agg}, CAST(ts AS BIGINT) - CAST(ts AS BIGINT) % 5000 AS ws FROM bids {filter} GROUP BY auction, CAST(ts AS BIGINT) - CAST(ts AS BIGINT) % 5000"
        )
    };
    check(
        "window join",
        "auction BIGINT, window_start TIMESTAMP(3), cnt BIGINT, hi BIGINT",
        &format!(
            "SELECT l.auction, l.window_start, l.cnt, r.hi FROM ({}) l JOIN ({}) r
             ON l.auction = r.auction AND l.window_start = r.window_start AND l.window_end = r.window_end",
            window("5", "", "COUNT(*) AS cnt"),
            window("5", "WHERE price > 500", "MAX(price) AS hi")
        ),
        &format!(
            "SELECT l.auction, to_timestamp_millis(l.ws), l.cnt, r.hi FROM ({}) l JOIN ({}) r
             ON l.auction = r.auction AND l.ws = r.ws",
            tumble("", "COUNT(*) AS cnt"),
            tumble("WHERE price > 500", "MAX(price) AS hi")
        ),
    )
}

/// The planner recognizes what bounds a join's state from the condition alone: equal window
/// ends make a window join, a time range an interval join, anything else a regular join.
#[test]
fn joins_are_planned_by_their_time_bounds() -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/nexmark");
    let read = |f: &str| std::fs::read_to_string(root.join(f)).map_err(|e| Error::io("read", f, e));
    let ddl = read("ddl.sql")?;
    for (q, kind) in [
        ("q3.sql", "Join ("),
        ("q4.sql", "IntervalJoin["),
        ("q5.sql", "WindowJoin"),
        ("q7.sql", "IntervalJoin["),
        ("q8.sql", "WindowJoin"),
        ("q9.sql", "IntervalJoin["),
    ] {
        let job = compile(
            &format!("{ddl}\n{}", read(q)?),
            ExecutionConfig::default(),
            &[],
        )
        .map_err(|e| Error::User(format!("{q}: {e}")))?;
        let plan = job.env.graph().explain();
        let kinds: Vec<&str> = ["WindowJoin", "IntervalJoin[", "Join ("]
            .into_iter()
            .filter(|k| plan.contains(&format!("Operator {k}")))
            .collect();
        assert_eq!(kinds, vec![kind], "{q}:\n{plan}");
        // Both sides read the one nexmark table: one source feeds them (Flink's source reuse),
        // unless `table.optimizer.reuse-source-enabled` is off.
        assert_eq!(
            plan.matches("Source Source: nexmark").count(),
            1,
            "{q}:\n{plan}"
        );
        let apart = compile(
            &format!("{ddl}\n{}", read(q)?),
            ExecutionConfig::default(),
            &[(
                "table.optimizer.reuse-source-enabled".into(),
                "false".into(),
            )],
        )
        .map_err(|e| Error::User(format!("{q}: {e}")))?
        .env
        .graph()
        .explain();
        assert!(
            apart.matches("Source Source: nexmark").count() >= 2,
            "{q}:\n{apart}"
        );
    }
    // q5's two HOP counts are the same aggregation: computed once (Flink's sub-plan reuse),
    // unless `table.optimizer.reuse-sub-plan-enabled` is off.
    let q5 = format!("{ddl}\n{}", read("q5.sql")?);
    for (reuse, windows) in [("true", 1), ("false", 2)] {
        let plan = compile(
            &q5,
            ExecutionConfig::default(),
            &[(
                "table.optimizer.reuse-sub-plan-enabled".into(),
                reuse.into(),
            )],
        )
        .map_err(|e| Error::User(format!("q5: {e}")))?
        .env
        .graph()
        .explain();
        assert_eq!(
            plan.matches("Operator Window(Sliding").count(),
            windows,
            "reuse {reuse}:\n{plan}"
        );
    }
    Ok(())
}

/// Session windows (per PARTITION BY key, merged as rows arrive) equal a batch sessionization:
/// a new session wherever a key's consecutive rows are more than the gap apart.
#[test]
fn session_windows_match_the_batch_oracle() -> Result<()> {
    check(
        "session windows",
        "window_start TIMESTAMP(3), window_end TIMESTAMP(3), auction BIGINT, cnt BIGINT, total BIGINT",
        "SELECT window_start, window_end, auction, COUNT(*), SUM(price)
         FROM TABLE(SESSION(TABLE bids PARTITION BY auction, DESCRIPTOR(ts), INTERVAL '500' MILLISECOND))
         GROUP BY window_start, window_end, auction",
        "WITH s AS (SELECT auction, price, CAST(ts AS BIGINT) AS t,
           CASE WHEN CAST(ts AS BIGINT) - LAG(CAST(ts AS BIGINT)) OVER (PARTITION BY auction ORDER BY ts) <= 500 THEN 0 ELSE 1 END AS brk FROM bids),
         g AS (SELECT auction, price, t, SUM(brk) OVER (PARTITION BY auction ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS sid FROM s)
         SELECT to_timestamp_millis(MIN(t)), to_timestamp_millis(MAX(t) + 500), auction, COUNT(*), SUM(price) FROM g GROUP BY auction, sid",
    )
}

/// Top-N and deduplication through ROW_NUMBER (and RANK, DENSE_RANK): per window, and over a
/// bounded input, equal to DataFusion's window functions.
#[test]
fn top_n_and_deduplication_match_the_batch_oracle() -> Result<()> {
    let counts = "SELECT window_start, window_end, auction, COUNT(*) AS cnt FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECOND)) GROUP BY window_start, window_end, auction";
    let counts_batch = format!(
        "SELECT {}, auction, COUNT(*) AS cnt FROM (SELECT *, CAST(ts AS BIGINT) - CAST(ts AS BIGINT) % 5000 AS ws FROM bids) GROUP BY ws, auction",
        win("ws", 5000)
    );
    check(
        "window top-n",
        "window_start TIMESTAMP(3), window_end TIMESTAMP(3), auction BIGINT, cnt BIGINT, rn BIGINT",
        &format!("SELECT window_start, window_end, auction, cnt, rn FROM (
           SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY cnt DESC, auction) AS rn
           FROM ({counts})) WHERE rn <= 3"),
        &format!("SELECT window_start, window_end, auction, cnt, rn FROM (
           SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY cnt DESC, auction) AS rn
           FROM ({counts_batch})) WHERE rn <= 3"),
    )?;
    // The `rn <= 3` filter lets the ranking keep three rows per window, not all of them.
    let script = format!(
        "{}\nCREATE TABLE out (a BIGINT) WITH ('connector' = 'blackhole');\nINSERT INTO out SELECT rn FROM (SELECT ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY cnt DESC) AS rn FROM ({counts})) WHERE rn <= 3;",
        bids_ddl(0)
    );
    let plan = compile(&script, ExecutionConfig::default(), &[])
        .map_err(|e| Error::User(e.to_string()))?
        .env
        .graph()
        .explain();
    assert!(plan.contains("Operator WindowTopN[3]"), "{plan}");
    let ranks = |from: &str| {
        format!("SELECT window_start, auction, cnt, rk, drk FROM (
           SELECT *, RANK() OVER (PARTITION BY window_start, window_end ORDER BY cnt DESC) AS rk,
                     DENSE_RANK() OVER (PARTITION BY window_start, window_end ORDER BY cnt DESC) AS drk
           FROM ({from})) WHERE drk <= 2")
    };
    check(
        "window rank and dense rank",
        "window_start TIMESTAMP(3), auction BIGINT, cnt BIGINT, rk BIGINT, drk BIGINT",
        &ranks(counts),
        &ranks(&counts_batch),
    )?;
    let top2 = "SELECT auction, price, ts, rn FROM (
           SELECT auction, price, ts, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC, ts) AS rn FROM bids)
         WHERE rn <= 2";
    check(
        "top-n of a bounded input",
        "auction BIGINT, price BIGINT, ts TIMESTAMP(3), rn BIGINT",
        top2,
        top2,
    )?;
    let last = "SELECT auction, price, ts FROM (
           SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY ts DESC) AS rn FROM bids)
         WHERE rn = 1";
    check(
        "deduplication (keep last) of a bounded input",
        "auction BIGINT, price BIGINT, ts TIMESTAMP(3)",
        last,
        last,
    )
}

/// Runs `script` with `flink-rs run` at parallelism `p` (a print sink) and applies the
/// changelog it prints: returns the end state (sorted, as CSV lines), and the number of rows
/// added (`+I`, `+U`) and retracted (`-U`, `-D`).
fn changelog_end_state(script: &str, p: usize) -> Result<(Vec<String>, usize, usize)> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "", e))?;
    let path = dir.path().join("job.sql");
    std::fs::write(&path, script).map_err(|e| Error::io("write", &path, e))?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flink-rs"))
        .arg("run")
        .arg(&path)
        .args(["--parallelism", &p.to_string()])
        .output()
        .map_err(|e| Error::io("run", "flink-rs", e))?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut rows: Vec<String> = Vec::new();
    let (mut added, mut retracted) = (0, 0);
    for line in stdout.lines() {
        // `N> ` names the printing subtask at parallelism > 1.
        let line = line.split_once("> ").map_or(line, |(_, l)| l);
        let Some((kind, rest)) = line.split_once('[') else {
            continue;
        };
        let row = rest.trim_end_matches(']').replace(", ", ",");
        match kind {
            "+I" | "+U" => {
                added += 1;
                rows.push(row);
            }
            "-U" | "-D" => {
                retracted += 1;
                let i = rows.iter().position(|r| *r == row);
                assert!(i.is_some(), "retraction of a row never written: {row}");
                if let Some(i) = i {
                    rows.swap_remove(i);
                }
            }
            _ => {}
        }
    }
    rows.sort();
    Ok((rows, added, retracted))
}

/// A plain GROUP BY in STREAMING runtime mode (what it is on any unbounded input) writes a
/// changelog: `flink-rs run` prints `+I`, `-U`, `+U` rows, and applying them in order gives
/// DataFusion's final result, at parallelism 1 and 4. A sink that takes inserts only refuses
/// the query.
#[test]
fn updating_group_by_changelog_ends_at_the_batch_result() -> Result<()> {
    let query = "SELECT auction, COUNT(*), SUM(price), MAX(price) FROM bids GROUP BY auction HAVING COUNT(*) > 250";
    let expected = run_batch_printed(query)?;
    assert!(expected.len() > 10);
    let script = format!(
        "SET 'execution.runtime-mode' = 'streaming';\n{}\nCREATE TABLE out (auction BIGINT, cnt BIGINT, total BIGINT, hi BIGINT) WITH ('connector' = 'print');\nINSERT INTO out {query};",
        bids_ddl(0)
    );
    for p in [1, 4] {
        let (rows, added, retracted) = changelog_end_state(&script, p)?;
        assert!(
            retracted > 1000,
            "the result was updated in place: {retracted} -U rows"
        );
        assert!(added > retracted);
        assert_eq!(rows, expected, "parallelism {p}: the changelog's end state");
    }
    // An append-only sink cannot take it.
    let file_sink = script.replace(
        "'connector' = 'print'",
        "'connector' = 'filesystem', 'path' = '/nonexistent', 'format' = 'csv'",
    );
    let e = compile(&file_sink, ExecutionConfig::default(), &[])
        .map(|_| ())
        .err();
    let msg = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("accepts inserts only"), "{msg}");
    // The input is bounded: the way out is batch mode.
    assert!(
        msg.contains("`SET 'execution.runtime-mode' = 'batch';`"),
        "{msg}"
    );
    // Over unbounded input, the way out is a changelog sink or a window.
    let unbounded = file_sink.replace("'number-of-rows'", "'rows-per-second'");
    assert_ne!(unbounded, file_sink);
    let msg = compile(&unbounded, ExecutionConfig::default(), &[])
        .map(|_| ())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("group by a window TVF"), "{msg}");
    assert!(!msg.contains("runtime-mode"), "{msg}");
    Ok(())
}

/// Top-N without a window on unbounded input (STREAMING mode here) is a changelog of ranks:
/// its end state is DataFusion's ranking; keep-first deduplication of rows in time order only
/// ever inserts.
#[test]
fn updating_top_n_changelog_ends_at_the_batch_result() -> Result<()> {
    let top2 = "SELECT auction, price, ts, rn FROM (
           SELECT auction, price, ts, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC, ts) AS rn FROM bids)
         WHERE rn <= 2";
    let first = "SELECT auction, price, ts FROM (
           SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY ts) AS rn FROM bids)
         WHERE rn = 1";
    for (query, cols, updates) in [
        (
            top2,
            "auction BIGINT, price BIGINT, ts TIMESTAMP(3), rn BIGINT",
            true,
        ),
        (
            first,
            "auction BIGINT, price BIGINT, ts TIMESTAMP(3)",
            false,
        ),
    ] {
        let expected = run_batch_printed(query)?;
        let script = format!(
            "SET 'execution.runtime-mode' = 'streaming';\n{}\nCREATE TABLE out ({cols}) WITH ('connector' = 'print');\nINSERT INTO out {query};",
            bids_ddl(0)
        );
        for p in [1, 4] {
            let (rows, _, retracted) = changelog_end_state(&script, p)?;
            assert_eq!(rows, expected, "parallelism {p}: {query}");
            // Rows in time order (one source split) never displace the first row; from four
            // splits, a row that arrives late but is earlier does, and is retracted.
            if p == 1 || updates {
                assert_eq!(retracted > 0, updates, "retractions: {retracted}");
            }
        }
    }
    Ok(())
}

/// Starts `script` at parallelism `p`, from the savepoint `restore` if given, with more
/// `settings` (a state backend).
fn start_job(
    script: &str,
    p: usize,
    restore: Option<&str>,
    settings: &[(&str, &str)],
) -> Result<JobHandle> {
    let mut set = vec![("parallelism.default".to_string(), p.to_string())];
    if let Some(path) = restore {
        set.push(("execution.savepoint.path".into(), path.to_string()));
    }
    set.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    compile(script, ExecutionConfig::default(), &set)
        .map_err(|e| Error::User(e.to_string()))?
        .env
        .execute_async()
}

/// Join state is checkpointed like any keyed state: an interval join and a window join, stopped
/// with a savepoint mid-run at parallelism 2 and resumed from it at parallelism 4, commit
/// exactly what DataFusion computes over the whole input.
/// Waits until every source subtask of `job` has read `rows` rows.
fn every_source_read(job: &JobHandle, rows: u64, what: &str) {
    common::wait_until(what, std::time::Duration::from_secs(60), || {
        let sources: Vec<u64> = job
            .task_metrics()
            .iter()
            .filter(|(task, _, _)| task.starts_with("Source"))
            .map(|(_, _, out)| *out)
            .collect();
        !sources.is_empty() && sources.iter().all(|n| *n >= rows)
    });
}

/// OVER aggregate state (waiting rows, frames, running sums) is keyed state: stopped with a
/// savepoint mid-run at parallelism 2 on the heap backend and resumed at parallelism 3 on the
/// disk backend, the job commits exactly DataFusion's result over the whole input.
#[test]
fn over_aggregates_resume_from_a_savepoint_at_another_parallelism_and_backend() -> Result<()> {
    let query = "SELECT auction, price, ts, SUM(price) OVER w, COUNT(*) OVER w, MAX(price) OVER w
         FROM bids WINDOW w AS (PARTITION BY auction ORDER BY ts
           RANGE BETWEEN INTERVAL '3' SECOND PRECEDING AND CURRENT ROW)";
    let expected = run_batch(query)?;
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "", e))?;
    let (out, sp) = (dir.path().join("out"), dir.path().join("sp"));
    let script = format!(
        "{}\nCREATE TABLE out (auction BIGINT, price BIGINT, ts TIMESTAMP(3), s BIGINT, c BIGINT, hi BIGINT)
           WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
         INSERT INTO out {query};",
        bids_ddl(0).replace(
            "'number-of-rows' = '60000',",
            "'number-of-rows' = '60000', 'rows-per-second' = '25000',"
        ),
        out.display()
    );
    let run_on = |p: usize, restore: Option<&str>, backend: &[(&str, &str)]| {
        start_job(&script, p, restore, backend)
    };
    let job = run_on(2, None, &[])?;
    every_source_read(&job, 15_000, "half of the input");
    let savepoint = job.stop_with_savepoint(Some(&sp.display().to_string()))?;
    assert!(matches!(job.wait()?, JobOutcome::Stopped { .. }));
    let before = common::committed(&out).len();
    assert!(
        before > 0 && before < expected.len(),
        "the stop should come mid-run ({before} of {} rows written)",
        expected.len()
    );
    assert_eq!(
        run_on(3, Some(&savepoint), DISK)?.wait()?,
        JobOutcome::Finished
    );
    let after = common::committed(&out);
    assert_eq!(after.len(), expected.len(), "rows after the resume");
    assert!(after == expected, "OVER aggregates after the resume");
    Ok(())
}

/// Window aggregates move from the heap backend (sliced, on the heap) to the disk backend
/// (windows and timers in its store) through a savepoint, at another parallelism: hopping
/// and cumulative windows, whose slices are merged into the windows still to fire. The
/// output equals a failure-free run's, record for record.
#[test]
fn window_aggregates_move_from_the_heap_to_the_disk_backend_through_a_savepoint() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "", e))?;
    let script = |out: &std::path::Path, rate: &str| {
        format!(
            "{}\nCREATE TABLE hop (auction BIGINT, ws TIMESTAMP(3), we TIMESTAMP(3), n BIGINT, s BIGINT, hi BIGINT)
               WITH ('connector' = 'filesystem', 'path' = '{}/hop', 'format' = 'csv');
             CREATE TABLE cum (auction BIGINT, ws TIMESTAMP(3), we TIMESTAMP(3), n BIGINT, s BIGINT)
               WITH ('connector' = 'filesystem', 'path' = '{}/cum', 'format' = 'csv');
             INSERT INTO hop SELECT auction, window_start, window_end, COUNT(*), SUM(price), MAX(price)
               FROM TABLE(HOP(TABLE bids, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '6' SECOND))
               GROUP BY auction, window_start, window_end;
             INSERT INTO cum SELECT auction, window_start, window_end, COUNT(*), SUM(price)
               FROM TABLE(CUMULATE(TABLE bids, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '8' SECOND))
               GROUP BY auction, window_start, window_end;",
            bids_ddl(0).replace(
                "'number-of-rows' = '60000',",
                &format!("'number-of-rows' = '60000', {rate}")
            ),
            out.display(),
            out.display()
        )
    };
    let lines = |out: &std::path::Path| -> Vec<String> {
        let mut all = common::committed(&out.join("hop"));
        all.extend(
            common::committed(&out.join("cum"))
                .iter()
                .map(|l| format!("cum {l}")),
        );
        all
    };
    let reference = dir.path().join("reference");
    assert_eq!(
        start_job(&script(&reference, ""), 1, None, &[])?.wait()?,
        JobOutcome::Finished
    );
    let expected = lines(&reference);
    let (out, sp) = (dir.path().join("out"), dir.path().join("sp"));
    let moved = script(&out, "'rows-per-second' = '25000',");
    let job = start_job(&moved, 2, None, &[])?;
    every_source_read(&job, 15_000, "half of the input");
    let savepoint = job.stop_with_savepoint(Some(&sp.display().to_string()))?;
    assert!(matches!(job.wait()?, JobOutcome::Stopped { .. }));
    let before = lines(&out).len();
    assert!(
        before > 0 && before < expected.len(),
        "the stop should come mid-run ({before} of {} rows written)",
        expected.len()
    );
    assert_eq!(
        start_job(&moved, 3, Some(&savepoint), DISK)?.wait()?,
        JobOutcome::Finished
    );
    let after = lines(&out);
    assert_eq!(after.len(), expected.len(), "rows after the move");
    assert!(
        after == expected,
        "window aggregates after the move to disk"
    );
    Ok(())
}

#[test]
fn sql_joins_resume_from_a_savepoint_at_another_parallelism() -> Result<()> {
    let interval = "SELECT a.auction, a.price, b.price FROM bids a JOIN bids b
         ON a.auction = b.auction AND a.ts BETWEEN b.ts - INTERVAL '1' SECOND AND b.ts + INTERVAL '2' SECOND
         WHERE a.price > 980";
    let window = format!(
        "SELECT l.auction, l.window_start, l.cnt, r.cnt FROM ({}) l JOIN ({}) r
         ON l.auction = r.auction AND l.window_start = r.window_start AND l.window_end = r.window_end",
        counts_per_window(""),
        counts_per_window("WHERE price > 500")
    );
    let expected_interval = run_batch(interval)?;
    let expected_window = run_batch(&format!(
        "SELECT l.auction, to_timestamp_millis(l.ws), l.cnt, r.cnt FROM ({}) l JOIN ({}) r ON l.auction = r.auction AND l.ws = r.ws",
        counts_per_window_batch(""),
        counts_per_window_batch("WHERE price > 500")
    ))?;
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "", e))?;
    let (out_i, out_w, sp) = (
        dir.path().join("i"),
        dir.path().join("w"),
        dir.path().join("sp"),
    );
    // The same rows as the oracle's, at 25 000 rows/s: the job runs for about 2.4 s.
    let script = format!(
        "{}\nCREATE TABLE out_i (auction BIGINT, a BIGINT, b BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
         CREATE TABLE out_w (auction BIGINT, ws TIMESTAMP(3), a BIGINT, b BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
         INSERT INTO out_i {interval};
         INSERT INTO out_w {window};",
        bids_ddl(0).replace(
            "'number-of-rows' = '60000',",
            "'number-of-rows' = '60000', 'rows-per-second' = '25000',"
        ),
        out_i.display(),
        out_w.display()
    );
    let run_on = |p: usize, restore: Option<&str>, backend: &[(&str, &str)]| {
        start_job(&script, p, restore, backend)
    };
    let run = |p: usize, restore: Option<&str>| run_on(p, restore, &[]);
    let job = run(2, None)?;
    // Stop half way: once every source subtask has read half of its 30 000 rows.
    every_source_read(&job, 15_000, "half of the input");
    let savepoint = job.stop_with_savepoint(Some(&sp.display().to_string()))?;
    assert!(matches!(job.wait()?, JobOutcome::Stopped { .. }));
    let lines = |d: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .map(|it| {
                it.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("part-"))
                    .flat_map(|e| {
                        std::fs::read_to_string(e.path())
                            .unwrap_or_default()
                            .lines()
                            .map(str::to_string)
                            .collect::<Vec<_>>()
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let before = lines(&out_i).len();
    assert!(
        before > 0 && before < expected_interval.len(),
        "the stop should come mid-run ({before} of {} rows written)",
        expected_interval.len()
    );
    // The outputs as the stop left them, to resume the same savepoint a second time.
    let at_stop = dir.path().join("at-stop");
    for d in [&out_i, &out_w] {
        let copy = at_stop.join(d.file_name().unwrap_or_default());
        std::fs::create_dir_all(&copy).map_err(|e| Error::io("mkdir", &copy, e))?;
        for e in std::fs::read_dir(d)
            .map_err(|e| Error::io("list", d, e))?
            .flatten()
        {
            std::fs::copy(e.path(), copy.join(e.file_name()))
                .map_err(|err| Error::io("copy", e.path(), err))?;
        }
    }
    assert_eq!(run(4, Some(&savepoint))?.wait()?, JobOutcome::Finished);
    assert!(
        lines(&out_i) == expected_interval,
        "interval join after the resume"
    );
    assert!(
        lines(&out_w) == expected_window,
        "window join after the resume"
    );
    // On the disk backend the joins and window aggregates keep their state in the backend's
    // stores, in another layout: they take the heap backend's savepoint over (the columnar
    // joins' rows and the sliced aggregates' slices), with the same results.
    for d in [&out_i, &out_w] {
        std::fs::remove_dir_all(d).map_err(|e| Error::io("rm", d, e))?;
        let copy = at_stop.join(d.file_name().unwrap_or_default());
        std::fs::rename(&copy, d).map_err(|e| Error::io("rename", &copy, e))?;
    }
    assert_eq!(
        run_on(3, Some(&savepoint), DISK)?.wait()?,
        JobOutcome::Finished
    );
    assert!(
        lines(&out_i) == expected_interval,
        "interval join after the move to the disk backend"
    );
    assert!(
        lines(&out_w) == expected_window,
        "window join after the move to the disk backend"
    );
    // The same jobs on the disk backend stop with a savepoint and resume at another
    // parallelism with the same results.
    for d in [&out_i, &out_w] {
        std::fs::remove_dir_all(d).map_err(|e| Error::io("rm", d, e))?;
    }
    let disk_sp = dir.path().join("disk-sp");
    let job = run_on(2, None, DISK)?;
    every_source_read(&job, 10_000, "a third of the input");
    let savepoint = job.stop_with_savepoint(Some(&disk_sp.display().to_string()))?;
    assert!(matches!(job.wait()?, JobOutcome::Stopped { .. }));
    let before = lines(&out_i).len();
    assert!(
        before < expected_interval.len(),
        "the stop on the disk backend should come before the end ({before} rows written)"
    );
    // Back to the heap backend is refused, naming the layouts and why.
    let refused = run(2, Some(&savepoint)).and_then(|job| job.wait());
    let message = match refused {
        Err(e) => e.to_string(),
        Ok(outcome) => format!("{outcome:?}"),
    };
    assert!(
        message.contains("in the layout `keyed-store`")
            && (message.contains("with the layout `columnar-join`")
                || message.contains("with the layout `sliced-window-aggregate`"))
            && message.contains("but not back"),
        "{message}"
    );
    assert_eq!(
        run_on(3, Some(&savepoint), DISK)?.wait()?,
        JobOutcome::Finished
    );
    assert!(
        lines(&out_i) == expected_interval,
        "interval join on the disk backend after the resume"
    );
    assert!(
        lines(&out_w) == expected_window,
        "window join on the disk backend after the resume"
    );
    Ok(())
}

/// LEFT, RIGHT and FULL interval and window joins: rows without a match come out padded with
/// NULLs once the watermark shows no match can come, as DataFusion's outer joins give them.
#[test]
fn outer_interval_and_window_joins_match_the_batch_oracle() -> Result<()> {
    let cols = "auction BIGINT, a_price BIGINT, b_price BIGINT";
    for kind in ["LEFT", "RIGHT", "FULL"] {
        let q = format!(
            "SELECT a.auction, a.price, b.price FROM (SELECT * FROM bids WHERE price > 990) a {kind} JOIN (SELECT * FROM bids WHERE price < 8) b
             ON a.auction = b.auction AND a.ts BETWEEN b.ts - INTERVAL '2' SECOND AND b.ts + INTERVAL '1' SECOND"
        );
        check(&format!("{kind} interval join"), cols, &q, &q)?;
    }
    check(
        "FULL window join",
        "auction BIGINT, l BIGINT, r BIGINT",
        &format!(
            "SELECT COALESCE(l.auction, r.auction), l.cnt, r.cnt FROM ({}) l FULL JOIN ({}) r
             ON l.auction = r.auction AND l.window_start = r.window_start AND l.window_end = r.window_end",
            counts_per_window("WHERE price > 970"),
            counts_per_window("WHERE price < 30")
        ),
        &format!(
            "SELECT COALESCE(l.auction, r.auction), l.cnt, r.cnt FROM ({}) l FULL JOIN ({}) r
             ON l.auction = r.auction AND l.ws = r.ws",
            counts_per_window_batch("WHERE price > 970"),
            counts_per_window_batch("WHERE price < 30")
        ),
    )
}

/// Rows per auction in 5 s tumbling windows (of the rows `filter` keeps), as a window TVF.
fn counts_per_window(filter: &str) -> String {
    format!(
        "SELECT auction, window_start, window_end, COUNT(*) AS cnt FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECOND)) {filter} GROUP BY auction, window_start, window_end"
    )
}

/// [`counts_per_window`] for the batch oracle: the window start `ws` in milliseconds.
fn counts_per_window_batch(filter: &str) -> String {
    format!(
        "SELECT auction, COUNT(*) AS cnt, CAST(ts AS BIGINT) - CAST(ts AS BIGINT) % 5000 AS ws FROM bids {filter} GROUP BY auction, CAST(ts AS BIGINT) - CAST(ts AS BIGINT) % 5000"
    )
}

/// `table.exec.state.ttl`: a regular join drops a row that long (processing time) after
/// storing it, so later rows of its key no longer meet it; without a TTL every row joins.
/// The same for an `IN` subquery (a semi join): a row waiting for its key's first match is
/// dropped after the TTL.
#[test]
fn regular_join_state_ttl_forgets_old_rows() -> Result<()> {
    for (insert, kind, out_cols) in [
        (
            "SELECT l.k, a, b FROM l JOIN r ON l.k = r.k",
            "Join[state ttl 300 ms]",
            "k BIGINT, a BIGINT, b BIGINT",
        ),
        (
            "SELECT k, a FROM l WHERE k IN (SELECT k FROM r)",
            "LeftSemiJoin[state ttl 300 ms]",
            "k BIGINT, a BIGINT",
        ),
    ] {
        // Left: six keys at once. Right: the same keys at two rows per second, so keys 2-5
        // come at least a second after the left rows.
        let script = |set: &str| {
            format!(
                "{set}
                 CREATE TABLE l (k BIGINT, a BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '6',
                   'fields.k.kind' = 'sequence', 'fields.k.start' = '0', 'fields.a.kind' = 'sequence', 'fields.a.start' = '100');
                 CREATE TABLE r (k BIGINT, b BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '6', 'rows-per-second' = '2',
                   'fields.k.kind' = 'sequence', 'fields.k.start' = '0', 'fields.b.kind' = 'sequence', 'fields.b.start' = '200');
                 CREATE TABLE out ({out_cols}) WITH ('connector' = 'filesystem', 'path' = '{{out}}', 'format' = 'csv');
                 INSERT INTO out {insert};"
            )
        };
        let all = run_streaming(&script(""), 1)?;
        assert_eq!(all.len(), 6, "without a TTL every key joins: {all:?}");
        let explained = compile(
            &script("SET 'table.exec.state.ttl' = '300 ms';").replace("{out}", "/tmp/unused"),
            ExecutionConfig::default(),
            &[],
        )
        .map_err(|e| Error::User(e.to_string()))?
        .env
        .graph()
        .explain();
        assert!(explained.contains(kind), "{explained}");
        let some = run_streaming(&script("SET 'table.exec.state.ttl' = '300 ms';"), 1)?;
        assert!(
            some.len() < 6,
            "with a 300 ms TTL the late keys find nothing: {some:?}"
        );
        for line in &some {
            let k: i64 = line
                .split(',')
                .next()
                .and_then(|k| k.parse().ok())
                .unwrap_or(-1);
            assert!(
                (0..2).contains(&k),
                "key {k} came a second after its left row, past the TTL: {some:?}"
            );
        }
    }
    Ok(())
}
