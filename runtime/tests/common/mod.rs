//! Helpers shared by the cluster and compose tests.
#![allow(dead_code)]

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
CREATE TABLE bids (
  auction BIGINT, price BIGINT, ts TIMESTAMP(3), bucket AS auction % 10,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (
  'connector' = 'datagen', 'number-of-rows' = '{rows}', {rate}
  'fields.auction.kind' = 'random', 'fields.auction.min' = '1000', 'fields.auction.max' = '1099',
  'fields.price.kind' = 'random', 'fields.price.min' = '1', 'fields.price.max' = '500',
  'fields.ts.kind' = 'sequence', 'fields.ts.start' = '1577836800000'
);
CREATE TABLE results (
  window_start TIMESTAMP(3), window_end TIMESTAMP(3), bucket BIGINT, bids BIGINT, max_price BIGINT
) WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'csv');
INSERT INTO results
SELECT window_start, window_end, bucket, COUNT(*), MAX(price)
FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND))
GROUP BY window_start, window_end, bucket;
"
    )
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
