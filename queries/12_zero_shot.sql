-- Zero-shot labels and search by description with CLIP. The sample's
-- tiny-clip has CLIP's real layout but generated weights, so its answers
-- mean nothing; with OpenAI's weights (README, "Models in SQL") the same
-- queries label and find photos.

CREATE OR REPLACE MODEL clip TYPE clip FROM 'sample-data/models/tiny-clip';

-- The most likely of three descriptions for each image.
SELECT regexp_replace(path, '.*/', '') AS image,
       c[1]['label'] AS label, round(c[1]['score'], 3) AS p
FROM (SELECT path, clip_classify('clip', image, ['a photo of a beach', 'a photo of a forest', 'a city at night'], 1) AS c
      FROM read_images('sample-data/images/'))
ORDER BY image;

-- Images ranked by similarity to a text.
SELECT regexp_replace(path, '.*/', '') AS image,
       round(cosine_similarity(embed_image('clip', image), embed_text('clip', 'a sunny beach')), 3) AS similarity
FROM read_images('sample-data/images/')
ORDER BY similarity DESC, image
LIMIT 3;
