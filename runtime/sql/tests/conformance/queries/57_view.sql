CREATE VIEW expensive AS SELECT auction, price, channel FROM bids WHERE price > 300;
SELECT channel, COUNT(*) AS n FROM expensive GROUP BY channel;
