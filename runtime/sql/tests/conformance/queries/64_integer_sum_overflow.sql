SELECT channel, SUM(CAST(price AS INT) * 10000000) AS s FROM bids GROUP BY channel;
