SELECT auction, COUNT(DISTINCT bidder) AS bidders, COUNT(DISTINCT channel) AS channels FROM bids GROUP BY auction;
