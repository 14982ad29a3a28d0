-- A funnel over newline-delimited JSON events: how many customers reached
-- each step.
SELECT kind,
       count(*)                    AS events,
       count(DISTINCT customer_id) AS customers
FROM read_json('sample-data/events.json')
GROUP BY kind
ORDER BY CASE kind WHEN 'view' THEN 1 WHEN 'click' THEN 2 WHEN 'cart' THEN 3 ELSE 4 END;
