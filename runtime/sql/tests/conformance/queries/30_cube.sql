SELECT channel, auction % 2 AS parity, COUNT(*) AS n FROM bids GROUP BY CUBE (channel, auction % 2);
