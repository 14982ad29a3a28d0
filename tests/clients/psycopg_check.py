"""psycopg 3 against `quiver serve`: run by tests/server.rs with the port
and the sample data directory. Exits non-zero (with a traceback) on the
first thing that does not work as it would against Postgres."""

import sys
import threading
import time

import psycopg
from psycopg import errors

port, data = sys.argv[1], sys.argv[2]
dsn = f"host=127.0.0.1 port={port} user=tester dbname=quiver"
ENDLESS = "SELECT count(*) FROM generate_series(1, 100000000000) AS t(x) WHERE x % 7 = 3"

# The default: statements in a transaction psycopg opens (BEGIN … COMMIT).
with psycopg.connect(dsn) as conn:
    version = conn.execute("SHOW server_version").fetchone()[0]
    assert "Quiver" in version, version
    assert conn.info.server_version >= 160000, conn.info.server_version
    row = conn.execute("SELECT %s::bigint + 1 AS n, %s AS t", (41, "hi")).fetchone()
    assert row == (42, "hi"), row
    conn.commit()

with psycopg.connect(dsn, autocommit=True) as conn:
    cur = conn.cursor()
    # Parameters of several types, text and binary results.
    cur.execute("SELECT %s + 1, %s::text || '!', %s * 2.0, NOT %s", (1, "a", 1.25, False))
    assert cur.fetchone() == (2, "a!", 2.5, True)
    # Types psycopg declares are the parameters' types; strings, sent as
    # `unknown`, are text where nothing else decides.
    cur.execute("SELECT %s, %s || %s", (True, "con", "cat"))
    assert cur.fetchone() == (True, "concat")
    bcur = conn.cursor(binary=True)
    bcur.execute("SELECT CAST(7 AS INT), 'x', CAST(2.5 AS DOUBLE), CAST(NULL AS TEXT)")
    assert bcur.fetchone() == (7, "x", 2.5, None)
    # Files, images as bytea, embeddings-like float4[] arrays.
    cur.execute(f"SELECT count(*) FROM read_csv('{data}/customers.csv')")
    assert cur.fetchone()[0] > 0
    cur.execute(f"SELECT image FROM read_images('{data}/images/forest.png')")
    with open(f"{data}/images/forest.png", "rb") as f:
        assert bytes(cur.fetchone()[0]) == f.read()
    cur.execute("SELECT [CAST(1.5 AS REAL), CAST(-2 AS REAL)]")
    assert cur.fetchone()[0] == [1.5, -2.0]
    # Errors carry SQLSTATEs; the connection goes on.
    try:
        cur.execute("SELECT * FROM nowhere")
        raise AssertionError("no error")
    except errors.UndefinedTable:
        pass
    try:
        cur.execute("SELEC 1")
        raise AssertionError("no error")
    except errors.SyntaxError:
        pass
    # cancel() from another thread stops a running query.
    threading.Timer(0.5, conn.cancel).start()
    started = time.monotonic()
    try:
        cur.execute(ENDLESS)
        raise AssertionError("not cancelled")
    except errors.QueryCanceled:
        pass
    assert time.monotonic() - started < 5
    # statement_timeout.
    cur.execute("SET statement_timeout = '200ms'")
    try:
        cur.execute(ENDLESS)
        raise AssertionError("no timeout")
    except errors.QueryCanceled as e:
        assert "statement timeout" in str(e), e
    cur.execute("SET statement_timeout = 0")
    # COPY TO STDOUT, read by psycopg's copy().
    out = bytearray()
    with cur.copy("COPY (SELECT 1 AS a, 'x,y' AS b) TO STDOUT WITH (FORMAT csv, HEADER)") as copy:
        for chunk in copy:
            out += chunk
    assert bytes(out) == b'a,b\n1,"x,y"\n', bytes(out)
    # Many rows stream.
    cur.execute("SELECT x FROM generate_series(1, 100000) AS t(x)")
    assert sum(1 for _ in cur) == 100000
# Server-side (named) cursors: DECLARE … CURSOR, FETCH FORWARD n, CLOSE,
# with and without parameters.
with psycopg.connect(dsn) as conn:
    with conn.cursor(name="big") as cur:
        cur.itersize = 1000
        cur.execute("SELECT x FROM generate_series(1, 100000) AS t(x)")
        assert sum(1 for _ in cur) == 100000
    with conn.cursor(name="some") as cur:
        cur.execute("SELECT x FROM generate_series(1, 100) AS t(x) WHERE x <= %s ORDER BY x", (42,))
        assert cur.fetchmany(5) == [(1,), (2,), (3,), (4,), (5,)]
        assert len(cur.fetchall()) == 37
    conn.commit()
print("psycopg: ok")
