//! The Postgres endpoint against real clients over real sockets:
//! `tokio-postgres` (simple and extended protocols, text and binary
//! values, SQLSTATEs, per-connection sessions) and `psql`.

use std::net::SocketAddr;
use std::process::Command;

use quiver::Quiver;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

struct Server {
    addr: SocketAddr,
    sample: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start() -> Server {
        Self::start_with(quiver::QuiverConfig::default()).await
    }

    async fn start_with(config: quiver::QuiverConfig) -> Server {
        Self::start_with_sample(config, |_, _| ()).await
    }

    /// A server whose config `declare` completes once the sample data is
    /// written (its directory given).
    async fn start_with_sample(
        mut config: quiver::QuiverConfig,
        declare: impl FnOnce(&mut quiver::QuiverConfig, &std::path::Path),
    ) -> Server {
        let sample = tempfile::tempdir().expect("tempdir");
        quiver::sample::generate(sample.path()).expect("sample data");
        declare(&mut config, sample.path());
        let engine = Quiver::builder()
            .config(config)
            .open()
            .await
            .expect("engine");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            quiver_server::serve(listener, engine, async {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
        });
        Server {
            addr,
            sample,
            stop: Some(stop),
            task,
        }
    }

    fn data(&self) -> String {
        self.sample.path().display().to_string()
    }

    async fn connect(&self) -> Client {
        self.connect_with_task().await.0
    }

    /// A client and the task that runs its connection (aborting the task
    /// closes the socket; a dropped tokio-postgres client reads on to the
    /// end of a running statement first).
    async fn connect_with_task(&self) -> (Client, tokio::task::JoinHandle<()>) {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=tester dbname=quiver",
                self.addr.port()
            ),
            NoTls,
        )
        .await
        .expect("connect");
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        (client, task)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.expect("server task");
    }
}

fn simple_rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_protocol_text_values_and_statements() {
    let server = Server::start().await;
    let c = server.connect().await;
    let rows = simple_rows(
        &c.simple_query(
            "SELECT 1 AS a, 'x' AS b, true AS c, 2.5 AS d, DATE '2024-01-02' AS e, \
             TIMESTAMP '2024-01-02 03:04:05' AS f, CAST(18446744073709551615 AS BIGINT UNSIGNED) AS g, \
             CAST(NULL AS INT) AS h, [1.5, 2.5] AS i",
        )
        .await
        .expect("query"),
    );
    assert_eq!(
        rows,
        vec![vec![
            Some("1".into()),
            Some("x".into()),
            Some("t".into()),
            Some("2.5".into()),
            Some("2024-01-02".into()),
            Some("2024-01-02 03:04:05".into()),
            Some("18446744073709551615".into()),
            None,
            Some("{1.5,2.5}".into()),
        ]]
    );
    // Several statements in one string, DDL in the middle, and the command tags.
    let data = server.data();
    let messages = c
        .simple_query(&format!(
            "CREATE EXTERNAL TABLE customers STORED AS CSV LOCATION '{data}/customers.csv' OPTIONS ('format.has_header' 'true'); \
             SELECT count(*) FROM customers; \
             BEGIN; SET application_name = 'tests'; SHOW application_name; COMMIT"
        ))
        .await
        .expect("script");
    let tags: Vec<u64> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(tags.len(), 6, "{messages:?}");
    assert_eq!(
        simple_rows(&messages),
        vec![vec![Some("1000".into())], vec![Some("tests".into())]]
    );
    // An empty query is fine.
    c.simple_query("").await.expect("empty query");
    // COPY reports how many rows it wrote.
    let messages = c
        .simple_query(&format!(
            "COPY (SELECT id FROM customers WHERE id <= 7) TO '{data}/seven.csv' STORED AS CSV"
        ))
        .await
        .expect("copy");
    assert!(
        messages
            .iter()
            .any(|m| matches!(m, SimpleQueryMessage::CommandComplete(7))),
        "{messages:?}"
    );
    drop(c);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_parameters_and_binary_values() {
    let server = Server::start().await;
    let c = server.connect().await;
    let data = server.data();
    // A typed parameter, inferred from the column it is compared with.
    let rows = c
        .query(
            &format!("SELECT id, country FROM read_csv('{data}/customers.csv') WHERE id = $1"),
            &[&5i64],
        )
        .await
        .expect("parameter query");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(0), 5);
    // The same statement, prepared once, run with other values.
    let stmt = c
        .prepare(&format!(
            "SELECT count(*) FROM read_csv('{data}/customers.csv') WHERE id <= $1"
        ))
        .await
        .expect("prepare");
    assert_eq!(stmt.columns()[0].name(), "count");
    for (n, want) in [(10i64, 10i64), (250, 250)] {
        let row = c.query_one(&stmt, &[&n]).await.expect("execute");
        assert_eq!(row.get::<_, i64>(0), want);
    }
    // Binary values of every common type.
    let row = c
        .query_one(
            "SELECT CAST(7 AS INT) AS i4, CAST(8 AS SMALLINT) AS i2, 1.5 AS f8, CAST(2.5 AS REAL) AS f4, \
             false AS b, 'héllo' AS t, DATE '2024-02-29' AS d, TIMESTAMP '2024-02-29 12:30:00' AS ts, \
             [1.0, 2.0, 3.0] AS arr",
            &[],
        )
        .await
        .expect("types");
    assert_eq!(row.get::<_, i32>("i4"), 7);
    assert_eq!(row.get::<_, i16>("i2"), 8);
    assert_eq!(row.get::<_, f64>("f8"), 1.5);
    assert_eq!(row.get::<_, f32>("f4"), 2.5);
    assert!(!row.get::<_, bool>("b"));
    assert_eq!(row.get::<_, String>("t"), "héllo");
    assert_eq!(
        row.get::<_, chrono::NaiveDate>("d"),
        chrono::NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()
    );
    assert_eq!(
        row.get::<_, chrono::NaiveDateTime>("ts").to_string(),
        "2024-02-29 12:30:00"
    );
    assert_eq!(row.get::<_, Vec<f64>>("arr"), vec![1.0, 2.0, 3.0]);
    // Images travel as bytea, tensors as float4[].
    let row = c
        .query_one(
            &format!(
                "SELECT image, image_to_tensor(image, 4, 2) AS t FROM read_images('{data}/images/forest.png')"
            ),
            &[],
        )
        .await
        .expect("image row");
    let bytes: Vec<u8> = row.get("image");
    assert_eq!(
        bytes,
        std::fs::read(server.sample.path().join("images/forest.png")).unwrap()
    );
    let tensor: Vec<f32> = row.get("t");
    assert_eq!(tensor.len(), 3 * 2 * 4);
    assert!(tensor.iter().all(|v| (0.0..=1.0).contains(v)));
    // A bytea parameter goes back in (typed by a cast, as the function
    // takes any binary).
    let row = c
        .query_one("SELECT image_format($1::bytea)", &[&bytes])
        .await
        .expect("bytea parameter");
    assert_eq!(row.get::<_, String>(0), "png");
    // Audio (a BinaryView column) travels as bytea too; a bytea parameter
    // decodes.
    let row = c
        .query_one(
            &format!(
                "SELECT audio, duration, sample_rate FROM read_audio('{data}/audio/tone-440.wav')"
            ),
            &[],
        )
        .await
        .expect("audio row");
    let audio: Vec<u8> = row.get("audio");
    assert_eq!(
        audio,
        std::fs::read(server.sample.path().join("audio/tone-440.wav")).unwrap()
    );
    assert_eq!(row.get::<_, f64>("duration"), 2.0);
    assert_eq!(row.get::<_, i64>("sample_rate"), 16000);
    let row = c
        .query_one(
            "SELECT audio_duration($1::bytea), audio_rms($1::bytea) > 0.35",
            &[&audio],
        )
        .await
        .expect("audio parameter");
    assert_eq!(row.get::<_, f64>(0), 2.0);
    assert!(row.get::<_, bool>(1));
    drop(c);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_sqlstates_and_sessions_are_separate() {
    let server = Server::start().await;
    let a = server.connect().await;
    let b = server.connect().await;
    for (sql, code) in [
        ("SELEC 1", SqlState::SYNTAX_ERROR),
        ("SELECT * FROM no_such_table", SqlState::UNDEFINED_TABLE),
        (
            "SELECT no_such_column FROM (VALUES (1)) AS t(x)",
            SqlState::UNDEFINED_COLUMN,
        ),
        ("SELECT no_such_function(1)", SqlState::UNDEFINED_FUNCTION),
        ("SHOW no_such_setting", SqlState::UNDEFINED_OBJECT),
    ] {
        for extended in [false, true] {
            let err = if extended {
                a.query(sql, &[]).await.map(|_| ()).expect_err(sql)
            } else {
                a.simple_query(sql).await.map(|_| ()).expect_err(sql)
            };
            assert_eq!(err.code(), Some(&code), "{sql}: {err:?}");
        }
    }
    // The connection is still usable after errors.
    let rows = simple_rows(&a.simple_query("SELECT 41 + 1").await.expect("after errors"));
    assert_eq!(rows, vec![vec![Some("42".into())]]);
    // One connection's settings and tables are its own.
    a.simple_query(
        "SET datafusion.execution.batch_size = 100; CREATE TABLE mine AS VALUES (1), (2)",
    )
    .await
    .expect("set and create");
    let show = |rows: Vec<SimpleQueryMessage>| simple_rows(&rows)[0][1].clone();
    assert_eq!(
        show(
            a.simple_query("SHOW datafusion.execution.batch_size")
                .await
                .unwrap()
        ),
        Some("100".into())
    );
    assert_eq!(
        show(
            b.simple_query("SHOW datafusion.execution.batch_size")
                .await
                .unwrap()
        ),
        Some("8192".into())
    );
    let err = b
        .simple_query("SELECT * FROM mine")
        .await
        .expect_err("other session's table");
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE));
    assert_eq!(
        simple_rows(&a.simple_query("SELECT count(*) FROM mine").await.unwrap()),
        vec![vec![Some("2".into())]]
    );
    drop((a, b));
    server.stop().await;
}

