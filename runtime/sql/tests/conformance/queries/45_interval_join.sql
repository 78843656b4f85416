SELECT a.id, a.item, b.bidder, b.price FROM auctions a JOIN bids b ON a.id = b.auction AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '1' MINUTE;
