-- Which pairs of files are copies of one picture (re-encoded, resized, converted, a little cropped)?
-- By perceptual hash, whatever the CLIP model: `phash` (the layout) within max_distance differing bits and
-- `colour_hash` (the mean colour) within max_colour_distance steps; `clipsearch duplicates` groups these pairs.
-- Parameters: max_distance UInt8 (clipsearch's default 8), max_colour_distance UInt8 (3), bands UInt8 and
-- partitions UInt8 (how candidates are found: 4 and 18 suit max_distance 8 on 100,000 rows, see
-- sql/README.md), max_candidates UInt64 (stop with an error past this many candidate pairs, e.g. 100000000).
-- Not every pair is compared: each of `partitions` fixed shuffles of the 64 phash bits is cut into `bands`
-- bands, and only rows whose hashes agree exactly on one whole band are compared. Hashes fewer than `bands`
-- bits apart always agree on a band; further apart, more shuffles make a miss less likely.
WITH arrayFlatten(arrayMap(shuffle -> arrayMap(
         j -> toUInt64(arraySum(arrayMap(bit -> bitShiftLeft(toUInt64(1), bit),
                  arraySlice(shuffle, intDiv(j * 64, {bands:UInt8}) + 1,
                             intDiv((j + 1) * 64, {bands:UInt8}) - intDiv(j * 64, {bands:UInt8}))))),
         range({bands:UInt8})),
     arrayMap(p -> arraySort(bit -> sipHash64(p, bit), range(64)), range({partitions:UInt8})))) AS masks
SELECT DISTINCT least(x.id, y.id) AS id_a, greatest(x.id, y.id) AS id_b, distance, colour_distance,
       compared  -- candidate pairs compared (a pair sharing several bands counts once per band)
FROM (
    SELECT DISTINCT least(keys[i], keys[j]) AS a, greatest(keys[i], keys[j]) AS b,
           bitCount(bitXor(phashes[i], phashes[j])) AS distance,
           bitCount(bitXor(colours[i], colours[j])) AS colour_distance, compared
    FROM (
        SELECT keys, phashes, colours, candidates AS compared
        FROM (
            -- one row per band value shared by several images: the rows to compare with each other
            SELECT groupArray(key) AS keys, groupArray(phash) AS phashes, groupArray(colour_hash) AS colours,
                   sum(intDiv(count() * (count() - 1), 2)) OVER () AS candidates
            FROM (SELECT cityHash64(id) AS key, assumeNotNull(phash) AS phash, assumeNotNull(colour_hash) AS colour_hash
                  FROM images WHERE phash IS NOT NULL AND colour_hash IS NOT NULL)
            ARRAY JOIN masks AS mask
            GROUP BY mask, bitAnd(phash, mask)
            HAVING count() > 1
        )
        WHERE throwIf(candidates > {max_candidates:UInt64}, 'more candidate pairs than max_candidates') = 0
    )
    ARRAY JOIN arrayEnumerate(keys) AS i
    ARRAY JOIN arrayFilter(j -> keys[i] != keys[j]
                                AND bitCount(bitXor(phashes[i], phashes[j])) <= {max_distance:UInt8}
                                AND bitCount(bitXor(colours[i], colours[j])) <= {max_colour_distance:UInt8},
                           range(i + 1, length(keys) + 1)) AS j
) AS pairs
INNER JOIN (SELECT cityHash64(id) AS key, id FROM images) AS x ON x.key = pairs.a
INNER JOIN (SELECT cityHash64(id) AS key, id FROM images) AS y ON y.key = pairs.b
ORDER BY distance, colour_distance, id_a, id_b
