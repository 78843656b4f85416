SELECT window_start, window_end, bidder, COUNT(*) AS n FROM TABLE(SESSION(TABLE bids PARTITION BY bidder, DESCRIPTOR(ts), INTERVAL '20' SECOND)) GROUP BY window_start, window_end, bidder;
