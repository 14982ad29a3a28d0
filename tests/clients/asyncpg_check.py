"""asyncpg against `quiver serve`: run by tests/server.rs with the port and
the sample data directory. asyncpg speaks only the extended protocol with
binary values, and looks up every type it has no codec for (arrays) with
its own catalog query. Exits non-zero (with a traceback) on the first
thing that does not work as it would against Postgres."""

import asyncio
import sys
import time

import asyncpg

port, data = sys.argv[1], sys.argv[2]
ENDLESS = "SELECT count(*) FROM generate_series(1, 100000000000) AS t(x) WHERE x % 7 = 3"


async def main():
    conn = await asyncpg.connect(host="127.0.0.1", port=int(port), user="tester", database="quiver")
    version = await conn.fetchval("SHOW server_version")
    assert "Quiver" in version, version
    assert conn.get_server_version().major >= 16, conn.get_server_version()
    # Parameters (binary) and results of several types.
    row = await conn.fetchrow("SELECT $1::bigint + 1 AS n, $2::text || '!' AS t, $3::float8 * 2 AS d", 41, "hi", 1.25)
    assert (row["n"], row["t"], row["d"]) == (42, "hi!", 2.5), row
    # Arrays: float4[] (embeddings), int8[] and text[] take asyncpg's type
    # introspection query; the second query finds the codecs cached.
    for _ in range(2):
        v = await conn.fetchval("SELECT [CAST(1.5 AS REAL), CAST(-2 AS REAL)]")
        assert v == [1.5, -2.0], v
    assert await conn.fetchval("SELECT [CAST(1 AS BIGINT), NULL, 3]") == [1, None, 3]
    assert await conn.fetchval("SELECT ['a', 'b,c']") == ["a", "b,c"]
    # An array parameter.
    assert await conn.fetchval("SELECT array_length($1::real[], 1)", [1.0, 2.0, 3.0]) == 3
    # Files, images as bytea.
    assert await conn.fetchval(f"SELECT count(*) FROM read_csv('{data}/customers.csv')") > 0
    image = await conn.fetchval(f"SELECT image FROM read_images('{data}/images/forest.png')")
    with open(f"{data}/images/forest.png", "rb") as f:
        assert bytes(image) == f.read()
    # A prepared statement, run several times.
    stmt = await conn.prepare("SELECT x * $1::int FROM generate_series(1, 5) AS t(x)")
    for k in (1, 2, 3):
        assert [r[0] for r in await stmt.fetch(k)] == [k * x for x in range(1, 6)]
    # Errors carry SQLSTATEs; the connection goes on.
    try:
        await conn.fetch("SELECT * FROM nowhere")
        raise AssertionError("no error")
    except asyncpg.exceptions.UndefinedTableError:
        pass
    try:
        await conn.fetch("SELEC 1")
        raise AssertionError("no error")
    except asyncpg.exceptions.PostgresSyntaxError:
        pass
    # A timeout cancels the query on the server (a CancelRequest).
    started = time.monotonic()
    try:
        await conn.fetchval(ENDLESS, timeout=0.5)
        raise AssertionError("not cancelled")
    except asyncio.TimeoutError:
        pass
    assert time.monotonic() - started < 5
    assert await conn.fetchval("SELECT 1") == 1
    # Many rows, in a transaction with a cursor (portal row limits).
    async with conn.transaction():
        n = 0
        async for _ in conn.cursor("SELECT x FROM generate_series(1, 20000) AS t(x)", prefetch=1000):
            n += 1
        assert n == 20000, n
    await conn.close()
    print("asyncpg: ok")


asyncio.run(main())
