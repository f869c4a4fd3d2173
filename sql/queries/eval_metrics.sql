-- How good were the searches of judged queries, per day: precision, recall, nDCG and reciprocal rank of each logged search's top ids (at most 10) against the judgments table, as clipsearch/search/metrics.py computes them?
WITH
    relevant AS (
        SELECT query, arrayFilter(p -> p.2 > 0, groupArray((image_id, grade))) AS graded, length(graded) AS n,
               arrayReverseSort(arrayMap(p -> p.2, graded)) AS ideal
        FROM (SELECT query, image_id, argMax(grade, judged_at) AS grade FROM judgments GROUP BY query, image_id)
        GROUP BY query
        HAVING n > 0
    ),
    scored AS (
        SELECT l.time AS time, l.text AS query, least(l.k, 10) AS kk, r.n AS n,
               arrayMap(id -> toFloat64(arrayFirst(p -> p.1 = id, r.graded).2), arraySlice(l.top_ids, 1, kk)) AS gains,
               arraySlice(r.ideal, 1, kk) AS best,
               arrayCount(g -> g > 0, gains) AS hits,
               arraySum(arrayMap((g, i) -> (pow(2, g) - 1) / log2(i + 1), gains, arrayEnumerate(gains))) AS dcg,
               arraySum(arrayMap((g, i) -> (pow(2, g) - 1) / log2(i + 1), best, arrayEnumerate(best))) AS idcg,
               arrayFirstIndex(g -> g > 0, gains) AS first
        FROM search_log AS l
        INNER JOIN relevant AS r ON l.text = r.query
        WHERE l.kind = 'text'
    )
SELECT toDate(time) AS day, count() AS searches, uniqExact(query) AS queries,
       round(avg(hits / kk), 4) AS precision_at_k, round(avg(hits / n), 4) AS recall_at_k,
       round(avg(if(idcg > 0, dcg / idcg, 0)), 4) AS ndcg_at_k, round(avg(if(first > 0, 1 / first, 0)), 4) AS mrr
FROM scored
GROUP BY day
ORDER BY day
