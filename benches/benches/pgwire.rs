//! The Postgres endpoint against PostgreSQL 15 (issue 8), in one run on
//! the same machine:
//!
//! - `pgbench -n -f script` with 8 clients (`-c 8 -j 2`), in the simple
//!   and the prepared protocol, for `SELECT 1;` and for a point query
//!   (`SELECT name, country FROM customers WHERE id = :id` with a random
//!   id): PostgreSQL reads a 1,000-row table with a primary key, Quiver
//!   the same rows from the sample's `customers.csv`, declared as a config
//!   table held in memory (`[tables.customers] in_memory = true`), which
//!   every connection shares (no declared index: a kept plan builds its own
//!   hash index of `id` at its 5th execution, see the README's "Index
//!   lookups");
//! - a 1M-row × 5-column result (`generate_series` with four computed
//!   columns) fetched by `psql` to `/dev/null`, as rows per second.
//!
//! Targets: ≥ 0.8× PostgreSQL's transactions per second on the small
//! queries; result streaming ≥ 1× PostgreSQL's rows per second.
//!
//! PostgreSQL 15 comes from Debian (`apt-get install postgresql-15`, done
//! here when missing); it runs as the `postgres` user in a temporary data
//! directory on a free port, and is stopped at the end. Quiver serves from
//! this process on another port. Run with `cargo bench -p quiver-benches
//! --bench pgwire`; `QUIVER_BENCH_SECONDS` (default 5) sets each pgbench
//! run's length, `QUIVER_BENCH_ROUNDS` (default 3) the rounds: each figure
//! is the median of that many runs, PostgreSQL's and Quiver's alternating.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use quiver::Quiver;
use quiver_benches::{env_usize, median};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The result fetched by psql: 1M rows, 5 columns, the same SQL on both.
const STREAM: &str = "SELECT x, x * 2 AS doubled, 'row ' || x AS label, x / 3.0 AS third, x % 7 = 0 AS sevens FROM generate_series(1, 1000000) AS t(x)";

/// The middle value of `v` (the upper one of an even count).
fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A PostgreSQL 15 server in `dir` on `port`, stopped when dropped.
struct Postgres {
    dir: PathBuf,
    port: u16,
}

impl Postgres {
    fn start(dir: &Path, port: u16) -> Self {
        if !Path::new(PG_BIN).join("postgres").exists() {
            eprintln!("installing postgresql-15 (Debian) …");
            run(
                Command::new("apt-get")
                    .args([
                        "install",
                        "-y",
                        "-qq",
                        "--no-install-recommends",
                        "postgresql-15",
                    ])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
                "apt-get install postgresql-15",
            );
        }
        // initdb, running as `postgres`, writes to /dev/null; some
        // sandboxes leave it writable by root only.
        let dev_null = Path::new("/dev/null");
        if std::fs::metadata(dev_null).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.permissions().mode() & 0o002 == 0
        }) {
            eprintln!("making /dev/null writable for the postgres user (chmod 666) …");
            run(
                Command::new("chmod").args(["666", "/dev/null"]),
                "chmod /dev/null",
            );
        }
        let data = dir.join("pgdata");
        std::fs::create_dir_all(&data).expect("data dir");
        // Postgres refuses to run as root: its files belong to `postgres`.
        run(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir),
            "chown",
        );
        let as_postgres = |program: &str| {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(Path::new(PG_BIN).join(program));
            c
        };
        run(
            as_postgres("initdb")
                .args(["-A", "trust", "-U", "postgres", "-D"])
                .arg(&data),
            "initdb",
        );
        run(
            as_postgres("pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-w", "-l"])
                .arg(dir.join("postgres.log"))
                .arg("-o")
                .arg(format!(
                    "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=50",
                    dir.display()
                ))
                .arg("start"),
            "pg_ctl start",
        );
        Self { dir: data, port }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(Path::new(PG_BIN).join("pg_ctl"))
            .arg("-D")
            .arg(&self.dir)
            .args(["-m", "fast", "stop"])
            .output();
        let _ = self.port;
    }
}

fn psql(port: u16, user: &str, db: &str) -> Command {
    let mut c = Command::new("psql");
    c.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
        "-U",
        user,
        "-d",
        db,
    ])
    .arg("-p")
    .arg(port.to_string());
    c
}

/// pgbench's transactions per second for `script` (without the initial
/// connection time).
fn pgbench(port: u16, user: &str, db: &str, script: &Path, mode: &str, seconds: usize) -> f64 {
    let out = run(
        Command::new("pgbench")
            .args([
                "-n",
                "-h",
                "127.0.0.1",
                "-U",
                user,
                "-c",
                "8",
                "-j",
                "2",
                "-M",
                mode,
            ])
            .arg("-p")
            .arg(port.to_string())
            .arg("-T")
            .arg(seconds.to_string())
            .arg("-f")
            .arg(script)
            .arg(db),
        "pgbench",
    );
    out.lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no tps in pgbench's output:\n{out}"))
}

