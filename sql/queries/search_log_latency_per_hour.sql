-- How fast were searches each hour? Median and 95th percentile of the total (without loading the model)
-- and the 95th percentile of the ClickHouse part, over searches from every origin.
SELECT toStartOfHour(time) AS hour, count() AS searches,
       round(quantile(0.5)(total_ms - model_load_ms), 1) AS p50_total_ms,
       round(quantile(0.95)(total_ms - model_load_ms), 1) AS p95_total_ms,
       round(quantile(0.95)(query_ms), 1) AS p95_query_ms
FROM search_log
GROUP BY hour
ORDER BY hour
