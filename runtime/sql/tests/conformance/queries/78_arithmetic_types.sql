SELECT price + 1.5 AS a, price * 2.0 AS b, CAST(price AS DOUBLE) / 3 AS c, price / 4 AS d, CAST(price AS INT) + CAST(1 AS TINYINT) AS e, amount * 1.5 AS f FROM bids WHERE bidder = 21;
