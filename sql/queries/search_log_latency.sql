-- How fast are searches, per day and origin (http, cli, python)? Median and 95th percentile of the
-- total without loading the model (a CLI search loads it first: model_load_ms), and of the ClickHouse part.
SELECT toDate(time) AS day, origin, count() AS searches,
       round(quantile(0.5)(total_ms - model_load_ms), 1) AS p50_total_ms,
       round(quantile(0.95)(total_ms - model_load_ms), 1) AS p95_total_ms,
       round(quantile(0.95)(query_ms), 1) AS p95_query_ms,
       round(max(model_load_ms), 1) AS max_model_load_ms
FROM search_log
GROUP BY day, origin
ORDER BY day, origin
