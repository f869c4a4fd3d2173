-- Which text queries are asked most often?
SELECT lower(trim(text)) AS query, count() AS searches, round(avg(results), 1) AS avg_results
FROM search_log
WHERE text != ''
GROUP BY query
ORDER BY searches DESC, query
LIMIT 20
