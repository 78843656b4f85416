SELECT amount + 1 AS a, amount - amount AS b, amount * 2 AS c, amount * amount AS d, amount / 3 AS e FROM bids WHERE bidder = 7;
