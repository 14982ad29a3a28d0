/* Quarterly revenue per product category, ranked within each quarter.
   Files are read straight from their paths with read_parquet. */
WITH sales AS (
    SELECT p.category,
           date_part('quarter', o.ordered_at) AS quarter,
           sum(o.amount * 1.0)                AS revenue
    FROM read_parquet('sample-data/orders/*.parquet') o
    JOIN read_parquet('sample-data/products.parquet') p ON o.product_id = p.id
    GROUP BY 1, 2
)
SELECT quarter,
       category,
       round(revenue, 2)                                      AS revenue,
       rank() OVER (PARTITION BY quarter ORDER BY revenue DESC) AS rank_in_quarter
FROM sales
WHERE category IN ('audio', 'camera', 'toys')
ORDER BY quarter, rank_in_quarter;
