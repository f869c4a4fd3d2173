-- How many images does each model cover, with vectors of which size, and are any vectors missing?
SELECT model, count() AS images, countIf(length(embedding) = 0) AS missing_vectors,
       min(length(embedding)) AS dim_min, max(length(embedding)) AS dim_max,
       min(loaded_at) AS first_loaded, max(loaded_at) AS last_loaded
FROM images
GROUP BY model
ORDER BY model
