-- How fast are searches: median and 95th percentile of the total and the ClickHouse part, per day?
SELECT toDate(time) AS day, count() AS searches,
       round(quantile(0.5)(total_ms), 1) AS p50_total_ms, round(quantile(0.95)(total_ms), 1) AS p95_total_ms,
       round(quantile(0.95)(query_ms), 1) AS p95_query_ms
FROM search_log
GROUP BY day
ORDER BY day
