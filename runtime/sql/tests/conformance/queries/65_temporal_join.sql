CREATE TABLE auction_versions (
  id BIGINT,
  item STRING,
  seller BIGINT,
  category BIGINT,
  reserve BIGINT,
  ts TIMESTAMP(3),
  PRIMARY KEY (id) NOT ENFORCED,
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '{data}/auctions.csv', 'format' = 'csv');
SELECT b.auction, b.price, a.reserve FROM bids b JOIN auction_versions FOR SYSTEM_TIME AS OF b.ts AS a ON b.auction = a.id WHERE b.bidder = 1;