/// Seconds psql takes to fetch [`STREAM`] and print it to /dev/null.
fn stream_once(port: u16, user: &str, db: &str) -> Duration {
    let started = Instant::now();
    run(
        psql(port, user, db).args(["-A", "-t", "-o", "/dev/null", "-c", STREAM]),
        "psql streaming",
    );
    started.elapsed()
}

fn main() {
    let seconds = env_usize("QUIVER_BENCH_SECONDS", 5);
    let rounds = env_usize("QUIVER_BENCH_ROUNDS", 3);
    let work = tempfile::tempdir().expect("tempdir");
    let data = work.path().join("sample");
    quiver::sample::generate(&data).expect("sample data");
    let customers = data.join("customers.csv");

    // PostgreSQL 15 with the same customers, and a primary key.
    let pg_dir = work.path().join("pg");
    let pg = Postgres::start(&pg_dir, free_port());
    run(
        psql(pg.port, "postgres", "postgres")
            .arg("-c")
            .arg("CREATE TABLE customers (id bigint PRIMARY KEY, name text, country text, signup_date date)")
            .arg("-c")
            .arg(format!("\\copy customers FROM '{}' CSV HEADER", customers.display())),
        "loading PostgreSQL",
    );

    // Quiver, serving from this process.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let quiver_port = listener.local_addr().expect("addr").port();
    let mut config = quiver::QuiverConfig::default();
    config.tables.insert(
        "customers".to_string(),
        quiver::TableDeclaration {
            format: "csv".to_string(),
            location: customers.display().to_string(),
            options: Default::default(),
            in_memory: true,
        },
    );
    let engine = runtime
        .block_on(Quiver::builder().config(config).open())
        .expect("engine");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(async move {
        quiver_server::serve(listener, engine, async {
            let _ = stopped.await;
        })
        .await
    });

    let scripts = work.path().join("scripts");
    std::fs::create_dir_all(&scripts).expect("scripts dir");
    let write = |name: &str, text: &str| {
        let path = scripts.join(name);
        std::fs::write(&path, text).expect("script");
        path
    };
    let select1 = write("select1.sql", "SELECT 1;\n");
    let point = write(
        "point.sql",
        "\\set id random(1, 1000)\nSELECT name, country FROM customers WHERE id = :id;\n",
    );

    println!(
        "pgbench, 8 clients, {seconds} s per run (transactions per second, median of {rounds})"
    );
    println!(
        "{:<28} {:>14} {:>14} {:>8}",
        "", "PostgreSQL 15", "Quiver", "ratio"
    );
    for (name, pg_script, quiver_script) in [
        ("SELECT 1", &select1, &select1),
        ("point query", &point, &point),
    ] {
        for mode in ["simple", "prepared"] {
            // Rounds alternate so that machine noise hits both alike.
            let mut pg_tps = vec![];
            let mut quiver_tps = vec![];
            for _ in 0..rounds {
                pg_tps.push(pgbench(
                    pg.port, "postgres", "postgres", pg_script, mode, seconds,
                ));
                quiver_tps.push(pgbench(
                    quiver_port,
                    "bench",
                    "quiver",
                    quiver_script,
                    mode,
                    seconds,
                ));
            }
            let (pg_tps, quiver_tps) = (median_of(pg_tps), median_of(quiver_tps));
            println!(
                "{:<28} {:>14.0} {:>14.0} {:>7.2}×",
                format!("{name} ({mode})"),
                pg_tps,
                quiver_tps,
                quiver_tps / pg_tps
            );
        }
    }

    // Rounds alternate so that machine noise hits both alike.
    let mut pg_times = vec![];
    let mut quiver_times = vec![];
    for _ in 0..rounds {
        pg_times.push(stream_once(pg.port, "postgres", "postgres"));
        quiver_times.push(stream_once(quiver_port, "bench", "quiver"));
    }
    let rows = 1_000_000.0;
    let pg_rate = rows / median(pg_times).as_secs_f64();
    let quiver_rate = rows / median(quiver_times).as_secs_f64();
    println!("\npsql fetching 1M rows × 5 columns (rows per second, median of {rounds})");
    println!(
        "{:<28} {:>14.0} {:>14.0} {:>7.2}×",
        "streaming",
        pg_rate,
        quiver_rate,
        quiver_rate / pg_rate
    );

    let _ = stop.send(());
    let _ = runtime.block_on(server);
    drop(pg);
}
