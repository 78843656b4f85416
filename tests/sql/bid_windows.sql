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
