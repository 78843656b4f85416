SELECT auction, price * 0.908 AS dol, price / 2.0 AS half FROM bids WHERE bidder = 5;
