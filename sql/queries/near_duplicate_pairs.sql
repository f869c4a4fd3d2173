-- Which pairs of distinct files are near-duplicates (copies, re-encodes, resized versions)?
-- Parameters: max_distance Float64 (cosine distance). For the bundled model 0.005: it places distinct
-- images of one colour and shape only ~0.01 apart, a resized re-encode ~0.002.
-- An all-pairs self-join: fine for tens of thousands of rows. For large tables use
-- `clipsearch duplicates --mode similar` (or GET /api/duplicates?mode=similar): the same pairs,
-- found through hashing in SQL and checked with the same cosineDistance, grouped into sets
-- (tests/test_duplicates.py checks that both return the same pairs). Copies of one picture whatever
-- the model: near_copy_pairs.sql.
SELECT a.id AS id_a, b.id AS id_b, a.path AS path_a, b.path AS path_b,
       round(cosineDistance(a.embedding, b.embedding), 5) AS distance
FROM images AS a CROSS JOIN images AS b
WHERE a.id < b.id AND cosineDistance(a.embedding, b.embedding) <= {max_distance:Float64}
ORDER BY distance, id_a, id_b
