-- How many images of each file format are there, and how much disk do they take?
SELECT format, count() AS images, round(sum(file_size) / 1e6, 1) AS megabytes
FROM images
GROUP BY format
ORDER BY images DESC, format