/// Runs the real `psql` against the server with `args` after the
/// connection options, stopping at the first error.
async fn psql(port: u16, args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new("psql")
            .args([
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "tester",
                "-d",
                "quiver",
            ])
            .arg("-p")
            .arg(port.to_string())
            .args(args)
            .output()
    })
    .await
    .expect("psql task")
    .expect("run psql (apt-get install postgresql-client)")
}

/// The config's `[tables.*]` are every connection's: the same rows (an
/// in-memory CSV, a Parquet directory) through both protocols, listed in
/// the catalog, while a connection's own tables stay its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_tables_are_seen_by_every_connection() {
    let server = Server::start_with_sample(quiver::QuiverConfig::default(), |config, sample| {
        for (name, format, location, in_memory) in [
            ("customers", "csv", "customers.csv", true),
            ("orders", "parquet", "orders", false),
        ] {
            config.tables.insert(
                name.to_string(),
                quiver::TableDeclaration {
                    format: format.to_string(),
                    location: sample.join(location).display().to_string(),
                    options: Default::default(),
                    in_memory,
                },
            );
        }
    })
    .await;
    let (a, b) = (server.connect().await, server.connect().await);
    let expected = simple_rows(
        &a.simple_query(&format!(
            "SELECT name, country FROM read_csv('{}/customers.csv') WHERE id = 42",
            server.data()
        ))
        .await
        .expect("read_csv"),
    );
    assert_eq!(expected.len(), 1);
    for client in [&a, &b] {
        let rows = simple_rows(
            &client
                .simple_query("SELECT name, country FROM customers WHERE id = 42")
                .await
                .expect("simple"),
        );
        assert_eq!(rows, expected);
        let statement = client
            .prepare("SELECT name, country FROM customers WHERE id = $1")
            .await
            .expect("prepare");
        for _ in 0..3 {
            let row = client.query_one(&statement, &[&42i64]).await.expect("bind");
            assert_eq!(Some(row.get::<_, String>(0)), expected[0][0]);
        }
        let orders: i64 = client
            .query_one("SELECT count(*) FROM orders", &[])
            .await
            .expect("orders")
            .get(0);
        assert!(orders > 0);
        let listed: i64 = client
            .query_one(
                "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('customers', 'orders')",
                &[],
            )
            .await
            .expect("catalog")
            .get(0);
        assert_eq!(listed, 2);
    }
    a.simple_query("CREATE TABLE mine AS VALUES (1)")
        .await
        .expect("create");
    let err = b
        .simple_query("SELECT * FROM mine")
        .await
        .expect_err("a's own table");
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE));
    server.stop().await;
}

/// Simple queries that differ in their filters' constants share one plan
/// (see `shapes`): each still gets its own rows, a repeated literal that
/// is no parameter (`LIMIT`) is honoured, and a row inserted since is seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_queries_of_one_shape_get_their_own_rows() {
    let server = Server::start().await;
    let c = server.connect().await;
    c.simple_query("CREATE TABLE people (id BIGINT, name VARCHAR) AS VALUES (1, 'ada'), (2, 'bob'), (3, 'o''hara')")
        .await
        .expect("create");
    let names = |messages: Vec<SimpleQueryMessage>| -> Vec<String> {
        messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
                _ => None,
            })
            .collect()
    };
    for (sql, want) in [
        (
            "SELECT name FROM people WHERE id = 1 AND name <> 'x' LIMIT 5",
            vec!["ada"],
        ),
        (
            "SELECT name FROM people WHERE id = 2 AND name <> 'x' LIMIT 5",
            vec!["bob"],
        ),
        (
            "select name from people where id = 3 and name <> 'x' limit 5",
            vec!["o'hara"],
        ),
        (
            "SELECT name FROM people WHERE id = 3 AND name <> 'o''hara' LIMIT 5",
            vec![],
        ),
        (
            "SELECT name FROM people WHERE id = 1 AND name <> 'x' LIMIT 0",
            vec![],
        ),
        (
            "SELECT name FROM people WHERE id = 1.0 AND name <> 'x' LIMIT 5",
            vec!["ada"],
        ),
    ] {
        assert_eq!(names(c.simple_query(sql).await.expect(sql)), want, "{sql}");
    }
    c.simple_query("INSERT INTO people VALUES (4, 'dee')")
        .await
        .expect("insert");
    let sql = "SELECT name FROM people WHERE id = 4 AND name <> 'x' LIMIT 5";
    assert_eq!(names(c.simple_query(sql).await.expect(sql)), vec!["dee"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_runs_queries_and_prepared_statements() {
    let server = Server::start().await;
    let data = server.data();
    let script = format!(
        "SELECT country, count(*) AS n FROM read_csv('{data}/customers.csv') GROUP BY country ORDER BY n DESC, country LIMIT 2;\n\
         PREPARE next_one(BIGINT) AS SELECT $1 + 1 AS answer;\n\
         EXECUTE next_one(41);\n\
         SELECT format, width FROM read_images('{data}/images/forest.png');\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("script.sql");
    std::fs::write(&file, script).unwrap();
    let out = psql(
        server.addr.port(),
        vec!["-f".into(), file.display().to_string()],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "psql failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(" country |  n"), "{stdout}");
    assert!(stdout.contains(" NG      | 133"), "{stdout}");
    assert!(stdout.contains("(2 rows)"), "{stdout}");
    assert!(
        stdout.contains("answer") && stdout.contains("42"),
        "{stdout}"
    );
    assert!(stdout.contains("png    |   200"), "{stdout}");
    // A failing statement is reported with its message and stops the script.
    let out = psql(
        server.addr.port(),
        vec!["-c".into(), "SELECT * FROM nowhere".into()],
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ERROR:") && stderr.contains("nowhere"),
        "{stderr}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_listen_beyond_loopback_without_authentication() {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let engine = Quiver::builder().build().unwrap();
    let err = quiver_server::serve(listener, engine, async {})
        .await
        .expect_err("0.0.0.0 must be refused");
    assert!(err.to_string().contains("loopback"), "{err}");
}

/// Beyond `server.max_connections`, a client gets SQLSTATE 53300 and a
/// message (from tokio-postgres and from psql), not a dropped socket; a
/// slot that frees up is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_connections_get_53300() {
    let mut config = quiver::QuiverConfig::default();
    config.server.max_connections = 2;
    let server = Server::start_with(config).await;
    let a = server.connect().await;
    let b = server.connect().await;
    let err = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=tester dbname=quiver",
            server.addr.port()
        ),
        NoTls,
    )
    .await
    .err()
    .expect("a third connection is refused");
    let db = err
        .as_db_error()
        .expect("an ErrorResponse, not a dropped socket");
    assert_eq!(db.code(), &SqlState::TOO_MANY_CONNECTIONS);
    assert!(
        db.message().contains("too many clients"),
        "{}",
        db.message()
    );
    let out = psql(server.addr.port(), vec!["-c".into(), "SELECT 1".into()]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("too many clients"), "{stderr}");
    // The first two still work; closing one frees a slot.
    let row = a.query_one("SELECT 41 + 1", &[]).await.expect("query");
    assert_eq!(row.get::<_, i64>(0), 42);
    drop(b);
    let mut served = None;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if let Ok((c, conn)) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=tester dbname=quiver",
                server.addr.port()
            ),
            NoTls,
        )
        .await
        {
            tokio::spawn(conn);
            served = Some(c);
            break;
        }
    }
    let c = served.expect("a freed slot is served again");
    let row = c.query_one("SELECT 1 + 1", &[]).await.expect("query");
    assert_eq!(row.get::<_, i64>(0), 2);
    drop((a, c));
    server.stop().await;
}

