-- GET /api/products/{id}: the app's query (src/http/products.rs, fetch_product).
\set id random(:lo, :hi)
SELECT p.id, p.name, p.description, p.price, p.category_id, c.name AS category_name,
       i.quantity - i.reserved AS stock, r.average_rating,
       COALESCE(r.review_count, 0) AS review_count, p.created_at, p.updated_at
FROM products p
JOIN categories c ON c.id = p.category_id
JOIN inventory i ON i.product_id = p.id
LEFT JOIN LATERAL (
    SELECT round(avg(rating), 2)::float8 AS average_rating, count(*) AS review_count
    FROM reviews WHERE product_id = p.id
) r ON TRUE
WHERE p.id = :id AND p.is_active;
