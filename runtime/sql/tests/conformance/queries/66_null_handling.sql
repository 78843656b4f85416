SELECT auction, COUNT(n) AS non_null, COUNT(*) AS all_rows, SUM(n) AS s, MIN(n) AS lo, AVG(n) AS a FROM (SELECT auction, CASE WHEN price > 250 THEN price END AS n FROM bids) GROUP BY auction;
