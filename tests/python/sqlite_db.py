"""A SQLite database written and read by Python's own sqlite3 module, for tests/tests/e2e/sqlite.rs.

    sqlite_db.py create PATH   -- tables of every declared type, a view, a dirty column
    sqlite_db.py dump PATH SQL -- the rows of SQL as JSON lines
"""
import json
import sqlite3
import sys


def create(path):
    db = sqlite3.connect(path)
    db.executescript(
        """
        DROP VIEW IF EXISTS cheap;
        DROP VIEW IF EXISTS endless;
        DROP TABLE IF EXISTS items;
        DROP TABLE IF EXISTS nation_codes;
        DROP TABLE IF EXISTS dirty;
        CREATE TABLE items (
            id INTEGER PRIMARY KEY, name TEXT, price DECIMAL(10,2), qty INT, ok BOOLEAN,
            added DATE, at DATETIME, data BLOB, anything, score REAL
        );
        CREATE VIEW cheap AS SELECT id, name, price, qty * 2 AS twice FROM items WHERE price < 10;
        CREATE TABLE nation_codes (n_nationkey INTEGER NOT NULL, code VARCHAR(3), PRIMARY KEY (n_nationkey));
        CREATE TABLE dirty (id INTEGER, qty INTEGER);
        -- Never finishes: only a statement timeout (or a cancel) stops it.
        CREATE VIEW endless AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n)
            SELECT max(i) AS m FROM n;
        """
    )
    db.executemany(
        "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (1, "héllo", 9.5, 3, True, "2024-02-29", "2001-02-03 04:05:06.789", b"\xde\xad\xbe\xef", 42, 1.25),
            (2, "it's; -- fine", 120.25, "7", False, "1999-12-31", "2020-01-01T00:00:00", None, "text", -2.5),
            (3, None, None, None, None, None, None, None, None, None),
        ],
    )
    db.executemany("INSERT INTO nation_codes VALUES (?, ?)", [(i, f"N{i:02d}") for i in range(0, 25, 2)])
    db.executemany("INSERT INTO dirty VALUES (?, ?)", [(1, 5), (2, "abc")])
    db.commit()
    db.close()


def dump(path, sql):
    db = sqlite3.connect(path)
    for row in db.execute(sql):
        print(json.dumps([v.hex() if isinstance(v, bytes) else v for v in row]))
    db.close()


if __name__ == "__main__":
    if sys.argv[1] == "create":
        create(sys.argv[2])
    else:
        dump(sys.argv[2], sys.argv[3])
