"""Postgres catalog clients against a running Quiver server: psycopg 3's
TypeInfo.fetch (to_regtype), SQLAlchemy 2 (connect: version(), SHOW
transaction isolation level, savepoints; inspect(): tables and columns
from pg_catalog), current_setting.

Usage: python3 catalog_check.py PORT DATA_DIR
"""
import sys

import psycopg
import sqlalchemy as sa
from psycopg.types import TypeInfo

port, data = sys.argv[1], sys.argv[2]
dsn = f"host=127.0.0.1 port={port} user=tester dbname=quiver"

with psycopg.connect(dsn) as conn:
    t = TypeInfo.fetch(conn, "float4[]")
    assert t is not None and t.oid == 1021, t
    t = TypeInfo.fetch(conn, "int4")
    assert t is not None and (t.oid, t.array_oid) == (23, 1007), t
    assert TypeInfo.fetch(conn, "no_such_type") is None
    cur = conn.cursor()
    cur.execute("SELECT version(), current_setting('jit'), current_setting('datafusion.execution.batch_size')")
    version, jit, batch = cur.fetchone()
    assert version.startswith("PostgreSQL 16.6 (Quiver "), version
    assert (jit, batch) == ("off", "8192"), (jit, batch)

engine = sa.create_engine(f"postgresql+psycopg://tester@127.0.0.1:{port}/quiver")
with engine.connect() as c:
    assert c.execute(sa.text("SELECT 1 + 1")).scalar() == 2
    c.execute(sa.text(f"CREATE EXTERNAL TABLE orders STORED AS PARQUET LOCATION '{data}/orders/'"))
    insp = sa.inspect(c)
    assert insp.get_table_names() == ["orders"], insp.get_table_names()
    columns = [(col["name"], str(col["type"]), col["nullable"]) for col in insp.get_columns("orders")]
    assert columns[:2] == [("order_id", "BIGINT", False), ("customer_id", "INTEGER", False)], columns
    assert len(columns) == 6, columns
    with c.begin_nested():
        assert c.execute(sa.text("SELECT count(*) FROM orders")).scalar() > 0
print("catalog: ok")
