-- For each category, which 3 images best match a description?
-- Parameters: query_text String.
WITH (SELECT clipTextEmbedding({query_text:String})) AS q
SELECT category, id, path, round(1 - cosineDistance(embedding, q), 4) AS score
FROM images
ORDER BY category, cosineDistance(embedding, q), id
LIMIT 3 BY category
