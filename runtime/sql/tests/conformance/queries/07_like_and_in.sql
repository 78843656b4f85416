SELECT auction, channel FROM bids WHERE channel LIKE 'g%' OR auction IN (1, 2);
