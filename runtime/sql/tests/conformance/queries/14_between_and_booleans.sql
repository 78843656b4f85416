SELECT auction, price BETWEEN 100 AND 200 AS mid, price > 250 AND channel <> 'apple' AS big FROM bids WHERE bidder = 15;
