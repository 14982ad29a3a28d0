-- Models in SQL: register a sentence embedder from local files (no hub, no
-- Python), embed text, and search by meaning.

-- all-MiniLM-L6-v2, as imported from its PyPI wheel (see README, "Models").
CREATE OR REPLACE MODEL minilm TYPE bert FROM 'sample-data/models/all-minilm-l6-v2'
    OPTIONS (device 'cpu', batch_size '64');

DESCRIBE MODEL minilm;

-- A few support tickets to search.
CREATE OR REPLACE TABLE tickets AS VALUES
    (1, 'My card was charged twice for the same order'),
    (2, 'The parcel arrived damaged, the box was crushed'),
    (3, 'How do I reset my password?'),
    (4, 'I was billed two times this month'),
    (5, 'Delivery is three weeks late and nobody answers'),
    (6, 'Cannot log in after changing my email address'),
    (7, 'The blender makes a grinding noise'),
    (8, 'Please cancel my subscription');

-- Embed every ticket once (384 floats each, unit length).
CREATE OR REPLACE TABLE ticket_vectors AS
SELECT column1 AS id, column2 AS text, embed_text('minilm', column2) AS embedding
FROM tickets;

-- Semantic search: the query is embedded once, the top 3 kept without
-- sorting everything.
SELECT id, text,
       round(cosine_similarity(embedding, embed_text('minilm', 'refund for a double payment')), 3) AS score
FROM ticket_vectors
ORDER BY score DESC
LIMIT 3;

-- Near-duplicate tickets: pairs closer than 0.5 in cosine terms.
SELECT a.id AS a, b.id AS b, round(cosine_similarity(a.embedding, b.embedding), 3) AS similarity
FROM ticket_vectors a JOIN ticket_vectors b ON a.id < b.id
WHERE cosine_similarity(a.embedding, b.embedding) > 0.5
ORDER BY similarity DESC;
