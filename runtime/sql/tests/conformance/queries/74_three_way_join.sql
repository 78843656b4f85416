SELECT p.name, a.item, b.price FROM bids b JOIN auctions a ON b.auction = a.id JOIN persons p ON a.seller = p.id WHERE b.price > 470;
