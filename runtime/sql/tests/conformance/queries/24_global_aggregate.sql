SELECT COUNT(*) AS n, SUM(price) AS s, MIN(ts) AS first_ts, MAX(ts) AS last_ts FROM bids;
