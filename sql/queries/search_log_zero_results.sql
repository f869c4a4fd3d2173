-- Which searches found nothing (usually a filter that matches no rows)?
SELECT text, filters, count() AS times, max(time) AS last_time
FROM search_log
WHERE results = 0
GROUP BY text, filters
ORDER BY times DESC, text
