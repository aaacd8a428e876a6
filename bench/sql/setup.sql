-- Benchmark data on top of the demo catalog: :products products with stock to spare
-- (shopper i buys product i, so checkouts never queue on each other's row locks), and
-- :pgbench_users users with carts for pgbench's clients. Run once per fresh database.
INSERT INTO categories (name, description) VALUES ('Bench', 'benchmark products')
  ON CONFLICT (lower(name)) DO NOTHING;
INSERT INTO products (name, description, price, category_id)
  SELECT 'Bench product ' || n, 'for the benchmark', 9.99, c.id
  FROM generate_series(1, :products) AS n, categories c WHERE c.name = 'Bench';
INSERT INTO inventory (product_id, quantity)
  SELECT id, 1000000 FROM products WHERE name LIKE 'Bench product %';
INSERT INTO users (email, password_hash, full_name)
  SELECT 'pgbench-' || n || '@bench.example', 'not-a-login', 'pgbench client ' || n
  FROM generate_series(1, :pgbench_users) AS n;
INSERT INTO carts (user_id) SELECT id FROM users WHERE email LIKE 'pgbench-%';
