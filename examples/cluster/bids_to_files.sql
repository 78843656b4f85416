-- Bids per auction bucket in 1-second tumbling windows, written exactly-once to CSV part
-- files. Rate-limited so that it runs for a while on a cluster (about 20 s at the default).
-- Submit: flink-rs job submit examples/cluster/bids_to_files.sql (output in /tmp/flink-rs-bids-out)
SET 'parallelism.default' = '2';
SET 'execution.checkpointing.interval' = '1 s';

CREATE TABLE bids (
  auction BIGINT,
  price   BIGINT,
  ts      TIMESTAMP(3),
  bucket  AS auction % 10,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (
  'connector' = 'datagen',
  'number-of-rows' = '200000',
  'rows-per-second' = '10000',
  'fields.auction.kind' = 'random', 'fields.auction.min' = '1000', 'fields.auction.max' = '1099',
  'fields.price.kind' = 'random', 'fields.price.min' = '1', 'fields.price.max' = '500',
  'fields.ts.kind' = 'sequence', 'fields.ts.start' = '1577836800000'
);

CREATE TABLE results (
  window_start TIMESTAMP(3),
  window_end   TIMESTAMP(3),
  bucket       BIGINT,
  bids         BIGINT,
  max_price    BIGINT
) WITH ('connector' = 'filesystem', 'path' = '/tmp/flink-rs-bids-out', 'format' = 'csv');

INSERT INTO results
SELECT window_start, window_end, bucket, COUNT(*), MAX(price)
FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND))
GROUP BY window_start, window_end, bucket;
