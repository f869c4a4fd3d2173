-- Which results were opened from which text searches since a day (clicks as judgments: graded by how many searches opened them, at most 3)?
SELECT l.query AS query, c.image_id AS image_id, toUInt8(least(3, uniqExact(c.search_id))) AS grade,
       count() AS clicks, max(c.time) AS last_opened
FROM search_clicks AS c
INNER JOIN (SELECT search_id, any(text) AS query FROM search_log
            WHERE search_id != '' AND text != '' AND time >= {since:Date} GROUP BY search_id) AS l
    ON c.search_id = l.search_id
GROUP BY query, image_id
ORDER BY query, grade DESC, image_id
