SELECT CAST(price AS DOUBLE) AS d, CAST(price AS INT) AS i, CAST(amount AS BIGINT) AS l, CAST(amount AS DECIMAL(5, 1)) AS m, CAST(price AS DECIMAL(8, 3)) AS p FROM bids WHERE bidder = 11;
