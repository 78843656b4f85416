SELECT DISTINCT channel FROM bids WHERE channel > 'baidu' AND channel < 'google';
