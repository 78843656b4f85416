-- Bids per auction bucket in 10-second tumbling event-time windows, printed.
-- Run: cargo run --release -p flink-rs -- run examples/sql/bids_per_window.sql
SET 'parallelism.default' = '2';

CREATE TABLE bids (
  auction BIGINT,
  price   BIGINT,
  ts      TIMESTAMP(3),
  bucket  AS auction % 10,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (
  'connector' = 'datagen',
  'number-of-rows' = '100000',
  'fields.auction.kind' = 'random', 'fields.auction.min' = '1000', 'fields.auction.max' = '1099',
  'fields.price.kind' = 'random', 'fields.price.min' = '1', 'fields.price.max' = '500',
  'fields.ts.kind' = 'sequence', 'fields.ts.start' = '1577836800000'
);

CREATE TABLE results (
  window_start TIMESTAMP(3),
  window_end   TIMESTAMP(3),
  bucket       BIGINT,
  bids         BIGINT,
  max_price    BIGINT,
  avg_price    DOUBLE
) WITH ('connector' = 'print');

INSERT INTO results
SELECT window_start, window_end, bucket, COUNT(*), MAX(price), AVG(price)
FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND))
WHERE price > 10
GROUP BY window_start, window_end, bucket;
