SELECT auction AS k, price FROM bids WHERE price > 480 UNION ALL SELECT id AS k, reserve AS price FROM auctions;
