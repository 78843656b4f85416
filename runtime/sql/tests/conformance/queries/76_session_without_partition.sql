SELECT window_start, window_end, COUNT(*) AS n FROM TABLE(SESSION(TABLE bids, DESCRIPTOR(ts), INTERVAL '2' SECOND)) GROUP BY window_start, window_end;
