-- How many images and videos of each file format are there, and how much disk do they take?
-- A video counts once, however many of its moments are rows.
SELECT format, count() AS images, round(sum(file_size) / 1e6, 1) AS megabytes
FROM (SELECT any(format) AS format, any(file_size) AS file_size FROM images GROUP BY if(video = '', id, video))
GROUP BY format
ORDER BY images DESC, format
