-- Joins of media and metadata (README, "Late materialization"): the join
-- moves paths, and the image bytes are read after it, only for the rows it
-- keeps.

SET datafusion.execution.target_partitions = 4;

CREATE OR REPLACE TABLE captions AS
SELECT path, upper(regexp_replace(path, '.*/|\..*', '', 'g')) AS caption
FROM read_images('sample-data/images/')
WHERE path LIKE '%.png' OR path LIKE '%.gif';

-- The image scan reads the listing only; media_fetch reads the kept files.
-- (How many batches each partition of `captions` holds varies from run to
-- run: the scan that made it shares its files between its partitions.)
EXPLAIN SELECT c.caption, i.image
FROM read_images('sample-data/images/') i JOIN captions c ON i.path = c.path;

SELECT c.caption, image_width(i.image) AS width, image_height(i.image) AS height
FROM read_images('sample-data/images/') i JOIN captions c ON i.path = c.path
ORDER BY c.caption;
