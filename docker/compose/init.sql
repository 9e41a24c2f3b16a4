-- Runs once, when the postgres service starts on an empty data volume
-- (docker-entrypoint-initdb.d). Quiver mounts this schema as quiver.crm.
CREATE TABLE customers (
    id           integer PRIMARY KEY,
    name         text        NOT NULL,
    email        text,
    segment      text        NOT NULL,
    tpch_custkey bigint      NOT NULL,  -- joins quiver.tpch.orders.o_custkey
    signed_up    date        NOT NULL
);

INSERT INTO customers (id, name, email, segment, tpch_custkey, signed_up) VALUES
    (1, 'Ada Lovelace',     'ada@example.com',     'enterprise', 1, DATE '2021-03-14'),
    (2, 'Grace Hopper',     'grace@example.com',   'enterprise', 2, DATE '2020-12-09'),
    (3, 'Edsger Dijkstra',  'edsger@example.com',  'smb',        4, DATE '2022-05-11'),
    (4, 'Barbara Liskov',   'barbara@example.com', 'smb',        5, DATE '2023-11-07'),
    (5, 'Donald Knuth',     NULL,                  'consumer',   7, DATE '2024-01-10'),
    (6, 'Frances Allen',    'fran@example.com',    'consumer',   8, DATE '2024-08-04');
