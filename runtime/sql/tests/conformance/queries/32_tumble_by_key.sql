SELECT window_start, window_end, auction, COUNT(*) AS n, MAX(price) AS hi FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '2' MINUTE)) GROUP BY window_start, window_end, auction;
