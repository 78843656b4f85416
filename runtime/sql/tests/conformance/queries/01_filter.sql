SELECT auction, bidder, price FROM bids WHERE price > 450;
