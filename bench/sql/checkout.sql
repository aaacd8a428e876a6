-- One "add to cart" and one checkout, with the same statements the app runs
-- (src/http/cart.rs add_item, then the eleven steps of src/checkout/mod.rs, with the
-- gateway's record of the charge from src/payment.rs), minus the gateway's wait and the
-- e-mail. Client n is user :first_user + n buying product :first_product + n.
\set uid :first_user + :client_id
\set pid :first_product + :client_id
\set charge_key random(1, 9000000000000000000)
BEGIN;
INSERT INTO carts (user_id) VALUES (:uid)
  ON CONFLICT (user_id) DO UPDATE SET user_id = EXCLUDED.user_id RETURNING id AS cart_id \gset
WITH product AS (
    SELECT p.name, p.price, i.quantity - i.reserved AS available
    FROM products p JOIN inventory i ON i.product_id = p.id
    WHERE p.id = :pid AND p.is_active),
  held AS (
    SELECT COALESCE(SUM(quantity), 0)::bigint AS quantity FROM cart_items
    WHERE cart_id = :cart_id AND product_id = :pid),
  cart_total AS (
    SELECT COALESCE(SUM(p.price * ci.quantity), 0) AS total
    FROM cart_items ci JOIN products p ON p.id = ci.product_id WHERE ci.cart_id = :cart_id),
  wanted AS (
    SELECT product.name, product.price, product.available,
           held.quantity + 1 AS quantity, cart_total.total + product.price * 1 AS total
    FROM product, held, cart_total),
  added AS (
    INSERT INTO cart_items (cart_id, product_id, quantity)
    SELECT :cart_id, :pid, 1 FROM wanted
    WHERE wanted.quantity <= wanted.available AND wanted.total <= 9999999999.99
    ON CONFLICT (cart_id, product_id)
    DO UPDATE SET quantity = cart_items.quantity + EXCLUDED.quantity
    RETURNING id, quantity)
SELECT wanted.name AS product_name, wanted.price AS unit_price, wanted.available,
       wanted.quantity AS wanted, wanted.total, added.id AS item_id, added.quantity
  FROM wanted LEFT JOIN added ON true;
COMMIT;
-- The gateway's record of the charge (src/payment.rs). In the app it is written while the
-- checkout's transaction is open, on a connection of its own and in a transaction of its
-- own (the gateway is another system): here, between the two, with its own commit too.
WITH new AS (
  INSERT INTO gateway_charges (idempotency_key, order_id, amount, method, status, transaction_id)
  VALUES ('charge-' || :charge_key, :cart_id,
          9.99, 'credit_card', 'approved', 'txn_' || md5(random()::text || clock_timestamp()::text))
  ON CONFLICT (idempotency_key) DO NOTHING RETURNING status, transaction_id, amount, order_id)
SELECT * FROM new
UNION ALL
SELECT status, transaction_id, amount, order_id FROM gateway_charges
  WHERE idempotency_key = 'charge-' || :charge_key AND NOT EXISTS (SELECT FROM new);
BEGIN;
SELECT c.id, u.email, u.full_name FROM carts c JOIN users u ON u.id = c.user_id
  WHERE c.user_id = :uid FOR UPDATE OF c;
SELECT ci.product_id, p.name AS product_name, p.price AS unit_price, ci.quantity, p.is_active
  FROM cart_items ci JOIN products p ON p.id = ci.product_id
  WHERE ci.cart_id = :cart_id ORDER BY ci.product_id;
SELECT product_id, quantity, reserved FROM inventory
  WHERE product_id = ANY(ARRAY[:pid]::bigint[]) ORDER BY product_id FOR UPDATE;
UPDATE inventory SET reserved = inventory.reserved + wanted.quantity, updated_at = now()
  FROM UNNEST(ARRAY[:pid]::bigint[], ARRAY[1]::int[]) AS wanted(product_id, quantity)
  WHERE inventory.product_id = wanted.product_id;
INSERT INTO orders (user_id, status, total, shipping_address)
  SELECT user_id, 'pending', 9.99, '1 Bench Street' FROM carts WHERE id = :cart_id
  RETURNING id AS order_id, user_id, created_at \gset
INSERT INTO order_items (order_id, product_id, product_name, unit_price, quantity)
  SELECT :order_id, * FROM UNNEST(ARRAY[:pid]::bigint[], ARRAY['Bench item']::text[],
                                  ARRAY[9.99]::numeric[], ARRAY[1]::int[]);
WITH paid AS (UPDATE orders SET status = 'paid', updated_at = now() WHERE id = :order_id)
INSERT INTO payments (order_id, amount, method, status, transaction_id)
  VALUES (:order_id, 9.99, 'credit_card', 'completed', 'txn_' || md5(random()::text || clock_timestamp()::text))
  RETURNING id, created_at;
UPDATE inventory SET quantity = inventory.quantity - sold.quantity,
                     reserved = inventory.reserved - sold.quantity, updated_at = now()
  FROM UNNEST(ARRAY[:pid]::bigint[], ARRAY[1]::int[]) AS sold(product_id, quantity)
  WHERE inventory.product_id = sold.product_id;
INSERT INTO notifications (user_id, kind, message)
  SELECT user_id, 'order_confirmed', 'Your order is confirmed.' FROM carts WHERE id = :cart_id;
DELETE FROM cart_items WHERE cart_id = :cart_id;
UPDATE orders SET status = 'confirmed', processing_time_ms = 1, updated_at = now()
  WHERE id = :order_id RETURNING updated_at;
COMMIT;
