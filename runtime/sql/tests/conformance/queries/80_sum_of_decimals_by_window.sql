SELECT window_start, SUM(amount) AS s, AVG(amount) AS a, MAX(amount) - MIN(amount) AS spread FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '2' MINUTE)) GROUP BY window_start, window_end;
