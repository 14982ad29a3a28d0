-- Export monthly revenue to Parquet with COPY, then read the file back.
COPY (
    SELECT date_trunc('month', ordered_at) AS month,
           count(*)                        AS orders,
           round(sum(amount), 2)           AS revenue
    FROM read_parquet('sample-data/orders/')
    GROUP BY 1
    ORDER BY 1
) TO 'sample-data/out/monthly_revenue.parquet' STORED AS PARQUET;

SELECT count(*) AS months, sum(orders) AS orders, min(month) AS first_month
FROM read_parquet('sample-data/out/monthly_revenue.parquet');
