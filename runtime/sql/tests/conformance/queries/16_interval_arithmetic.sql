SELECT ts + INTERVAL '1' MINUTE AS later, ts - INTERVAL '2' SECOND AS earlier FROM bids WHERE bidder = 17;
