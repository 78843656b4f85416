SELECT channel, auction % 2 AS parity, SUM(price) AS s FROM bids GROUP BY ROLLUP (channel, auction % 2);
