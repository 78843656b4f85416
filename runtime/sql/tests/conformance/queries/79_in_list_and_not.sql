SELECT auction, channel FROM bids WHERE channel NOT IN ('apple', 'google', 'other') AND NOT (price < 200) AND auction IN (2, 4, 6, 8);
