-- W1 as SQL: the benchmark bid stream filtered on auction % 123 = 0 (bench/run filter-sql).
CREATE TABLE bids WITH ('connector' = 'bids', 'number-of-rows' = '20000000');
CREATE TABLE out (auction BIGINT, bidder BIGINT, price BIGINT, ts TIMESTAMP(3)) WITH ('connector' = 'blackhole');
INSERT INTO out SELECT auction, bidder, price, ts FROM bids WHERE auction % 123 = 0;
