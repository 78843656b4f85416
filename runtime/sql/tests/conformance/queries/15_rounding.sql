SELECT ROUND(amount, 1) AS r, FLOOR(amount) AS f, CEIL(amount) AS c, ABS(price - 250) AS a, MOD(price, 7) AS m FROM bids WHERE bidder = 16;
