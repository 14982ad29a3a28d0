-- Revenue by country: the orders fact table (4 Parquet files) joined with
-- customers (CSV), then aggregated.
CREATE EXTERNAL TABLE orders
STORED AS PARQUET
LOCATION 'sample-data/orders/';

CREATE EXTERNAL TABLE customers
STORED AS CSV
LOCATION 'sample-data/customers.csv'
OPTIONS ('format.has_header' 'true');

SELECT c.country,
       count(*)                      AS orders,
       count(DISTINCT o.customer_id) AS customers,
       round(sum(o.amount), 2)       AS revenue
FROM orders o
JOIN customers c ON o.customer_id = c.id
GROUP BY c.country
ORDER BY revenue DESC;