/// `server.read_only`: statements that write are refused with SQLSTATE
/// 25006 before they run; reading and session tables still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_server_refuses_writes() {
    let mut config = quiver::QuiverConfig::default();
    config.server.read_only = true;
    let server = Server::start_with(config).await;
    let c = server.connect().await;
    let data = server.data();
    let out = server.sample.path().join("copied.csv");
    let err = c
        .batch_execute(&format!(
            "COPY (SELECT * FROM read_csv('{data}/customers.csv')) TO '{}'",
            out.display()
        ))
        .await
        .expect_err("COPY TO is refused");
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code(), &SqlState::READ_ONLY_SQL_TRANSACTION);
    assert!(db.message().contains("read-only"), "{}", db.message());
    assert!(!out.exists(), "the refused COPY wrote a file");
    // Prepared through the extended protocol: refused too.
    let err = c
        .prepare(&format!("COPY (SELECT 1 AS x) TO '{}'", out.display()))
        .await
        .expect_err("a prepared COPY is refused");
    assert_eq!(
        err.as_db_error().map(|e| e.code()),
        Some(&SqlState::READ_ONLY_SQL_TRANSACTION)
    );
    // Reading, external tables and session tables still work.
    c.batch_execute(&format!(
        "CREATE EXTERNAL TABLE customers STORED AS CSV LOCATION '{data}/customers.csv' OPTIONS ('format.has_header' 'true')"
    ))
    .await
    .expect("external table");
    let row = c
        .query_one("SELECT count(*) FROM customers", &[])
        .await
        .expect("read");
    assert_eq!(row.get::<_, i64>(0), quiver::sample::CUSTOMERS as i64);
    // Models are shared by every connection: no client registers or drops
    // them on a read-only server.
    for sql in [
        format!("CREATE MODEL m TYPE bert FROM '{data}'"),
        "DROP MODEL IF EXISTS m".to_string(),
    ] {
        let err = c.batch_execute(&sql).await.expect_err(&sql);
        assert_eq!(
            err.as_db_error().map(|e| e.code()),
            Some(&SqlState::READ_ONLY_SQL_TRANSACTION),
            "{sql}"
        );
    }
    drop(c);
    server.stop().await;
}

/// Models registered from one connection serve every connection; an
/// embedding arrives as `float4[]` (binary in the extended protocol, text
/// in the simple one); model errors are ordinary errors, the server stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_shared_by_connections_and_embeddings_are_float4_arrays() {
    let server = Server::start().await;
    let models = tempfile::tempdir().expect("tempdir");
    quiver::sample::write_models(models.path()).expect("models");
    let tiny = models.path().join("models/tiny-bert");
    let a = server.connect().await;
    let b = server.connect().await;
    let done = a
        .simple_query(&format!(
            "CREATE MODEL tiny TYPE bert FROM '{}' OPTIONS (batch_size '2')",
            tiny.display()
        ))
        .await
        .expect("create model");
    assert!(
        done.iter()
            .any(|m| matches!(m, SimpleQueryMessage::CommandComplete(_))),
        "{done:?}"
    );
    // The other connection sees it; the extended protocol returns float4[].
    let row = b
        .query_one(
            "SELECT embed_text('tiny', $1) AS e, cosine_similarity(embed_text('tiny', $1), embed_text('tiny', 'a dog')) AS s",
            &[&"a cat on the mat"],
        )
        .await
        .expect("embed over the extended protocol");
    let e: Vec<f32> = row.get("e");
    assert_eq!(e.len(), 32);
    let norm: f32 = e.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    let s: f64 = row.get("s");
    assert!(s < 0.9999 && s > -1.0, "{s}");
    let text = simple_rows(
        &b.simple_query("SELECT embed_text('tiny', 'sky')")
            .await
            .expect("simple"),
    );
    let cell = text[0][0].clone().expect("not null");
    assert!(
        cell.starts_with('{') && cell.matches(',').count() == 31,
        "{cell}"
    );
    let listed = simple_rows(&a.simple_query("SHOW MODELS").await.expect("show models"));
    assert_eq!(listed[0][0].as_deref(), Some("tiny"));
    assert_eq!(
        listed[0][8].as_deref(),
        Some("cpu"),
        "loaded by now: {listed:?}"
    );
    let err = b
        .simple_query("SELECT embed_text('nope', 'x')")
        .await
        .expect_err("unknown model");
    let message = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("no model named 'nope'"), "{err:?}");
    // A cancel request stops model inference in flight: the model's
    // batches stop, the client hears 57014 within a second.
    let token = b.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        let asked = std::time::Instant::now();
        token.cancel_query(NoTls).await.expect("cancel request");
        asked
    });
    let err = b
        .simple_query(
            "SELECT count(embed_text('tiny', 'row ' || x)) FROM generate_series(1, 100000000) AS t(x)",
        )
        .await
        .expect_err("cancelled inference");
    let asked = canceller.await.expect("canceller");
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err:?}");
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(1),
        "answered {:?} after the cancel request",
        asked.elapsed()
    );
    b.simple_query("DROP MODEL tiny").await.expect("drop");
    let err = a
        .simple_query("SELECT embed_text('tiny', 'x')")
        .await
        .expect_err("dropped");
    let message = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("no model named 'tiny'"), "{err:?}");
    server.stop().await;
}

/// A query that runs for minutes unless stopped.
const ENDLESS: &str =
    "SELECT count(*) FROM generate_series(1, 100000000000) AS t(x) WHERE x % 7 = 3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests_and_statement_timeout_stop_execution_with_57014() {
    let server = Server::start().await;
    let c = server.connect().await;

    // A cancel request (what psql sends on Ctrl-C) stops a running
    // aggregate, in the simple and the extended protocol.
    for extended in [false, true] {
        let token = c.cancel_token();
        let canceller = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let asked = std::time::Instant::now();
            token.cancel_query(NoTls).await.expect("cancel request");
            asked
        });
        let err = if extended {
            c.query(ENDLESS, &[])
                .await
                .map(|_| ())
                .expect_err("cancelled")
        } else {
            c.simple_query(ENDLESS)
                .await
                .map(|_| ())
                .expect_err("cancelled")
        };
        let asked = canceller.await.expect("canceller");
        assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err:?}");
        assert!(
            format!("{err:?}").contains("canceling statement due to user request"),
            "{err:?}"
        );
        assert!(
            asked.elapsed() < std::time::Duration::from_secs(1),
            "answered {:?} after the cancel request",
            asked.elapsed()
        );
    }

    // Rows already streaming: the stream ends with the error.
    let token = c.cancel_token();
    let rows = c
        .query_raw(
            "SELECT x FROM generate_series(1, 100000000000) AS t(x)",
            std::iter::empty::<i64>(),
        )
        .await
        .expect("streaming");
    futures::pin_mut!(rows);
    let mut seen = 0;
    while seen < 1000 {
        futures::StreamExt::next(&mut rows)
            .await
            .expect("a row")
            .expect("row");
        seen += 1;
    }
    token.cancel_query(NoTls).await.expect("cancel request");
    let asked = std::time::Instant::now();
    let err = loop {
        match futures::StreamExt::next(&mut rows).await {
            Some(Ok(_)) => continue,
            Some(Err(e)) => break e,
            None => panic!("the stream ended without the cancel error"),
        }
    };
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err:?}");
    assert!(asked.elapsed() < std::time::Duration::from_secs(1));

    // statement_timeout, with a unit or in milliseconds.
    for timeout in ["'300ms'", "300"] {
        c.simple_query(&format!("SET statement_timeout = {timeout}"))
            .await
            .expect("set timeout");
        let started = std::time::Instant::now();
        let err = c
            .simple_query(ENDLESS)
            .await
            .map(|_| ())
            .expect_err("timed out");
        assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err:?}");
        assert!(
            format!("{err:?}").contains("canceling statement due to statement timeout"),
            "{err:?}"
        );
        let took = started.elapsed();
        assert!(
            took >= std::time::Duration::from_millis(300)
                && took < std::time::Duration::from_secs(2),
            "timed out after {took:?}"
        );
    }
    // Quick statements run under the timeout; 0 turns it off.
    let rows = simple_rows(&c.simple_query("SELECT 1 + 1").await.expect("quick"));
    assert_eq!(rows, vec![vec![Some("2".into())]]);
    c.simple_query("SET statement_timeout = 0")
        .await
        .expect("off");
    let rows = simple_rows(
        &c.simple_query("SELECT count(*) FROM generate_series(1, 1000)")
            .await
            .expect("after"),
    );
    assert_eq!(rows, vec![vec![Some("1000".into())]]);
    drop(c);
    server.stop().await;
}

