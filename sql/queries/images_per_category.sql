-- How many images are there per category? (`category` is a manifest column: a table loaded without one
-- has no such column, and the dashboard shows images_per_folder.sql instead.)
SELECT category, uniqExact(if(video = '', id, video)) AS images   -- a video counts once, not once per moment
FROM images
GROUP BY category
ORDER BY images DESC, category
