-- Image classification in SQL: EfficientNet-Lite0 (imported from its PyPI
-- wheel, ImageNet labels) over a folder of photographs, on the CPU.

CREATE OR REPLACE MODEL lite0 TYPE efficientnet FROM 'sample-data/models/efficientnet-lite0'
    OPTIONS (batch_size '32');

-- The top 3 classes of each public-domain photograph.
SELECT regexp_replace(path, '.*/', '') AS photo,
       c[1]['label'] AS label, round(c[1]['score'], 3) AS p,
       c[2]['label'] AS second, c[3]['label'] AS third
FROM (SELECT path, classify_image('lite0', image, 3) AS c FROM read_images('sample-data/photos/'))
ORDER BY photo;

-- The generated sample images: what the model makes of them, and how sure
-- it is (try_ gives NULL for a file that does not decode).
SELECT regexp_replace(path, '.*/', '') AS image, width, height,
       c[1]['label'] AS label, round(c[1]['score'], 3) AS p
FROM (SELECT path, width, height, try_classify_image('lite0', image, 1) AS c
      FROM read_images('sample-data/images/'))
ORDER BY image;
