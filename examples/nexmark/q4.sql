-- Nexmark q4 (average price per category): the winning bid of each auction (bids between its
-- start and its expiry), averaged per category. An updating result, so bounded input only:
-- the final averages are written when the input ends.
CREATE TABLE discard_sink (id BIGINT, final DOUBLE) WITH ('connector' = 'blackhole');
INSERT INTO discard_sink
SELECT Q.category, AVG(Q.final)
FROM (
    SELECT MAX(B.price) AS final, A.category
    FROM auction A, bid B
    WHERE A.id = B.auction AND B.dateTime BETWEEN A.dateTime AND A.expires
    GROUP BY A.id, A.category
) Q
GROUP BY Q.category;
