-- How many images are there per folder? (the folder each file was loaded from: any catalogue has one; the
-- dashboard shows this instead of images per category where there is no `category` column)
SELECT arrayStringConcat(arrayPopBack(splitByChar('/', path)), '/') AS folder, count() AS images
FROM images
GROUP BY folder
ORDER BY images DESC, folder
LIMIT 50
