// node-postgres (npm `pg`) against a running Quiver server: simple and
// parameterised queries, bigint and float text values, bytea images,
// float4[] arrays, SQLSTATE errors, a catalog query, many rows.
//
// Usage: node pg_check.js PORT DATA_DIR
const assert = require("assert");
const { Client } = require("pg");

async function main() {
  const [port, data] = process.argv.slice(2);
  const client = new Client({ host: "127.0.0.1", port: Number(port), user: "tester", database: "quiver" });
  await client.connect();

  // Integer literals are bigint in DataFusion (int8 comes back as text in node-postgres).
  let r = await client.query("SELECT CAST(1 + 1 AS INT) AS two, 'x' AS s");
  assert.deepStrictEqual(r.rows, [{ two: 2, s: "x" }]);

  // Extended protocol with parameters; bigint comes back as text, as with Postgres.
  r = await client.query("SELECT $1::bigint * 2 AS n, $2::text || '!' AS t", [21, "hi"]);
  assert.deepStrictEqual(r.rows, [{ n: "42", t: "hi!" }]);

  // Images as bytea.
  r = await client.query(
    `SELECT image, width FROM read_images('${data}/images/forest.png')`
  );
  assert.strictEqual(r.rows.length, 1);
  assert.ok(Buffer.isBuffer(r.rows[0].image));
  assert.strictEqual(r.rows[0].image.subarray(1, 4).toString(), "PNG");
  // uint32 is sent as bigint (int8), which node-postgres hands over as text.
  assert.strictEqual(r.rows[0].width, "200");

  // float4[] arrays.
  r = await client.query("SELECT make_array(CAST(0.5 AS REAL), CAST(1.5 AS REAL)) AS v");
  assert.deepStrictEqual(r.rows[0].v, [0.5, 1.5]);

  // SQLSTATEs.
  await assert.rejects(client.query("SELECT * FROM no_such_table"), (e) => e.code === "42P01");
  await assert.rejects(client.query("SELEC 1"), (e) => e.code === "42601");

  // A catalog query.
  r = await client.query("SELECT typname FROM pg_catalog.pg_type WHERE oid = 1021");
  assert.deepStrictEqual(r.rows, [{ typname: "_float4" }]);

  // Many rows.
  r = await client.query("SELECT x FROM generate_series(1, 50000) AS t(x)");
  assert.strictEqual(r.rowCount, 50000);

  await client.end();
  console.log("node-postgres: ok");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
