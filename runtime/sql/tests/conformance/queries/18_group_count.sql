SELECT channel, COUNT(*) AS n FROM bids GROUP BY channel;
