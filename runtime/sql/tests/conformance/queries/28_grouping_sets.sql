SELECT channel, auction % 2 AS parity, COUNT(*) AS n FROM bids GROUP BY GROUPING SETS ((channel), (auction % 2), ());
