SELECT p.city, COUNT(*) AS n, SUM(b.price) AS s FROM bids b JOIN persons p ON b.bidder = p.id GROUP BY p.city;
