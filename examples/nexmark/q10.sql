-- Nexmark q10 (log to file system): every bid written to files partitioned by day and
-- minute. Flink's version also commits partitions (a _SUCCESS file one minute after a
-- partition's time, 'sink.partition-commit.*'), which flink-rs does not do yet; the files
-- themselves are exactly-once, rolled every minute and on every checkpoint.
CREATE TABLE fs_sink (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  dateTime TIMESTAMP(3),
  extra VARCHAR,
  dt STRING,
  hm STRING
) PARTITIONED BY (dt, hm) WITH (
  'connector' = 'filesystem',
  'path' = 'file:///tmp/flink-rs-nexmark-q10',
  'format' = 'csv',
  'sink.rolling-policy.rollover-interval' = '1 min'
);
INSERT INTO fs_sink
SELECT auction, bidder, price, dateTime, extra, DATE_FORMAT(dateTime, 'yyyy-MM-dd'), DATE_FORMAT(dateTime, 'HH:mm')
FROM bid;
