SELECT DATE_FORMAT(ts, 'yyyy-MM-dd HH:mm') AS m, COUNT(*) AS n FROM bids GROUP BY DATE_FORMAT(ts, 'yyyy-MM-dd HH:mm');
