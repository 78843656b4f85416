SELECT auction, NULLIF(auction, 3) AS n, COALESCE(NULLIF(auction, 3), 0) AS c, NULLIF(auction, 3) IS NULL AS was3 FROM bids WHERE bidder = 9;
