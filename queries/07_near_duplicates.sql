-- Near-duplicate images by perceptual hash: pairs whose 64-bit hashes
-- differ in few bits show the same scene (here the beach photo and its
-- smaller copy); different scenes differ in about half the bits.
WITH h AS (
  SELECT regexp_replace(path, '^.*/', '') AS file,
         image_phash(image) AS phash,
         image_dhash(image) AS dhash
  FROM read_images('sample-data/images/')
)
SELECT a.file,
       b.file AS other,
       hamming_distance(a.phash, b.phash) AS phash_bits,
       hamming_distance(a.dhash, b.dhash) AS dhash_bits,
       hamming_distance(a.phash, b.phash) <= 8 AS near_duplicate
FROM h a JOIN h b ON a.file < b.file
ORDER BY phash_bits, a.file, other
LIMIT 5;
