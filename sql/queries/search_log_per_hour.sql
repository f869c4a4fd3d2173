-- How many searches of each kind were made per hour?
SELECT toStartOfHour(time) AS hour, kind, count() AS searches
FROM search_log
GROUP BY hour, kind
ORDER BY hour, kind
