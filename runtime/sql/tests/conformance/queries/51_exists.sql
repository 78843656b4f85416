SELECT p.id, p.name FROM persons p WHERE EXISTS (SELECT * FROM bids b WHERE b.bidder = p.id AND b.price > 480);
