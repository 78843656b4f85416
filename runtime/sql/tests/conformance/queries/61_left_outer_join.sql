SELECT a.id, COUNT(b.price) AS n FROM auctions a LEFT JOIN (SELECT * FROM bids WHERE price > 490) b ON a.id = b.auction GROUP BY a.id;
