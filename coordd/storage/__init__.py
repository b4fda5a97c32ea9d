"""PostgreSQL storage (psycopg 3) and the vector index. The only layer that touches them."""
