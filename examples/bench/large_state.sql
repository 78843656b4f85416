-- The large-state workload (bench/run large-state): COUNT and SUM per key over one-day
-- tumbling windows, with as many keys as half the events (each key seen twice), so all the
-- window state is live until the end of input. 10 M events: 5 M keys of window state.
CREATE TABLE events (
  id    BIGINT,
  price BIGINT,
  ts    TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (
  'connector' = 'datagen',
  'number-of-rows' = '10000000',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '0',
  'fields.price.kind' = 'random', 'fields.price.min' = '1', 'fields.price.max' = '1000',
  'fields.ts.kind' = 'sequence', 'fields.ts.start' = '1577836800000'
);
CREATE TABLE out (k BIGINT, window_start TIMESTAMP(3), n BIGINT, total BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out
SELECT id % 5000000, window_start, COUNT(*), SUM(price)
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '1' DAY))
GROUP BY id % 5000000, window_start, window_end;
