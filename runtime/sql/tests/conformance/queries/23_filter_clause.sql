SELECT channel, COUNT(*) FILTER (WHERE price > 250) AS big, SUM(price) FILTER (WHERE auction < 6) AS low_total FROM bids GROUP BY channel;
