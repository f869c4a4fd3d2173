-- Do two models agree? The 10 images most like a given one by the store's model (images.embedding) beside
-- the 10 by another model whose vectors are kept (`clipsearch reembed --keep`: table embeddings), rank by
-- rank, each marked if the other model's list has it too.
-- Parameters: image_id String, other_model String (a model label from `clipsearch models`).
WITH
    (SELECT any(embedding) FROM images WHERE id = {image_id:String}) AS q_active,
    (SELECT any(embedding) FROM embeddings WHERE model = {other_model:String} AND id = {image_id:String}) AS q_other,
    (SELECT groupArray(id) FROM (SELECT id FROM images WHERE id != {image_id:String}
                                 ORDER BY cosineDistance(embedding, q_active), id LIMIT 10)) AS by_active,
    (SELECT groupArray(id) FROM (SELECT id FROM embeddings FINAL
                                 WHERE model = {other_model:String} AND id != {image_id:String}
                                 ORDER BY cosineDistance(embedding, q_other), id LIMIT 10)) AS by_other
SELECT rank,
       by_active[rank] AS active_model_id,
       has(by_other, active_model_id) AS in_other_list,
       by_other[rank] AS other_model_id,
       has(by_active, other_model_id) AS in_active_list,
       length(arrayIntersect(by_active, by_other)) AS shared
FROM (SELECT arrayJoin(range(1, greatest(length(by_active), length(by_other)) + 1)) AS rank)
ORDER BY rank
