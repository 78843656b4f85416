SELECT auction, price FROM bids WHERE NULLIF(auction, 4) IS DISTINCT FROM 5 AND bidder = 6;
