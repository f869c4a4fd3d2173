-- Which text searches on the page never had a result opened (candidates for judging, or for better words)?
SELECT text, count() AS searches, max(time) AS last_time
FROM search_log
WHERE origin = 'http' AND text != '' AND search_id != ''
GROUP BY text
HAVING countIf(search_id IN (SELECT search_id FROM search_clicks)) = 0
ORDER BY searches DESC, text
