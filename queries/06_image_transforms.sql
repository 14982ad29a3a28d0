-- Images decoded and transformed in SQL: EXIF, orientation, thumbnails
-- written back as files, and tensors for a vision model.

-- The EXIF block of the one photo that has one.
SELECT regexp_replace(path, '^.*/', '') AS file,
       exif['make'] AS make,
       exif['model'] AS model,
       exif['taken_at'] AS taken_at,
       exif['orientation'] AS orientation,
       round(exif['gps_latitude'], 4) AS latitude,
       round(exif['gps_longitude'], 4) AS longitude
FROM read_images('sample-data/images/')
WHERE exif IS NOT NULL;

-- Orientation 6: the camera was turned; image_auto_orient turns it upright.
SELECT image, image_auto_orient(image) AS upright
FROM read_images('sample-data/images/beach.jpg');

-- Thumbnails written back, one JPEG per image (COPY returns the count).
COPY (
  SELECT split_part(regexp_replace(path, '^.*/', ''), '.', 1) AS name,
         image_encode(image_thumbnail(image, 64), 'jpeg', 80) AS thumb
  FROM read_images('sample-data/images/')
) TO 'sample-data/thumbs/' STORED AS IMAGES OPTIONS (path_column 'name');

SELECT regexp_replace(path, '^.*/', '') AS file, image AS thumbnail
FROM read_images('sample-data/thumbs/')
ORDER BY file;

-- Model input: 3x224x224 tensors, normalised with ImageNet's mean and std.
SELECT regexp_replace(path, '^.*/', '') AS file,
       array_length(t) AS values,
       round(array_min(t), 3) AS min,
       round(array_max(t), 3) AS max
FROM (
  SELECT path, image_to_tensor(image, 224, 224, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]) AS t
  FROM read_images('sample-data/images/')
)
ORDER BY file;
