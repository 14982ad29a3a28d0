-- How model calls run (README, "How model calls run: InferenceExec"):
-- every model function runs in one operator that gathers rows from all
-- partitions into calls of batch_size rows, while the work upstream of
-- the model keeps going.

CREATE OR REPLACE MODEL minilm TYPE bert FROM 'sample-data/models/all-minilm-l6-v2'
    OPTIONS (batch_size '32');

SET datafusion.execution.target_partitions = 4;

-- 400 short texts in 4 partitions (the hash-partitioned aggregate's).
CREATE OR REPLACE TABLE phrases AS
SELECT a.w || ' ' || b.w AS text, min(a.n * 20 + b.n) AS id
FROM (SELECT column1 AS w, column2 AS n FROM (VALUES
        ('red', 0), ('blue', 1), ('green', 2), ('small', 3), ('large', 4), ('old', 5), ('new', 6),
        ('fast', 7), ('slow', 8), ('happy', 9), ('quiet', 10), ('loud', 11), ('warm', 12), ('cold', 13),
        ('bright', 14), ('dark', 15), ('soft', 16), ('hard', 17), ('wet', 18), ('dry', 19))) a
CROSS JOIN (SELECT column1 AS w, column2 AS n FROM (VALUES
        ('car', 0), ('dog', 1), ('house', 2), ('tree', 3), ('river', 4), ('song', 5), ('book', 6),
        ('city', 7), ('storm', 8), ('cat', 9), ('boat', 10), ('road', 11), ('lamp', 12), ('door', 13),
        ('bird', 14), ('field', 15), ('train', 16), ('stone', 17), ('cloud', 18), ('chair', 19))) b
GROUP BY a.w || ' ' || b.w;

-- The plan: InferenceExec with its settings (batch_size from the model).
EXPLAIN SELECT id, embed_text('minilm', text) FROM phrases;

-- The knobs are per session.
SET quiver.inference.batch_size = 64;
SHOW quiver.inference.batch_size;

-- The phrases closest in meaning to a query, over 400 rows embedded in
-- calls of 64 rows gathered from the 4 partitions.
SELECT text, round(cosine_similarity(embed_text('minilm', text), embed_text('minilm', 'a wet animal')), 3) AS score
FROM phrases
ORDER BY score DESC
LIMIT 5;

-- A WHERE runs its conditions that read no model column first: the model
-- sees only the 200 phrases with an even id (EXPLAIN shows a FilterExec
-- below InferenceExec and one above it).
SELECT count(*) AS close_to_an_animal
FROM phrases
WHERE id % 2 = 0
  AND cosine_similarity(embed_text('minilm', text), embed_text('minilm', 'an animal')) > 0.3;

-- Model calls in GROUP BY and aggregates are batched the same way.
SELECT embed_text('minilm', text)[1] > 0 AS first_dimension_positive, count(*) AS phrases
FROM phrases
GROUP BY 1
ORDER BY 1;
