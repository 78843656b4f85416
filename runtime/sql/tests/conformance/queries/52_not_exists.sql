SELECT p.id, p.name FROM persons p WHERE NOT EXISTS (SELECT * FROM bids b WHERE b.bidder = p.id AND b.price > 450);
