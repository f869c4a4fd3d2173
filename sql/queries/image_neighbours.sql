-- Which images look most like a given image ("more like this")? The image itself is left out.
-- Parameters: image_id String.
WITH (SELECT embedding FROM images WHERE id = {image_id:String}) AS q
SELECT id, path, round(1 - cosineDistance(embedding, q), 4) AS score
FROM images
WHERE id != {image_id:String}
ORDER BY cosineDistance(embedding, q), id
LIMIT 10
