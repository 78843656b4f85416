-- Nexmark q18 (find last bid): each bidder's last bid on each auction (deduplication, keep
-- last). Flink's q18 orders by dateTime only; bids of one bidder on one auction in the same
-- millisecond would then come out in arrival order, so price, channel and url break ties.
-- Ranked over the whole stream this is an updating result: bounded input writes the final one.
CREATE TABLE discard_sink (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR) WITH ('connector' = 'blackhole');
INSERT INTO discard_sink
SELECT auction, bidder, price, channel, url, dateTime, extra
FROM (
    SELECT *, ROW_NUMBER() OVER (
        PARTITION BY bidder, auction ORDER BY dateTime DESC, price DESC, channel DESC, url DESC
    ) AS rank_number
    FROM bid
) WHERE rank_number <= 1;