/// Connects as `user` with `password` to `port`.
async fn login(port: u16, user: &str, password: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user={user} password='{password}' dbname=quiver"),
        NoTls,
    )
    .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// With passwords configured, every client logs in with SCRAM-SHA-256:
/// right passwords work, wrong ones and unknown users get 28P01 (also
/// from psql), many logins at once keep their own state, and the server
/// may listen beyond loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_passwords_are_required_when_configured() {
    let mut config = quiver::QuiverConfig::default();
    config
        .set("server.password", "s3cret pass", "test")
        .expect("password");
    config
        .server
        .users
        .insert("alice".into(), "wonderland".into());
    let server = Server::start_with(config.clone()).await;
    let port = server.addr.port();

    for (user, password) in [("quiver", "s3cret pass"), ("alice", "wonderland")] {
        let c = login(port, user, password).await.expect(user);
        let rows = simple_rows(&c.simple_query("SELECT 40 + 2").await.expect("query"));
        assert_eq!(rows, vec![vec![Some("42".into())]]);
    }
    for (user, password) in [
        ("quiver", "wrong"),
        ("alice", "s3cret pass"),
        ("mallory", "wonderland"),
        ("quiver", ""),
    ] {
        let err = login(port, user, password)
            .await
            .map(|_| ())
            .expect_err("refused");
        if !password.is_empty() {
            assert_eq!(
                err.code(),
                Some(&SqlState::INVALID_PASSWORD),
                "{user}/{password}: {err:?}"
            );
        }
    }

    // Logins at once, right and wrong interleaved: each gets its own answer.
    let attempts = (0..24).map(|i| {
        let right = i % 2 == 0;
        tokio::spawn(async move {
            let password = if right { "wonderland" } else { "wonderlanD" };
            (right, login(port, "alice", password).await.is_ok())
        })
    });
    for attempt in futures::future::join_all(attempts).await {
        let (right, ok) = attempt.expect("task");
        assert_eq!(right, ok, "a login got another's answer");
    }

    // psql, with the password from the environment, and without it.
    let query = |password: Option<&'static str>| {
        tokio::task::spawn_blocking(move || {
            let mut command = Command::new("psql");
            command.args([
                "-X",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "alice",
                "-d",
                "quiver",
                "-w",
                "-Atc",
                "SELECT 6 * 7",
            ]);
            match password {
                Some(p) => command.env("PGPASSWORD", p),
                None => command.env_remove("PGPASSWORD"),
            };
            command.output().expect("psql runs")
        })
    };
    let ok = query(Some("wonderland")).await.expect("psql");
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "42");
    let refused = query(Some("nope")).await.expect("psql");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .to_lowercase()
            .contains("password authentication failed"),
        "{refused:?}"
    );
    server.stop().await;

    // With passwords, the server may listen on every interface.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let engine = Quiver::builder().config(config).build().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(quiver_server::serve(listener, engine, async {
        let _ = stopped.await;
    }));
    let c = login(port, "quiver", "s3cret pass")
        .await
        .expect("login on 0.0.0.0");
    c.simple_query("SELECT 1").await.expect("query");
    drop(c);
    let _ = stop.send(());
    task.await.expect("task").expect("serve");
}

/// A test CA and a certificate it signed for localhost / 127.0.0.1, made
/// with the `openssl` command: (ca.pem, server.crt, server.key).
fn test_certificates(dir: &std::path::Path) -> (String, String, String) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Quiver test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("extensions");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    let path = |f: &str| dir.join(f).display().to_string();
    (path("ca.pem"), path("server.crt"), path("server.key"))
}

/// TLS: psql connects with `sslmode=require` and with `verify-full`
/// against the test CA (SCRAM bound to the channel when a password is
/// set); a TLS configuration that cannot be used stops the server before
/// it serves anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_psql_and_refusal_of_broken_configurations() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = test_certificates(certs.path());
    let mut config = quiver::QuiverConfig::default();
    config.set("server.tls_cert", &cert, "test").expect("cert");
    config.set("server.tls_key", &key, "test").expect("key");
    config
        .set("server.password", "tls pass", "test")
        .expect("password");
    let server = Server::start_with(config.clone()).await;
    let port = server.addr.port();
    let psql = |options: String| {
        tokio::task::spawn_blocking(move || {
            Command::new("psql")
                .args([
                    "-X",
                    "-w",
                    "-At",
                    &format!("host=localhost hostaddr=127.0.0.1 port={port} user=quiver dbname=quiver {options}"),
                    "-c",
                    "\\conninfo",
                    "-c",
                    "SELECT 6 * 7",
                ])
                .env("PGPASSWORD", "tls pass")
                .output()
                .expect("psql runs")
        })
    };
    for options in [
        "sslmode=require".to_string(),
        format!("sslmode=verify-full sslrootcert={ca} channel_binding=require"),
    ] {
        let out = psql(options.clone()).await.expect("psql");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{options}: {out:?}");
        assert!(stdout.contains("SSL connection"), "{options}: {stdout}");
        assert!(stdout.trim_end().ends_with("42"), "{stdout}");
    }
    // A client that trusts another CA refuses the server.
    let other = tempfile::tempdir().expect("tempdir");
    let (other_ca, _, _) = test_certificates(other.path());
    let out = psql(format!("sslmode=verify-full sslrootcert={other_ca}"))
        .await
        .expect("psql");
    assert!(!out.status.success(), "{out:?}");
    server.stop().await;

    // Broken configurations: the server does not start.
    for (cert_path, key_path, expect) in [
        (cert.clone(), format!("{key}.missing"), "reading"),
        (key.clone(), key.clone(), "no PEM certificate"),
        (
            cert.clone(),
            other.path().join("server.key").display().to_string(),
            "server.key",
        ),
    ] {
        let mut broken = quiver::QuiverConfig::default();
        broken
            .set("server.tls_cert", &cert_path, "test")
            .expect("cert");
        broken
            .set("server.tls_key", &key_path, "test")
            .expect("key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let engine = Quiver::builder().config(broken).build().unwrap();
        let err = quiver_server::serve(listener, engine, async {})
            .await
            .expect_err("broken TLS must stop the server");
        let message = err.to_string();
        assert!(
            message.contains("TLS is configured but cannot be set up") && message.contains(expect),
            "{message}"
        );
    }
}

