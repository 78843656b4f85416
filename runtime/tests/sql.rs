//! SQL jobs against an independent oracle: the same query run by DataFusion in batch mode
//! over the same bounded input, at parallelism 1 and 4; and error messages with positions.

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
        .field("ts", FieldGen::Sequence { start: BASE_TS })?;
    let mut r = g.create_reader(0, 1)?;
    let mut out = Vec::new();
    while let SourcePoll::Batch { batch, .. } = r.poll_next()? {
        out.push(batch);
    }
    Ok(out)
}

fn csv_lines(batches: &[RecordBatch]) -> Vec<String> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::csv::WriterBuilder::new().with_header(false).build(&mut buf);
        for b in batches {
            let _ = w.write(b);
        }
    }
    let mut lines: Vec<String> = String::from_utf8_lossy(&buf).lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// Runs `script` (with `{out}` the output directory) at parallelism `p`; returns the sorted
/// lines of the committed output.
fn run_streaming(script: &str, p: usize) -> Result<Vec<String>> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "", e))?;
    let out = dir.path().join("out");
    let script = script.replace("{out}", &out.display().to_string());
    let job = compile(&script, ExecutionConfig::default(), &[("parallelism.default".into(), p.to_string())])
        .map_err(|e| Error::User(e.to_string()))?;
    assert_eq!(job.env.execute()?, JobOutcome::Finished);
    let mut lines = Vec::new();
    for e in std::fs::read_dir(&out).map_err(|e| Error::io("ls", &out, e))?.flatten() {
        if e.file_name().to_string_lossy().starts_with("part-") {
            let t = std::fs::read_to_string(e.path()).map_err(|e| Error::io("read", e.to_string(), e))?;
            lines.extend(t.lines().map(str::to_string));
        }
    }
    lines.sort();
    Ok(lines)
}

/// Runs a batch query over the input in DataFusion, its columns cast to `types`.
fn run_batch(sql: &str) -> Result<Vec<String>> {
    let ctx = SessionContext::new();
    let t = MemTable::try_new(input_schema(), vec![input_batches()?]).map_err(|e| Error::User(e.to_string()))?;
    ctx.register_table("bids", Arc::new(t)).map_err(|e| Error::User(e.to_string()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("tokio", "", e))?;
    let batches = rt
        .block_on(async { ctx.sql(sql).await?.collect().await })
        .map_err(|e| Error::User(format!("oracle: {e}")))?;
    Ok(csv_lines(&batches))
}

fn check(name: &str, sink_cols: &str, query: &str, oracle: &str) -> Result<()> {
    let script = format!(
        "{}\nCREATE TABLE out ({sink_cols}) WITH ('connector' = 'filesystem', 'path' = '{{out}}', 'format' = 'csv');\nINSERT INTO out {query};",
        bids_ddl(0)
    );
    let expected = run_batch(oracle)?;
    assert!(expected.len() > 10, "{name}: the oracle returned only {} rows", expected.len());
    for p in [1, 4] {
        let got = run_streaming(&script, p)?;
        assert_eq!(got.len(), expected.len(), "{name} at parallelism {p}: row count");
        assert!(got == expected, "{name} at parallelism {p}: rows differ, e.g. {:?} vs {:?}",
            got.iter().zip(&expected).find(|(a, b)| a != b), ());
    }
    Ok(())
}

const WIN_COLS: &str = "window_start TIMESTAMP(3), window_end TIMESTAMP(3), bucket BIGINT, cnt BIGINT, total BIGINT, lo BIGINT, hi BIGINT, mean DOUBLE";

fn win(ws: &str, size_ms: i64) -> String {
    format!("to_timestamp_millis({ws}) AS window_start, to_timestamp_millis({ws} + {size_ms}) AS window_end")
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
        "SELECT window_start, window_end, bucket, COUNT(*), SUM(price), MIN(price), MAX(price), ROUND(AVG(price), 4)
         FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECOND))
         GROUP BY window_start, window_end, bucket",
        &format!(
            "SELECT {}, auction % 7, COUNT(*), SUM(price), MIN(price), MAX(price), ROUND(AVG(price), 4)
             FROM (SELECT *, CAST(ts AS BIGINT) - CAST(ts AS BIGINT) % 5000 AS ws FROM bids)
             GROUP BY ws, auction % 7",
            win("ws", 5000)
        ),
    )
}

#[test]
fn hopping_windows_match_the_batch_oracle() -> Result<()> {
    let parts: Vec<String> = (0..3)
        .map(|k| format!("SELECT *, CAST(ts AS BIGINT) - CAST(ts AS BIGINT) % 2000 - {} AS ws FROM bids", k * 2000))
        .collect();
    check(
        "hop",
        WIN_COLS,
        "SELECT window_start, window_end, bucket, COUNT(*), SUM(price), MIN(price), MAX(price), ROUND(AVG(price), 4)
         FROM TABLE(HOP(TABLE bids, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '6' SECOND))
         WHERE price < 900
         GROUP BY window_start, window_end, bucket",
        &format!(
            "SELECT {}, auction % 7, COUNT(*), SUM(price), MIN(price), MAX(price), ROUND(AVG(price), 4)
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
        "SELECT window_start, window_end, bucket, COUNT(*), SUM(price), MIN(price), MAX(price), ROUND(AVG(price), 4)
         FROM TABLE(CUMULATE(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '15' SECOND))
         GROUP BY window_start, window_end, bucket",
        &format!(
            "SELECT to_timestamp_millis(ws), to_timestamp_millis(we), auction % 7, COUNT(*), SUM(price), MIN(price), MAX(price), ROUND(AVG(price), 4)
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
