SELECT channel, AVG(CAST(price AS DOUBLE)) AS a, SUM(CAST(price AS DOUBLE)) / COUNT(*) AS b FROM bids GROUP BY channel;
