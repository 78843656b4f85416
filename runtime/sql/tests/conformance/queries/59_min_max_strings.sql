SELECT auction, MIN(channel) AS lo, MAX(channel) AS hi, COUNT(channel) AS n FROM bids GROUP BY auction;
