-- Nexmark q19 (auction Top-N): the 10 highest bids of each auction, ties broken by time and
-- bidder. Ranked over the whole stream this is an updating result, so bounded input only: the
-- final ranking is written when the input ends (per-window Top-N runs on unbounded input).
CREATE TABLE discard_sink (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR, rank_number BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO discard_sink
SELECT * FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC, dateTime, bidder) AS rank_number
    FROM bid
) WHERE rank_number <= 10;
