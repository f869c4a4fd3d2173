-- Which images match a text by their words and by their picture, fused in one ranking?
-- Parameters: text String.
-- Two branches under one ranking, as `clipsearch search --match both` does (--show-sql prints its exact
-- statement): the 50 images whose words (file and folder names, manifest titles, photo metadata, text read in
-- the image, labels: the images.words_* columns) hold the most words of the text, found through their text
-- indexes; and the 50 most similar pictures by CLIP (an exact scan here; clipsearch's own search uses the vector
-- index where there is one). Fused by weighted reciprocal rank: 1.0 / (60 + picture rank) + 1.5 x share /
-- (60 + word rank), a branch an image is missing from adding 0; images of equal word score share a word rank,
-- and `share` is the part of the text's words the image holds. The text is split into words with lower() and
-- splitByNonAlpha(), an approximation of clipsearch's tokenizer (clipsearch/store/words.py also folds Unicode
-- (NFKC), splits at case changes and between letters and digits, one word per CJK character, drops stop words
-- and keeps quoted phrases together), so a word it spells differently can be missed here.
WITH
    (SELECT clipTextEmbedding({text:String})) AS q,
    arrayDistinct(splitByNonAlpha(lower({text:String}))) AS query_words
SELECT id, any(path) AS image_path,
       round(1.0 * coalesce(1 / (60 + max(p_rank)), 0) + 1.5 * max(w_share) * coalesce(1 / (60 + max(w_rank)), 0),
             5) AS score,
       max(p_rank) AS picture_rank, max(w_rank) AS word_rank, round(max(p_score), 4) AS picture_score,
       max(in_name) AS name_words, max(in_title) AS title_words, max(in_meta) AS meta_words,
       max(in_ocr) AS ocr_words, max(in_label) AS label_words
FROM (
    SELECT id, path, p_score, toNullable(row_number() OVER (ORDER BY p_score DESC, id)) AS p_rank,
           CAST(NULL AS Nullable(UInt64)) AS w_rank, toFloat64(0) AS w_share,
           CAST([] AS Array(String)) AS in_name, in_name AS in_title,
           in_name AS in_meta, in_name AS in_ocr, in_name AS in_label
    FROM (
        SELECT id, path, 1 - cosineDistance(embedding, q) AS p_score
        FROM images
        ORDER BY cosineDistance(embedding, q), id
        LIMIT 50
    )
    UNION ALL
    SELECT id, path, p_score, CAST(NULL AS Nullable(UInt64)) AS p_rank,
           toNullable(toUInt64(dense_rank() OVER (ORDER BY w_score DESC))) AS w_rank,
           length(arrayDistinct(arrayConcat(in_name, in_title, in_meta, in_ocr, in_label)))
               / greatest(1, length(query_words)) AS w_share,
           in_name, in_title, in_meta, in_ocr, in_label
    FROM (
        SELECT id, path, 1 - cosineDistance(embedding, q) AS p_score,
               arrayIntersect(query_words, arrayConcat(words_name, words_prefixes)) AS in_name,
               arrayIntersect(query_words, words_title) AS in_title,
               arrayIntersect(query_words, words_meta) AS in_meta,
               arrayIntersect(query_words, words_ocr) AS in_ocr,
               arrayIntersect(query_words, words_label) AS in_label,
               length(in_name) + length(in_title) + length(in_meta) + 0.7 * length(in_ocr)
                   + 0.5 * length(in_label) AS w_score
        FROM images
        -- (the words written out: the text index takes a constant, not a WITH alias; the expression is the
        -- index's own, words_any)
        WHERE hasAnyTokens(arrayConcat(words_name, words_prefixes, words_title, words_meta, words_ocr, words_label),
                           splitByNonAlpha(lower({text:String})))
        ORDER BY w_score DESC, cosineDistance(embedding, q), id
        LIMIT 50
    )
)
GROUP BY id
ORDER BY score DESC, picture_score DESC, id
LIMIT 10
