SELECT auction % 3 AS k, COUNT(*) AS n, SUM(price) AS s FROM bids GROUP BY auction % 3;
