SELECT auction, CASE WHEN price < 100 THEN 'low' WHEN price < 300 THEN 'mid' ELSE 'high' END AS band FROM bids WHERE bidder < 4;
