SELECT auction, CASE WHEN price > 400 THEN amount WHEN price > 100 THEN 1 END AS c, COALESCE(CASE WHEN price > 400 THEN 'big' END, channel) AS s FROM bids WHERE bidder = 19;
