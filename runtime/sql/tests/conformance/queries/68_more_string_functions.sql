SELECT LPAD(channel, 10, '*') AS l, RPAD(channel, 9, '-') AS r, POSITION('o' IN channel) AS p, INITCAP(channel) AS i, channel || '!' AS e, REVERSE(channel) AS v FROM bids WHERE bidder = 18;
