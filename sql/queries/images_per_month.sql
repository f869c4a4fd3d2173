-- How many images are from each month? The month a photo was taken (EXIF) where known, else its file's
-- modification time, else when it was loaded; with_exif_date counts the first kind. A video counts once
-- (by its creation time), however many of its moments are rows.
SELECT toStartOfMonth(coalesce(taken_at, modified_at, loaded_at)) AS month,
       uniqExact(if(video = '', id, video)) AS images,
       uniqExactIf(if(video = '', id, video), taken_at IS NOT NULL) AS with_exif_date
FROM images
GROUP BY month
ORDER BY month
