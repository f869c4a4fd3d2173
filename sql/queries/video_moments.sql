-- At which second of which video does something appear? The best moments of videos for a description.
-- Parameters: query_text String, moments UInt32 (how many per video: 1 for the best, more for each time it
-- shows up).
-- A video is many rows of `images`, one per moment kept when it was loaded (media = 'video', its id in
-- `video`, the moment's `start` and `end` in seconds), so LIMIT n BY video keeps each video's best n.
WITH (SELECT clipTextEmbedding({query_text:String})) AS q
SELECT path, video, start, `end`, duration, round(1 - cosineDistance(embedding, q), 4) AS score
FROM images
WHERE media = 'video'
ORDER BY cosineDistance(embedding, q), id
LIMIT {moments:UInt32} BY video
LIMIT 20
