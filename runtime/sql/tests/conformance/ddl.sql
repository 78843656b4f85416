-- The suite's input tables; `{data}` is this directory's data/ folder. Every query runs after
-- these statements, in streaming mode at parallelism 1 (Flink) and 1 and 3 (flink-rs).
CREATE TABLE bids (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  amount DECIMAL(10, 2),
  channel STRING,
  url STRING,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '{data}/bids.csv', 'format' = 'csv');
CREATE TABLE auctions (
  id BIGINT,
  item STRING,
  seller BIGINT,
  category BIGINT,
  reserve BIGINT,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '{data}/auctions.csv', 'format' = 'csv');
CREATE TABLE persons (
  id BIGINT,
  name STRING,
  city STRING,
  state STRING,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '{data}/persons.csv', 'format' = 'csv');