/// `COPY … TO STDOUT` in the three formats, read by tokio-postgres'
/// `copy_out` and by psql (`COPY` and `\copy`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_to_stdout_in_text_csv_and_binary() {
    let server = Server::start().await;
    let c = server.connect().await;
    c.simple_query(
        "CREATE TABLE t AS SELECT * FROM (VALUES (1, 'plain', 1.5), (2, 'tab\there, \"quoted\"', NULL), (3, NULL, -2.0)) AS v(id, name, x)",
    )
    .await
    .expect("table");
    let copy = |sql: &'static str| {
        let c = &c;
        async move {
            let stream = c.copy_out(sql).await.expect(sql);
            futures::pin_mut!(stream);
            let mut out = Vec::new();
            while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
                out.extend_from_slice(&chunk.expect("chunk"));
            }
            out
        }
    };
    // x is a float8: -2.0 prints as PostgreSQL prints that float, `-2`.
    let text = copy("COPY (SELECT id, name, x FROM t ORDER BY id) TO STDOUT").await;
    assert_eq!(
        String::from_utf8(text).unwrap(),
        "1\tplain\t1.5\n2\ttab\\there, \"quoted\"\t\\N\n3\t\\N\t-2\n"
    );
    let csv =
        copy("COPY (SELECT id, name FROM t ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)").await;
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "id,name\n1,plain\n2,\"tab\there, \"\"quoted\"\"\"\n3,\n"
    );
    let table = copy("COPY t (id) TO STDOUT").await;
    let mut ids: Vec<String> = String::from_utf8(table)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    ids.sort();
    assert_eq!(ids, ["1", "2", "3"]);
    // Binary: PGCOPY header, one tuple (2 fields: int8 8 bytes, text), trailer.
    let binary = copy("COPY (SELECT id, name FROM t WHERE id = 1) TO STDOUT (FORMAT binary)").await;
    let mut expected = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
    expected.extend_from_slice(&2i16.to_be_bytes());
    expected.extend_from_slice(&8i32.to_be_bytes());
    expected.extend_from_slice(&1i64.to_be_bytes());
    expected.extend_from_slice(&5i32.to_be_bytes());
    expected.extend_from_slice(b"plain");
    expected.extend_from_slice(&(-1i16).to_be_bytes());
    assert_eq!(binary, expected);
    // Bad options are errors with a SQLSTATE, and the connection goes on.
    let err = c
        .simple_query("COPY t TO STDOUT (FORCE_QUOTE *)")
        .await
        .expect_err("unsupported option");
    assert_eq!(err.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED));
    c.simple_query("SELECT 1").await.expect("still usable");

    // psql: COPY to its stdout, and \copy to a file.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("out.csv");
    let out = psql(
        server.addr.port(),
        vec![
            "-c".into(),
            "COPY (SELECT 1 AS a, 'x y' AS b) TO STDOUT WITH CSV HEADER".into(),
            "-c".into(),
            format!(
                "\\copy (SELECT 2 AS a, 'z' AS b) to '{}' with (format csv)",
                file.display()
            ),
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("a,b\n1,x y\n"),
        "{out:?}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "2,z\n");
    drop(c);
    server.stop().await;
}

/// psycopg 3 (Python, from PyPI; `.ci/setup` installs it) runs
/// `tests/clients/psycopg_check.py` against the server: transactions,
/// parameters, binary results, bytea images, float4[] arrays, SQLSTATE
/// errors, `cancel()`, `statement_timeout`, `COPY … TO STDOUT`, streaming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_works_as_with_postgres() {
    let server = Server::start().await;
    python_check(
        &server,
        "psycopg_check.py",
        "psycopg (pip install 'psycopg[binary]' if it is missing)",
        "psycopg: ok",
    )
    .await;
    server.stop().await;
}

/// `tests/clients/asyncpg_check.py` against the server: binary parameters
/// and results, arrays (asyncpg's type introspection query), bytea images,
/// a prepared statement, SQLSTATE errors, a timeout that cancels, a cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_works_as_with_postgres() {
    let server = Server::start().await;
    python_check(
        &server,
        "asyncpg_check.py",
        "asyncpg (pip install asyncpg if it is missing)",
        "asyncpg: ok",
    )
    .await;
    server.stop().await;
}

/// psql's meta-commands read `pg_catalog`: `\\dt`, `\\d table`, `\\d+
/// table`, `\\dn`, `\\l` and `\\df` answer as Postgres would for the
/// session's tables and Quiver's functions (`\\df image_w*`: one row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_describes_tables_from_pg_catalog() {
    let server = Server::start().await;
    let data = server.data();
    let create =
        format!("CREATE EXTERNAL TABLE orders STORED AS PARQUET LOCATION '{data}/orders/'");
    let mut args = vec!["-c".to_string(), create];
    for meta in [
        "\\dt",
        "\\d orders",
        "\\d+ orders",
        "\\dn",
        "\\l",
        "\\df",
        "\\df image_w*",
    ] {
        args.extend(["-c".to_string(), meta.to_string()]);
    }
    let out = psql(server.addr.port(), args).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        " public | orders | table | postgres",
        "Table \"public.orders\"",
        " order_id    | bigint                   |           | not null |",
        " ordered_at  | timestamp with time zone |           | not null |",
        // \d+ adds storage, compression, statistics target and description.
        "| Storage | Compression | Stats target | Description",
        " order_id    | bigint                   |           | not null |         | plain   |",
        "List of schemas",
        "List of databases",
        "List of functions",
        // Quiver's functions, in `public`: scalar and set-returning.
        " public | audio_rms ",
        " public | read_images ",
        "| SETOF record     |",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
    // `\df` lists both, `\df image_w*` only the first.
    for (row, times) in [
        (" public | image_width ", 2),
        (" public | image_height ", 1),
    ] {
        assert_eq!(stdout.matches(row).count(), times, "{row:?} in:\n{stdout}");
    }
    server.stop().await;
}

/// psycopg's `TypeInfo.fetch` and SQLAlchemy's connect and `inspect()`
/// (`tests/clients/catalog_check.py`; `.ci/setup` installs both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy_and_psycopg_read_the_catalog() {
    let server = Server::start().await;
    python_check(
        &server,
        "catalog_check.py",
        "catalog (pip install sqlalchemy 'psycopg[binary]' if missing)",
        "catalog: ok",
    )
    .await;
    server.stop().await;
}

/// Runs `tests/clients/SCRIPT PORT DATA` with python3 against `server`;
/// it must succeed and print `done`.
async fn python_check(server: &Server, script: &str, what: &'static str, done: &'static str) {
    let mut program = Command::new("python3");
    program.arg(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("clients")
            .join(script),
    );
    client_check(server, what, done, program).await;
}

/// `DECLARE … CURSOR`, `FETCH` and `CLOSE` from psql: rows come in the
/// pieces asked for, the cursor closes with the transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_fetch_forward_in_pieces() {
    let server = Server::start().await;
    let script = "BEGIN;\n\
        DECLARE c CURSOR FOR SELECT x FROM generate_series(1, 10) AS t(x);\n\
        FETCH 3 FROM c;\n\
        FETCH FORWARD 2 FROM c;\n\
        FETCH NEXT FROM c;\n\
        FETCH ALL FROM c;\n\
        FETCH ALL FROM c;\n\
        CLOSE c;\n\
        COMMIT;\n";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cursor.sql");
    std::fs::write(&file, script).unwrap();
    let out = psql(
        server.addr.port(),
        vec![
            "-At".into(),
            "-f".into(),
            file.to_string_lossy().into_owned(),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.chars().all(|c| c.is_ascii_digit()) && !l.is_empty())
        .collect();
    assert_eq!(
        rows,
        ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"],
        "{stdout}"
    );
    assert!(stdout.contains("DECLARE CURSOR"), "{stdout}");
    assert!(stdout.contains("CLOSE CURSOR"), "{stdout}");
    // Fetching from a cursor that does not exist is SQLSTATE 34000.
    let out = psql(
        server.addr.port(),
        vec!["-c".into(), "FETCH 1 FROM nowhere".into()],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cursor \"nowhere\" does not exist"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop().await;
}

/// node-postgres (npm `pg`, installed by `.ci/setup` under
/// `tests/clients/node`) runs `tests/clients/node/pg_check.js`: simple and
/// parameterised queries, bytea images, float4[] arrays, SQLSTATEs, a
/// catalog query, many rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_works_as_with_postgres() {
    let server = Server::start().await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/node/pg_check.js");
    let mut node = Command::new("node");
    node.arg(script);
    client_check(
        &server,
        "node-postgres (npm install --prefix tests/clients/node if pg is missing)",
        "node-postgres: ok",
        node,
    )
    .await;
    server.stop().await;
}

