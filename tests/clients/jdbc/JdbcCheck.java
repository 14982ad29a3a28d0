// pgjdbc (Debian's libpostgresql-jdbc-java) against `quiver serve`: run
// by tests/server.rs with the port and the sample data directory. Exits
// non-zero, naming the check, on the first thing that does not work as it
// would against Postgres.

import java.sql.Array;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;

public class JdbcCheck {
    static final String ENDLESS =
        "SELECT count(*) FROM generate_series(1, 100000000000) AS t(x) WHERE x % 7 = 3";

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    public static void main(String[] args) throws Exception {
        String port = args[0];
        String data = args[1];
        String url = "jdbc:postgresql://127.0.0.1:" + port + "/quiver?user=tester";
        try (Connection conn = DriverManager.getConnection(url)) {
            DatabaseMetaData meta = conn.getMetaData();
            check(meta.getDatabaseProductVersion().contains("Quiver"),
                "server version: " + meta.getDatabaseProductVersion());

            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery("SELECT 40 + 2 AS answer, 'hi' AS word")) {
                check(rs.next(), "a row");
                check(rs.getLong("answer") == 42, "answer");
                check(rs.getString("word").equals("hi"), "word");
                ResultSetMetaData md = rs.getMetaData();
                check(md.getColumnTypeName(1).equals("int8"), "type of answer: " + md.getColumnTypeName(1));
                check(md.getColumnTypeName(2).equals("text"), "type of word: " + md.getColumnTypeName(2));
            }

            // Prepared statements with typed parameters (server-prepared
            // after prepareThreshold uses, 5 by default: run it more often).
            try (PreparedStatement ps = conn.prepareStatement(
                    "SELECT count(*) FROM read_csv('" + data + "/customers.csv') WHERE country = ? AND id > ?")) {
                long first = -1;
                for (int i = 0; i < 7; i++) {
                    ps.setString(1, "NG");
                    ps.setLong(2, 0);
                    try (ResultSet rs = ps.executeQuery()) {
                        check(rs.next(), "a count");
                        long n = rs.getLong(1);
                        check(n > 0, "customers in NG: " + n);
                        check(first < 0 || n == first, "the same count every time");
                        first = n;
                    }
                }
            }

            // Images as bytea, embeddings-like float4[] arrays.
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery(
                     "SELECT image FROM read_images('" + data + "/images/forest.png')")) {
                check(rs.next(), "an image");
                byte[] png = rs.getBytes(1);
                check(png.length > 8 && png[1] == 'P' && png[2] == 'N' && png[3] == 'G', "PNG bytes");
            }
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery("SELECT [CAST(1.5 AS REAL), CAST(-2 AS REAL)] AS v")) {
                check(rs.next(), "an array");
                check(rs.getMetaData().getColumnTypeName(1).equals("_float4"),
                    "array type: " + rs.getMetaData().getColumnTypeName(1));
                Array a = rs.getArray(1);
                Float[] v = (Float[]) a.getArray();
                check(v.length == 2 && v[0] == 1.5f && v[1] == -2f, "array values");
            }

            // A large result in pieces (setFetchSize needs autocommit off:
            // the driver then asks for 1000 rows at a time).
            conn.setAutoCommit(false);
            try (Statement st = conn.createStatement()) {
                st.setFetchSize(1000);
                try (ResultSet rs = st.executeQuery("SELECT x FROM generate_series(1, 100000) AS t(x)")) {
                    long n = 0;
                    long sum = 0;
                    while (rs.next()) {
                        n++;
                        sum += rs.getLong(1);
                    }
                    check(n == 100000, "rows fetched: " + n);
                    check(sum == 5000050000L, "sum: " + sum);
                }
            }
            conn.commit();
            conn.setAutoCommit(true);

            // SQLSTATEs.
            try (Statement st = conn.createStatement()) {
                st.executeQuery("SELECT * FROM nowhere");
                check(false, "an undefined table is an error");
            } catch (SQLException e) {
                check("42P01".equals(e.getSQLState()), "42P01, got " + e.getSQLState());
            }
            try (Statement st = conn.createStatement()) {
                st.executeQuery("SELEC 1");
                check(false, "a syntax error is an error");
            } catch (SQLException e) {
                check("42601".equals(e.getSQLState()), "42601, got " + e.getSQLState());
            }

            // Statement.cancel() from another thread stops the query.
            try (Statement st = conn.createStatement()) {
                Thread canceller = new Thread(() -> {
                    try {
                        Thread.sleep(500);
                        st.cancel();
                    } catch (Exception e) {
                        throw new RuntimeException(e);
                    }
                });
                canceller.start();
                long started = System.nanoTime();
                try {
                    st.executeQuery(ENDLESS);
                    check(false, "the endless query was cancelled");
                } catch (SQLException e) {
                    check("57014".equals(e.getSQLState()), "57014, got " + e.getSQLState());
                }
                canceller.join();
                long ms = (System.nanoTime() - started) / 1_000_000;
                check(ms < 1500, "cancelled after " + ms + " ms");
            }

            // DatabaseMetaData over pg_catalog: the session's tables and
            // their columns, as BI tools and IDEs list them.
            try (Statement st = conn.createStatement()) {
                st.execute("CREATE TABLE jdbc_orders AS SELECT CAST(1 AS BIGINT) AS id, 'pen' AS item, CAST(2.5 AS DOUBLE) AS price");
            }
            List<String> tables = new ArrayList<>();
            try (ResultSet rs = meta.getTables(null, null, "jdbc%", new String[] {"TABLE"})) {
                while (rs.next()) {
                    tables.add(rs.getString("TABLE_SCHEM") + "." + rs.getString("TABLE_NAME")
                        + ":" + rs.getString("TABLE_TYPE"));
                }
            }
            check(tables.equals(List.of("public.jdbc_orders:TABLE")), "getTables: " + tables);
            List<String> columns = new ArrayList<>();
            try (ResultSet rs = meta.getColumns(null, null, "jdbc_orders", "%")) {
                while (rs.next()) {
                    columns.add(rs.getString("COLUMN_NAME") + ":" + rs.getString("TYPE_NAME")
                        + ":" + rs.getInt("ORDINAL_POSITION"));
                }
            }
            check(columns.equals(List.of("id:int8:1", "item:text:2", "price:float8:3")),
                "getColumns: " + columns);
        }
        System.out.println("jdbc: all checks passed");
    }
}
