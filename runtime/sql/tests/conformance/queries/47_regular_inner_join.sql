SELECT b.auction, a.category, b.price FROM bids b JOIN auctions a ON b.auction = a.id WHERE b.price > 400;