/// Runs a client program with the server's port and the sample data
/// directory as its last arguments; fails with its output unless it
/// succeeds and prints `done`.
async fn client_check(
    server: &Server,
    what: &'static str,
    done: &'static str,
    mut program: Command,
) {
    program
        .arg(server.addr.port().to_string())
        .arg(server.data());
    let out = tokio::task::spawn_blocking(move || program.output())
        .await
        .expect("task")
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(done),
        "{what} check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A connection whose NOTICE messages are kept, in order, and whose end
/// (the connection future's result) can be awaited.
async fn connect_with_notices(
    server: &Server,
) -> (
    Client,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (client, mut connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=tester dbname=quiver",
            server.addr.port()
        ),
        NoTls,
    )
    .await
    .expect("connect");
    let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = std::sync::Arc::clone(&notices);
    let ended = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = futures::StreamExt::next(&mut messages).await {
            if let tokio_postgres::AsyncMessage::Notice(n) = message? {
                kept.lock().expect("notices").push(n.message().to_string());
            }
        }
        Ok(())
    });
    (client, notices, ended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_notices_while_statements_run() {
    let server = Server::start().await;
    let data = server.data();

    // psql prints them: files read by the scan, and the rows.
    let out = psql(
        server.addr.port(),
        vec![
            "-c".into(),
            "SET quiver.progress = on".into(),
            "-c".into(),
            "SET quiver.progress_interval_ms = 1".into(),
            "-c".into(),
            format!("SELECT count(*) AS n FROM read_images('{data}/images/') WHERE width > 0"),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "psql failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(" 8\n"), "{stdout}");
    assert!(
        stderr.contains("NOTICE:  finished: 1 rows · 8 files after "),
        "{stderr}"
    );

    // A long statement reports again and again while it runs, in both
    // protocols; off (the default), nothing is sent.
    let (c, notices, _) = connect_with_notices(&server).await;
    c.simple_query("SET statement_timeout = 1500")
        .await
        .expect("timeout");
    c.simple_query(ENDLESS).await.expect_err("timed out");
    assert!(notices.lock().unwrap().is_empty());
    c.simple_query("SET quiver.progress = on; SET quiver.progress_interval_ms = 200")
        .await
        .expect("progress on");
    for extended in [false, true] {
        notices.lock().unwrap().clear();
        let err = if extended {
            c.query(ENDLESS, &[])
                .await
                .map(|_| ())
                .expect_err("timed out")
        } else {
            c.simple_query(ENDLESS)
                .await
                .map(|_| ())
                .expect_err("timed out")
        };
        assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err:?}");
        let seen = notices.lock().unwrap().clone();
        assert!(seen.len() >= 3, "extended={extended}: {seen:?}");
        assert!(
            seen.iter()
                .all(|n| n.starts_with("progress: 0 rows after ")),
            "{seen:?}"
        );
    }
    // Rows sent count as they go.
    notices.lock().unwrap().clear();
    c.simple_query("SET quiver.progress_interval_ms = 1")
        .await
        .expect("interval");
    let rows = c
        .query("SELECT x FROM generate_series(1, 20000) AS t(x)", &[])
        .await
        .expect("rows");
    assert_eq!(rows.len(), 20000);
    let seen = notices.lock().unwrap().clone();
    assert!(
        seen.last()
            .is_some_and(|n| n.starts_with("finished: 20000 rows after ")),
        "{seen:?}"
    );
    let bad = c
        .simple_query("SET quiver.progress = sometimes")
        .await
        .expect_err("not a boolean");
    assert!(format!("{bad:?}").contains("on or off"), "{bad:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_settings_are_the_connections_own() {
    let server = Server::start().await;
    let a = server.connect().await;
    let b = server.connect().await;
    a.simple_query("SET application_name = 'loader'; SET statement_timeout TO '5s'")
        .await
        .expect("set");
    let read = "SELECT current_setting('application_name'), current_setting('statement_timeout')";
    let rows = simple_rows(&a.simple_query(read).await.expect("a"));
    assert_eq!(rows, vec![vec![Some("loader".into()), Some("5s".into())]]);
    let rows = a.query(read, &[]).await.expect("a, extended");
    assert_eq!(rows[0].get::<_, String>(0), "loader");
    let rows = simple_rows(&b.simple_query(read).await.expect("b"));
    assert_eq!(rows, vec![vec![Some("".into()), Some("0".into())]]);
    // SHOW and current_setting agree; DEFAULT goes back.
    a.simple_query("SET application_name TO DEFAULT")
        .await
        .expect("default");
    let rows = simple_rows(&a.simple_query("SHOW application_name").await.expect("show"));
    assert_eq!(rows, vec![vec![Some("".into())]]);
    let err = a
        .simple_query("SET statement_timeout = 'soon'")
        .await
        .expect_err("not a duration");
    assert_eq!(
        err.code(),
        Some(&SqlState::INVALID_PARAMETER_VALUE),
        "{err:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_end_with_57p05() {
    let server = Server::start().await;
    let idle = std::time::Duration::from_millis(1200);

    // Set by the client: the connection ends with FATAL 57P05 once it has
    // waited longer than the timeout for its next statement.
    let (c, _, ended) = connect_with_notices(&server).await;
    c.simple_query("SET idle_session_timeout = 400; SET statement_timeout = 1000")
        .await
        .expect("set");
    // Busy is not idle: a statement longer than the idle timeout runs
    // until its own timeout.
    let err = c.query(ENDLESS, &[]).await.expect_err("timed out");
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err:?}");
    let started = std::time::Instant::now();
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), ended)
        .await
        .expect("ended within 10 s")
        .expect("connection task");
    let err = end.expect_err("ended by the server");
    assert_eq!(err.code().map(|c| c.code()), Some("57P05"), "{err:?}");
    assert!(
        format!("{err:?}").contains("idle-session timeout"),
        "{err:?}"
    );
    assert!(started.elapsed() < idle * 2, "{:?}", started.elapsed());
    assert!(c.simple_query("SELECT 1").await.is_err());

    // An open transaction is not idle (Postgres has another timeout for it).
    let (c, _, ended) = connect_with_notices(&server).await;
    c.simple_query("SET idle_session_timeout = 300; BEGIN")
        .await
        .expect("begin");
    tokio::time::sleep(idle).await;
    assert!(!ended.is_finished());
    c.simple_query("SELECT 1").await.expect("still open");
    c.simple_query("COMMIT").await.expect("commit");
    tokio::time::sleep(idle).await;
    assert!(ended.is_finished());
    server.stop().await;

    // From the config, for every connection.
    let mut config = quiver::QuiverConfig::default();
    config.server.idle_session_timeout = Some("300ms".into());
    let server = Server::start_with(config).await;
    let (c, _, ended) = connect_with_notices(&server).await;
    let rows = simple_rows(
        &c.simple_query("SHOW idle_session_timeout")
            .await
            .expect("show"),
    );
    assert_eq!(rows, vec![vec![Some("300ms".into())]]);
    tokio::time::sleep(idle).await;
    assert!(ended.is_finished());
    server.stop().await;
}

/// A protocol 3.0 startup message for user `tester`.
fn startup_message() -> Vec<u8> {
    let mut body = vec![0, 3, 0, 0];
    for s in ["user", "tester", "database", "quiver"] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// The message types of the frames in `bytes` (up to a cut-off frame).
fn message_types(bytes: &[u8]) -> Vec<char> {
    let mut types = vec![];
    let mut at = 0;
    while at + 5 <= bytes.len() {
        types.push(bytes[at] as char);
        let len = u32::from_be_bytes([bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4]]);
        at += 1 + len as usize;
    }
    types
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_end_only_their_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start().await;
    let bystander = server.connect().await;
    let after_startup = |frame: &[u8]| {
        let mut bytes = startup_message();
        bytes.extend_from_slice(frame);
        bytes
    };
    // (what, bytes, whether the startup itself is well formed)
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "a startup length below the minimum",
            vec![0, 0, 0, 2, 0, 3, 0, 0],
            false,
        ),
        (
            "a startup of an unknown protocol",
            vec![0, 0, 0, 8, 0x12, 0x34, 0, 0],
            false,
        ),
        (
            "a startup whose parameters are not terminated",
            vec![0, 0, 0, 12, 0, 3, 0, 0, b'u', b's', b'e', b'r'],
            false,
        ),
        (
            "an unknown message type",
            after_startup(&[b'!', 0, 0, 0, 4]),
            true,
        ),
        (
            "a message length below the minimum",
            after_startup(&[b'Q', 0, 0, 0, 1]),
            true,
        ),
        (
            "a negative message length",
            after_startup(&[b'Q', 0xff, 0xff, 0xff, 0xff]),
            true,
        ),
        (
            "a Parse without its terminators",
            after_startup(&[b'P', 0, 0, 0, 8, b'a', b'b', b'c', b'd']),
            true,
        ),
        (
            "a Bind announcing more parameters than it carries",
            after_startup(&[b'B', 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0x7f, 0xff]),
            true,
        ),
        (
            "a Query that is not UTF-8",
            after_startup(&[b'Q', 0, 0, 0, 7, 0xff, 0xfe, 0]),
            true,
        ),
    ];
    for (what, bytes, after_startup_case) in cases {
        let mut socket = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        socket.write_all(&bytes).await.expect("send");
        let mut got = vec![];
        let closed = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            socket.read_to_end(&mut got),
        )
        .await;
        let types = message_types(&got);
        eprintln!("{what}: closed={} types={types:?}", closed.is_ok());
        // Either the connection ends (pgwire 0.42 closes it without an
        // ErrorResponse when a message cannot be decoded), or the message
        // was read as something and answered (a Query of length 1 is an
        // empty query to pgwire: EmptyQueryResponse, ReadyForQuery).
        let answered = types
            .iter()
            .position(|t| *t == 'Z')
            .is_some_and(|startup_done| types.len() > startup_done + 1);
        assert!(
            closed.is_ok() || (after_startup_case && answered),
            "{what}: no answer, the connection stays open ({types:?})"
        );
    }
    // A CopyData declaring a length below 4 makes pgwire 0.42.1 panic
    // (found by fuzz/): the connection ends with FATAL 08P01.
    let mut socket = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    socket
        .write_all(&after_startup(&[b'd', 0, 0, 0, 0, b'd']))
        .await
        .expect("send");
    let mut got = vec![];
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        socket.read_to_end(&mut got),
    )
    .await
    .expect("closed within 5 s")
    .expect("read");
    assert!(
        message_types(&got).ends_with(&['K', 'Z', 'E']),
        "{:?}",
        message_types(&got)
    );
    assert!(String::from_utf8_lossy(&got).contains("08P01"));

    // Nobody else noticed: the other connection works, new ones too.
    let rows = simple_rows(
        &bystander
            .simple_query("SELECT 40 + 2")
            .await
            .expect("bystander"),
    );
    assert_eq!(rows, vec![vec![Some("42".into())]]);
    let fresh = server.connect().await;
    fresh
        .simple_query("SELECT 1")
        .await
        .expect("a new connection");
    server.stop().await;
}

