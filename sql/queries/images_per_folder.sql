-- How many images are there per folder? (the folder each file was loaded from: any catalogue has one; the
-- dashboard shows this instead of images per category where there is no `category` column); a video counts once
SELECT arrayStringConcat(arrayPopBack(splitByChar('/', path)), '/') AS folder, uniqExact(if(video = '', id, video)) AS images
FROM images
GROUP BY folder
ORDER BY images DESC, folder
LIMIT 50
