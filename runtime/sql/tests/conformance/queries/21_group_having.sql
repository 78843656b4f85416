SELECT auction, COUNT(*) AS n FROM bids GROUP BY auction HAVING COUNT(*) > 30;
