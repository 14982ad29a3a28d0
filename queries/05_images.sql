-- Images as a table: format and size from each file's header (the format
-- from the bytes, not the name), no pixels decoded.
SELECT regexp_replace(path, '.*/', '') AS file,
       format,
       width,
       height,
       size
FROM read_images('sample-data/images/')
ORDER BY width * height DESC, file;

-- A table over the folder; bad files would stop the query ('on_error' 'null'
-- or 'skip' goes on).
CREATE EXTERNAL TABLE photos STORED AS IMAGES LOCATION 'sample-data/images/';

SELECT format, count(*) AS files, sum(width * height) AS pixels
FROM photos
GROUP BY format
ORDER BY pixels DESC;
