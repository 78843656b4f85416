SELECT auction, price * 2 + 1 AS a, price / 3 AS b, price % 7 AS c, -price AS d FROM bids WHERE bidder = 3;
