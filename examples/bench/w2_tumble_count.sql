-- W2 as SQL: bids per auction % 10000 in 10 s tumbling event-time windows, watermark
-- ts - 1 s (bench/run tumble-count-sql).
CREATE TABLE bids WITH ('connector' = 'bids', 'number-of-rows' = '20000000');
CREATE VIEW keyed AS SELECT auction % 10000 AS k, ts FROM bids;
CREATE TABLE out (k BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3), n BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out
SELECT k, window_start, window_end, COUNT(*)
FROM TABLE(TUMBLE(TABLE keyed, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY k, window_start, window_end;
