-- Nexmark q2 (selection): bids on a fixed set of auctions (auction % 123 = 0).
CREATE TABLE discard_sink (auction BIGINT, price BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO discard_sink SELECT auction, price FROM bid WHERE auction % 123 = 0;
