SELECT auction, price FROM bids WHERE auction IN (SELECT id FROM auctions WHERE category = 11) AND bidder < 10;
