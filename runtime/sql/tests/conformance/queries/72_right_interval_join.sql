SELECT a.id, b.bidder, b.price FROM (SELECT * FROM bids WHERE price > 490) b RIGHT JOIN auctions a ON a.id = b.auction AND b.ts BETWEEN a.ts - INTERVAL '1' MINUTE AND a.ts + INTERVAL '1' MINUTE;
