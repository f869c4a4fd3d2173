-- Which images best match a description, among those in a category under a price?
-- Parameters: query_text String, category String, max_price Float64.
-- clipTextEmbedding() runs once, in the scalar subquery; the ranking is an exact scan.
WITH (SELECT clipTextEmbedding({query_text:String})) AS q
SELECT id, path, category, price, round(1 - cosineDistance(embedding, q), 4) AS score
FROM images
WHERE category = {category:String} AND price <= {max_price:Float64}
ORDER BY cosineDistance(embedding, q), id
LIMIT 10
