-- The Nexmark event stream (Person/Auction/Bid in the standard 1:3:46 proportions) and the
-- Flink Nexmark benchmark's views over it. Each query file starts with these statements.
CREATE TABLE nexmark WITH ('connector' = 'nexmark', 'events.num' = '10000000');

CREATE VIEW person AS
SELECT person.id AS id, person.name AS name, person.emailAddress AS emailAddress,
       person.creditCard AS creditCard, person.city AS city, person.state AS state,
       dateTime, person.extra AS extra
FROM nexmark WHERE event_type = 0;

CREATE VIEW auction AS
SELECT auction.id AS id, auction.itemName AS itemName, auction.description AS description,
       auction.initialBid AS initialBid, auction.reserve AS reserve, dateTime,
       auction.expires AS expires, auction.seller AS seller, auction.category AS category,
       auction.extra AS extra
FROM nexmark WHERE event_type = 1;

CREATE VIEW bid AS
SELECT bid.auction AS auction, bid.bidder AS bidder, bid.price AS price,
       bid.channel AS channel, bid.url AS url, dateTime, bid.extra AS extra
FROM nexmark WHERE event_type = 2;
