SELECT a.id, b.price FROM auctions a LEFT JOIN bids b ON a.id = b.auction AND b.price > 495 AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '30' SECOND;
