SELECT DISTINCT auction % 4 AS k, channel FROM bids;
