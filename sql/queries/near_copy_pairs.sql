-- Which pairs of files are copies of one picture (re-encoded, resized, converted, cropped a little, framed)?
-- By perceptual hashes, whatever the CLIP model (clipsearch/hashes.py). Each image is seen twice: whole and its
-- central 85%; each view has a grey layout (`phash`, `centre_phash`) and a colour layout (`chroma_hash`,
-- `centre_chroma_hash`). Two images are copies when one view of each, whole/whole, centre/centre or centre/whole
-- (a crop shows about the middle of its original; a frame falls outside the middle), is within max_distance
-- differing grey bits and max_chroma_distance colour-layout bits, and their mean colours (`colour_hash`) within
-- max_colour_distance steps. `clipsearch duplicates` groups these pairs; `distance` is that of the closest views.
-- Parameters: max_distance UInt8 (clipsearch's default 10), max_chroma_distance UInt8 (6), max_colour_distance
-- UInt8 (3), bands UInt8 and partitions UInt8 (how candidates are found: 5 and 14 suit max_distance 10 on
-- 100,000 rows, see sql/README.md), max_candidates UInt64 (stop with an error past this many candidate pairs,
-- e.g. 100000000).
-- Not every pair is compared: each of `partitions` fixed shuffles of the 64 bits of a grey layout is cut into
-- `bands` bands, and only images with a view each whose grey layouts agree exactly on one whole band are
-- compared. Hashes fewer than `bands` bits apart always agree on a band; further apart, more shuffles make a
-- miss less likely.
WITH arrayFlatten(arrayMap(shuffle -> arrayMap(
         j -> toUInt64(arraySum(arrayMap(bit -> bitShiftLeft(toUInt64(1), bit),
                  arraySlice(shuffle, intDiv(j * 64, {bands:UInt8}) + 1,
                             intDiv((j + 1) * 64, {bands:UInt8}) - intDiv(j * 64, {bands:UInt8}))))),
         range({bands:UInt8})),
     arrayMap(p -> arraySort(bit -> sipHash64(p, bit), range(64)), range({partitions:UInt8})))) AS masks,
     -- every image with its hashes, numbered by position: the bands below hold these numbers, not the hashes
     (SELECT groupArray((id, assumeNotNull(phash), assumeNotNull(chroma_hash), assumeNotNull(centre_phash),
                         assumeNotNull(centre_chroma_hash), assumeNotNull(colour_hash)))
      FROM images
      WHERE phash IS NOT NULL AND colour_hash IS NOT NULL AND centre_phash IS NOT NULL
            AND chroma_hash IS NOT NULL AND centre_chroma_hash IS NOT NULL) AS hashed
SELECT DISTINCT id_a, id_b, distance, colour_distance,
       compared  -- candidate pairs compared (a pair sharing several bands counts once per band)
FROM (
    SELECT hashed[a] AS x, hashed[b] AS y, least(x.1, y.1) AS id_a, greatest(x.1, y.1) AS id_b,
           -- the fewest grey bits between a view of each image (whole: .2 and .3, centre: .4 and .5) whose
           -- colour layouts agree too: whole/whole, centre/centre, centre/whole, whole/centre (255: none do)
           least(if(bitCount(bitXor(x.3, y.3)) <= {max_chroma_distance:UInt8}, bitCount(bitXor(x.2, y.2)), 255),
                 if(bitCount(bitXor(x.5, y.5)) <= {max_chroma_distance:UInt8}, bitCount(bitXor(x.4, y.4)), 255),
                 if(bitCount(bitXor(x.5, y.3)) <= {max_chroma_distance:UInt8}, bitCount(bitXor(x.4, y.2)), 255),
                 if(bitCount(bitXor(x.3, y.5)) <= {max_chroma_distance:UInt8}, bitCount(bitXor(x.2, y.4)), 255))
               AS distance,
           bitCount(bitXor(x.6, y.6)) AS colour_distance, compared
    FROM (
        SELECT members[i] AS a, members[j] AS b, compared
        FROM (
            SELECT members, arrayMap(n -> hashed[n].6, members) AS colours, candidates AS compared
            FROM (
                -- one row per band value shared by the views of several images: the images to compare
                SELECT groupArray(n) AS members, sum(intDiv(count() * (count() - 1), 2)) OVER () AS candidates
                FROM (SELECT arrayJoin(range(1, length(hashed) + 1)) AS n)
                ARRAY JOIN masks AS mask
                ARRAY JOIN [hashed[n].2, hashed[n].4] AS view  -- the grey layouts of the whole and the centre
                GROUP BY mask, bitAnd(view, mask)
                HAVING count() > 1
            )
            WHERE throwIf(candidates > {max_candidates:UInt64}, 'more candidate pairs than max_candidates') = 0
        )
        ARRAY JOIN arrayEnumerate(members) AS i
        -- the later images in the band, another image than this one, whose mean colour is close
        ARRAY JOIN arrayFilter(j -> members[i] != members[j]
                                    AND bitCount(bitXor(colours[i], colours[j])) <= {max_colour_distance:UInt8},
                               range(i + 1, length(members) + 1)) AS j
    )
)
WHERE distance <= {max_distance:UInt8}
ORDER BY distance, colour_distance, id_a, id_b
