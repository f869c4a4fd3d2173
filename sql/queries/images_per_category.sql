-- How many images are there per category? (`category` is a manifest column: a table loaded without one
-- has no such column, and the dashboard shows images_per_folder.sql instead.)
SELECT category, count() AS images
FROM images
GROUP BY category
ORDER BY images DESC, category
