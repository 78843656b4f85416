SELECT SPLIT_INDEX(url, '/', 3) AS part, REGEXP_EXTRACT(url, 'channel_id=([0-9]+)', 1) AS ch FROM bids WHERE bidder = 13;
