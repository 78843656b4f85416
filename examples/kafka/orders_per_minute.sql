-- Orders (JSON on topic `orders`) → revenue per product and minute → topic
-- `revenue_per_minute`, exactly once (read it with isolation.level=read_committed).
-- Runs on the compose cluster of this folder (the broker is kafka:19092 there).
SET 'execution.checkpointing.interval' = '10 s';
SET 'parallelism.default' = '2';

CREATE TABLE orders (
  order_id   BIGINT,
  product    STRING,
  amount     BIGINT,
  ts         TIMESTAMP(3),
  part       INT METADATA FROM 'partition' VIRTUAL,
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = 'orders',
  'properties.bootstrap.servers' = 'kafka:19092',
  'properties.group.id' = 'revenue-per-minute',
  'properties.auto.offset.reset' = 'earliest',
  'scan.watermark.idle-timeout' = '30 s',
  'format' = 'json'
);

CREATE TABLE revenue_per_minute (
  product      STRING,
  window_start TIMESTAMP(3),
  revenue      BIGINT,
  orders       BIGINT
) WITH (
  'connector' = 'kafka',
  'topic' = 'revenue_per_minute',
  'properties.bootstrap.servers' = 'kafka:19092',
  'key.format' = 'raw',
  'key.fields' = 'product',
  'format' = 'json',
  'sink.delivery-guarantee' = 'exactly-once',
  'sink.transactional-id-prefix' = 'revenue-per-minute'
);

INSERT INTO revenue_per_minute
SELECT product, window_start, SUM(amount), COUNT(*)
FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
GROUP BY product, window_start, window_end;