/// A frontend message of type `t`.
fn frame(t: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![t];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Reads from `socket` until `bytes` holds a frame of type `until` or
/// `wait` passes; the message types read.
async fn read_until(
    socket: &mut tokio::net::TcpStream,
    bytes: &mut Vec<u8>,
    until: char,
    wait: std::time::Duration,
) -> Vec<char> {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + wait;
    while !message_types(bytes).contains(&until) {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => bytes.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    message_types(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_query_answers_wait_for_sync_or_flush() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start().await;
    let mut socket = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    socket.write_all(&startup_message()).await.expect("startup");
    let mut got = vec![];
    let wait = std::time::Duration::from_secs(5);
    assert!(
        read_until(&mut socket, &mut got, 'Z', wait)
            .await
            .contains(&'Z')
    );
    // Parse, Bind ($1 = 41), Describe and Execute the unnamed portal.
    let mut messages = frame(b'P', b"\0SELECT $1::int + 1 AS answer\0\0\0");
    messages.extend(frame(b'B', b"\0\0\0\0\0\x01\0\0\0\x0241\0\0"));
    messages.extend(frame(b'D', b"P\0"));
    messages.extend(frame(b'E', b"\0\0\0\0\0"));
    socket.write_all(&messages).await.expect("send");
    // Nothing is sent before the client asks (Postgres sends on Sync or
    // Flush): a short wait sees no answer.
    let mut answers = vec![];
    let early = read_until(
        &mut socket,
        &mut answers,
        '1',
        std::time::Duration::from_millis(300),
    )
    .await;
    assert!(early.is_empty(), "answered before Flush or Sync: {early:?}");
    socket.write_all(&frame(b'H', b"")).await.expect("flush");
    let flushed = read_until(&mut socket, &mut answers, 'C', wait).await;
    assert_eq!(flushed, vec!['1', '2', 'T', 'D', 'C'], "after Flush");
    assert!(String::from_utf8_lossy(&answers).contains("42"));
    socket.write_all(&frame(b'S', b"")).await.expect("sync");
    let synced = read_until(&mut socket, &mut answers, 'Z', wait).await;
    assert_eq!(synced, vec!['1', '2', 'T', 'D', 'C', 'Z'], "after Sync");
    // An error still reaches the client at once, and the Sync after it
    // ends the round trip.
    let mut failing = frame(b'P', b"\0SELECT * FROM no_such_table\0\0\0");
    failing.extend(frame(b'S', b""));
    socket.write_all(&failing).await.expect("send");
    let mut error = vec![];
    let types = read_until(&mut socket, &mut error, 'Z', wait).await;
    assert_eq!(types, vec!['E', 'Z'], "{}", String::from_utf8_lossy(&error));
    assert!(String::from_utf8_lossy(&error).contains("42P01"));
    // Command tags are Postgres' own: a count once, after the command.
    socket
        .write_all(&frame(
            b'Q',
            b"BEGIN; DECLARE c CURSOR FOR SELECT x FROM generate_series(1, 5) AS t(x); \
              FETCH 2 FROM c; SELECT 1; COMMIT\0",
        ))
        .await
        .expect("send");
    let mut tags = vec![];
    read_until(&mut socket, &mut tags, 'Z', wait).await;
    let tags = String::from_utf8_lossy(&tags);
    for tag in [
        "BEGIN\0",
        "DECLARE CURSOR\0",
        "FETCH 2\0",
        "SELECT 1\0",
        "COMMIT\0",
    ] {
        assert!(tags.contains(tag), "no {tag:?} in {tags:?}");
    }
    server.stop().await;
}

/// `pgbench` (Postgres' own benchmark client) with a custom script, in the
/// simple, extended and prepared protocols; its stdout.
async fn pgbench(port: u16, script: &str, mode: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bench.sql");
    std::fs::write(&file, script).expect("script");
    let out = tokio::task::spawn_blocking({
        let mode = mode.to_string();
        move || {
            Command::new("pgbench")
                .args([
                    "-n",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "tester",
                    "-c",
                    "2",
                    "-j",
                    "2",
                ])
                .args(["-t", "25", "-M", &mode])
                .arg("-p")
                .arg(port.to_string())
                .arg("-f")
                .arg(&file)
                .arg("quiver")
                .output()
        }
    })
    .await
    .expect("pgbench task")
    .expect("run pgbench (apt-get install postgresql-15)");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pgbench -M {mode} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_scripts_in_every_protocol_mode() {
    let server = Server::start().await;
    let data = server.data();
    let script = format!(
        "\\set id random(1, 1000)\n\
         SELECT 1;\n\
         SELECT name, country FROM read_csv('{data}/customers.csv') WHERE id = :id;\n"
    );
    for mode in ["simple", "extended", "prepared"] {
        let out = pgbench(server.addr.port(), &script, mode).await;
        assert!(
            out.contains(&format!("query mode: {mode}")),
            "{mode}: {out}"
        );
        assert!(
            out.contains("number of transactions actually processed: 50/50"),
            "{mode}: {out}"
        );
        assert!(
            out.contains("number of failed transactions: 0"),
            "{mode}: {out}"
        );
    }
    server.stop().await;
}

/// Debian's pgjdbc (`libpostgresql-jdbc-java`).
const PGJDBC: &str = "/usr/share/java/postgresql.jar";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_works_as_with_postgres() {
    let server = Server::start().await;
    let source =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/jdbc/JdbcCheck.java");
    let classes = tempfile::tempdir().expect("tempdir");
    let compiled = Command::new("javac")
        .args(["-cp", PGJDBC, "-d"])
        .arg(classes.path())
        .arg(&source)
        .output()
        .expect("javac runs (apt-get install default-jdk-headless)");
    assert!(
        compiled.status.success(),
        "javac failed:\n{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let mut java = Command::new("java");
    java.arg("-cp")
        .arg(format!("{}:{PGJDBC}", classes.path().display()))
        .arg("JdbcCheck");
    client_check(
        &server,
        "pgjdbc (apt-get install libpostgresql-jdbc-java)",
        "jdbc: all checks passed",
        java,
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_stat_activity_and_per_connection_memory() {
    let mut config = quiver::QuiverConfig::default();
    config.server.connection_memory_limit = Some("64MB".into());
    let server = Server::start_with(config).await;
    let watcher = server.connect().await;
    watcher
        .simple_query("SET application_name = 'watcher'")
        .await
        .expect("set");
    let worker = server.connect().await;

    // The worker's sort holds its rows in the memory pool while the
    // client has not read them all.
    let rows = worker
        .query_raw(
            "SELECT x FROM generate_series(1, 2000000) AS t(x) ORDER BY x DESC",
            std::iter::empty::<i64>(),
        )
        .await
        .expect("sorting");
    let mut rows = Box::pin(rows);
    let first = futures::StreamExt::next(&mut rows)
        .await
        .expect("a row")
        .expect("row");
    assert_eq!(first.get::<_, i64>(0), 2_000_000);
    let seen = watcher
        .query(
            "SELECT application_name, state, query, quiver_memory_bytes, usename, datname \
             FROM pg_stat_activity ORDER BY quiver_memory_bytes DESC",
            &[],
        )
        .await
        .expect("pg_stat_activity");
    assert_eq!(seen.len(), 2, "{seen:?}");
    let (sorting, me) = (&seen[0], &seen[1]);
    assert_eq!(sorting.get::<_, String>("state"), "active");
    assert!(
        sorting
            .get::<_, String>("query")
            .contains("ORDER BY x DESC")
    );
    let held = sorting.get::<_, i64>("quiver_memory_bytes");
    assert!(held > 1_000_000, "the sort holds {held} bytes");
    assert_eq!(me.get::<_, String>("application_name"), "watcher");
    assert!(me.get::<_, String>("query").contains("pg_stat_activity"));
    assert_eq!(me.get::<_, String>("usename"), "tester");
    assert_eq!(me.get::<_, String>("datname"), "quiver");
    drop(rows);

    // psql's application_name arrives in its startup message.
    let out = psql(
        server.addr.port(),
        vec![
            "-A".into(),
            "-t".into(),
            "-c".into(),
            "SELECT application_name FROM pg_stat_activity WHERE query LIKE '%application_name FROM%'".into(),
        ],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "psql");

    // Over server.connection_memory_limit: that connection's statement
    // fails with 53200 (a hash join's build side cannot spill); the other
    // connections go on.
    let err = worker
        .simple_query(
            "SELECT count(*) FROM generate_series(1, 4000000) AS a(x) \
             JOIN generate_series(1, 4000000) AS b(y) ON x = y",
        )
        .await
        .expect_err("over the connection's limit");
    assert_eq!(err.code(), Some(&SqlState::OUT_OF_MEMORY), "{err:?}");
    assert!(
        format!("{err:?}").contains("server.connection_memory_limit"),
        "{err:?}"
    );
    let rows = simple_rows(&worker.simple_query("SELECT 1").await.expect("after"));
    assert_eq!(rows, vec![vec![Some("1".into())]]);
    server.stop().await;
}

/// `(files read, rows through the model)` of the statement whose text
/// holds `marker`, from `pg_stat_activity`; `None` once its connection is
/// gone.
async fn progress_of(watcher: &Client, marker: &str) -> Option<(i64, i64)> {
    let rows = watcher
        .query(
            "SELECT quiver_files_read, quiver_model_rows FROM pg_stat_activity \
             WHERE query LIKE '%' || $1 || '%' AND query NOT LIKE '%pg_stat_activity%'",
            &[&marker],
        )
        .await
        .expect("pg_stat_activity");
    rows.first().map(|r| (r.get(0), r.get(1)))
}

/// The progress of `marker`'s statement once six readings 300 ms apart
/// agree (at most 60 s).
async fn standing_still(watcher: &Client, marker: &str) -> (i64, i64) {
    let (mut last, mut same) = (None, 0);
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let now = progress_of(watcher, marker).await.expect("still connected");
        same = if last == Some(now) { same + 1 } else { 0 };
        if same == 5 {
            return now;
        }
        last = Some(now);
    }
    panic!("{marker}: still moving after 60 s: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_stops_the_reads_and_the_model() {
    // 1,000 files (one small PNG under 1,000 names), each row padded to
    // 256 KB so that the sockets' buffers hold a few dozen rows: a client
    // that reads one row and stops must stop the scan and the model calls
    // long before the end, for a SELECT as for a COPY … TO STDOUT, and
    // they must go on when it reads again.
    let server = Server::start().await;
    let files = tempfile::tempdir().expect("tempdir");
    let forest = std::path::Path::new(&server.data()).join("images/forest.png");
    for i in 0..1000 {
        std::fs::hard_link(&forest, files.path().join(format!("{i:04}.png"))).expect("link");
    }
    let models = tempfile::tempdir().expect("tempdir");
    quiver::sample::write_models(models.path()).expect("models");
    let watcher = server.connect().await;
    watcher
        .batch_execute(&format!(
            "CREATE MODEL clip TYPE clip FROM '{}'",
            models.path().join("models/tiny-clip").display()
        ))
        .await
        .expect("create model");
    let query = |marker: &str| {
        format!(
            "SELECT path, repeat('x', 262144) AS {marker}, embed_image('clip', image) AS e \
             FROM read_images('{}')",
            files.path().display()
        )
    };
    for copy in [false, true] {
        let marker = if copy { "copy_pad" } else { "select_pad" };
        // The connection's task is kept, to be aborted.
        let (client, connection) = server.connect_with_task().await;
        // Small batches everywhere (the scan's, the calls'): what runs
        // ahead of the client is a few dozen rows.
        client
            .batch_execute(
                "SET quiver.inference.batch_size = 8; \
                 SET quiver.inference.max_wait_ms = 10; \
                 SET datafusion.execution.batch_size = 16; \
                 SET datafusion.execution.target_partitions = 2",
            )
            .await
            .expect("set up");
        let mut rows: futures::stream::BoxStream<'_, Result<(), tokio_postgres::Error>> = if copy {
            let sql = format!("COPY ({}) TO STDOUT", query(marker));
            let stream = client.copy_out(sql.as_str()).await.expect("copy");
            Box::pin(futures::TryStreamExt::map_ok(stream, drop))
        } else {
            let sql = query(marker);
            let stream = client
                .query_raw(sql.as_str(), std::iter::empty::<i64>())
                .await
                .expect("select");
            Box::pin(futures::TryStreamExt::map_ok(stream, drop))
        };
        let first = futures::StreamExt::next(&mut rows).await;
        assert!(matches!(first, Some(Ok(()))), "{first:?}");
        let paused = standing_still(&watcher, marker).await;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert_eq!(progress_of(&watcher, marker).await, Some(paused));
        for _ in 0..300 {
            futures::StreamExt::next(&mut rows)
                .await
                .expect("a row")
                .expect("row");
        }
        let resumed = standing_still(&watcher, marker).await;
        eprintln!(
            "{marker}: (files, model rows) paused at {paused:?}, {resumed:?} after 300 more rows"
        );
        // Paused well short of the end; read 300 more rows, and it went on.
        assert!(paused.0 < 600 && paused.1 < 600, "{marker}: {paused:?}");
        assert!(
            resumed.0 >= 301 && resumed.1 >= 301 && resumed.1 > paused.1,
            "{marker}: {paused:?} then {resumed:?}"
        );
        assert!(resumed.0 < 1000, "{marker}: {resumed:?}");
        // A client gone mid-statement (its socket closed) ends the
        // statement and the connection.
        connection.abort();
        drop(client);
        let mut gone = false;
        for _ in 0..100 {
            if progress_of(&watcher, marker).await.is_none() {
                gone = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        assert!(gone, "{marker}: the connection outlived its client");
    }
    server.stop().await;
}
