-- How many of the page's searches per hour had a result opened (click-through)?
SELECT toStartOfHour(time) AS hour, count() AS searches,
       countIf(search_id IN (SELECT search_id FROM search_clicks)) AS opened,
       round(opened / searches, 3) AS click_through
FROM search_log
WHERE origin = 'http' AND search_id != ''
GROUP BY hour
ORDER BY hour
