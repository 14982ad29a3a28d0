//! The real `quiver` binary, run as a user would: every example in
//! `queries/`, the demo, output formats, errors with `file:line:col`, and
//! the shell fed from a pipe.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn quiver() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quiver"));
    cmd.env_remove("QUIVER_CONFIG")
        .env("QUIVER_HISTORY", "/dev/null")
        .env("NO_COLOR", "1")
        .env_remove("QUIVER_MODELS_DIR");
    cmd
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A temporary working directory holding `sample-data/`.
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    quiver::sample::generate(&dir.path().join("sample-data")).expect("sample data");
    quiver::sample::write_models(&dir.path().join("sample-data")).expect("sample models");
    quiver::sample_video::write_video(&dir.path().join("sample-data/video")).expect("sample video");
    dir
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// `text` with the counts in `partition_sizes=[…]` written `n`: which
/// partition of a table made from a media scan holds a batch varies from
/// run to run (the scan's partitions share its files). Same length, so
/// tables keep their layout.
fn steady(text: &str) -> String {
    const KEY: &str = "partition_sizes=[";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(KEY) {
        let (head, tail) = rest.split_at(i + KEY.len());
        out.push_str(head);
        let end = tail.find(']').unwrap_or(tail.len());
        out.extend(
            tail[..end]
                .chars()
                .map(|c| if c.is_ascii_digit() { 'n' } else { c }),
        );
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn run_in(dir: &Path, args: &[&str]) -> Output {
    quiver()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run quiver")
}

#[test]
fn every_example_query_runs() {
    let dir = workdir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("queries"))
        .expect("queries/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "queries/ holds {} files", files.len());
    for file in files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let out = run_in(dir.path(), &["run", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{name} failed:\n{}",
            text(&out.stderr)
        );
        insta::assert_snapshot!(name, steady(&text(&out.stdout)));
    }
}

#[test]
fn demo_generates_data_and_runs_every_query() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = quiver()
        .args(["demo", "--no-serve", "--workdir"])
        .arg(dir.path())
        .output()
        .expect("run demo");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for f in std::fs::read_dir(repo().join("queries")).unwrap().flatten() {
        let name = format!("queries/{}", f.file_name().to_string_lossy());
        assert!(stdout.contains(&name), "demo did not run {name}");
    }
    assert!(stdout.contains("(8 rows)"), "{stdout}");
    assert!(
        dir.path()
            .join("sample-data/out/monthly_revenue.parquet")
            .exists()
    );
}

#[test]
fn syntax_error_points_at_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.sql");
    std::fs::write(
        &f,
        "SELECT 1;\n-- comment; with a semicolon\n  SELECT 2 +;\nSELECT 3;\n",
    )
    .unwrap();
    let out = run_in(dir.path(), &["run", "bad.sql"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with("bad.sql:3:"), "{err}");
    assert!(err.contains("error:"), "{err}");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("| 1 "), "first statement ran: {stdout}");
    assert!(!stdout.contains("| 3 "), "stopped at the error: {stdout}");

    let out = run_in(dir.path(), &["run", "--continue-on-error", "bad.sql"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("| 3 "),
        "went on after the error"
    );
}

#[test]
fn unknown_table_and_missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), &["sql", "SELECT * FROM nowhere"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("table 'datafusion.public.nowhere' not found"));

    let out = run_in(dir.path(), &["run", "missing.sql"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read missing.sql"));

    let out = run_in(
        dir.path(),
        &["sql", "SELECT * FROM read_parquet('gone/*.parquet')"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("gone"), "{}", text(&out.stderr));
}

#[test]
fn bad_config_values_name_key_and_origin() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("quiver.toml");
    std::fs::write(&cfg, "[exec]\nbatch_size = \"lots\"\n").unwrap();
    let out = run_in(dir.path(), &["--config", "quiver.toml", "sql", "SELECT 1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("quiver.toml") && err.contains("batch_size"),
        "{err}"
    );

    let out = quiver()
        .current_dir(dir.path())
        .env("QUIVER_EXEC_MEMORY_LIMIT", "12 parsecs")
        .args(["sql", "SELECT 1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("QUIVER_EXEC_MEMORY_LIMIT") && err.contains("parsecs"),
        "{err}"
    );
}

#[test]
fn output_formats() {
    let dir = tempfile::tempdir().unwrap();
    let sql = "SELECT * FROM (VALUES (1, 'a'), (2, NULL)) AS t(n, s) ORDER BY n";
    let out = run_in(dir.path(), &["sql", "--format", "csv", sql]);
    assert_eq!(text(&out.stdout), "n,s\n1,a\n2,\n");
    let out = run_in(dir.path(), &["sql", "--format", "ndjson", sql]);
    assert_eq!(text(&out.stdout), "{\"n\":1,\"s\":\"a\"}\n{\"n\":2}\n");
    let out = run_in(dir.path(), &["sql", "--format", "json", sql]);
    assert_eq!(text(&out.stdout), "[{\"n\":1,\"s\":\"a\"},{\"n\":2}]\n");
    let out = run_in(dir.path(), &["sql", "--max-rows", "1", sql]);
    let table = text(&out.stdout);
    assert!(table.contains("(2 rows, 1 shown)"), "{table}");
    assert!(!table.contains("NULL"), "{table}");

    // Parquet goes to a file, which reads back.
    let out = run_in(
        dir.path(),
        &["sql", "--format", "parquet", "-o", "r.parquet", sql],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run_in(
        dir.path(),
        &[
            "sql",
            "--format",
            "csv",
            "SELECT count(*) AS n FROM read_parquet('r.parquet')",
        ],
    );
    assert_eq!(text(&out.stdout), "n\n2\n");
    let out = run_in(dir.path(), &["sql", "--format", "parquet", sql]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--output"));
}

#[test]
fn failed_run_leaves_no_output_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("two.sql"),
        "SELECT 1 AS a;\nSELECT * FROM nope;\n",
    )
    .unwrap();
    let out = run_in(
        dir.path(),
        &["run", "--format", "csv", "-o", "out.csv", "two.sql"],
    );
    assert_eq!(out.status.code(), Some(1));
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["two.sql".to_string()], "left behind: {left:?}");

    let out = run_in(
        dir.path(),
        &[
            "run",
            "--format",
            "csv",
            "-o",
            "out.csv",
            "two.sql",
            "--continue-on-error",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.csv")).unwrap(),
        "a\n1\n"
    );
}

#[test]
fn shell_reads_multiline_statements_and_meta_commands() {
    let dir = workdir();
    let mut child = quiver()
        .current_dir(dir.path())
        .arg("shell")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shell");
    let script = "\
CREATE EXTERNAL TABLE products STORED AS PARQUET LOCATION 'sample-data/products.parquet';
SELECT category,
       count(*) AS n
FROM products
GROUP BY category
ORDER BY category
LIMIT 2;
\\d
\\d products
\\d nothere
\\timing on
SELECT 'it''s; fine' AS s;
\\bogus
SELEC 1;
\\q
SELECT 'not reached';
";
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(stdout.contains("| audio    | 33 |"), "{stdout}");
    assert!(stdout.contains("| public | products |"), "\\d: {stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("| price ") && l.contains("Float64")),
        "\\d products: {stdout}"
    );
    assert!(
        stderr.contains("Did not find any relation named \"nothere\""),
        "{stderr}"
    );
    assert!(stdout.contains("it's; fine"), "{stdout}");
    assert!(stderr.contains("Time: "), "{stderr}");
    assert!(stderr.contains("invalid command \\bogus"), "{stderr}");
    assert!(stderr.contains("shell:1:1: error:"), "{stderr}");
    assert!(!stdout.contains("not reached"), "{stdout}");
}

#[test]
fn data_roots_confine_local_paths() {
    let dir = workdir();
    let out = run_in(
        dir.path(),
        &[
            "--data-root",
            "sample-data",
            "sql",
            "SELECT count(*) FROM read_csv('sample-data/customers.csv')",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run_in(
        dir.path(),
        &[
            "--data-root",
            "sample-data",
            "sql",
            "SELECT * FROM read_csv('/etc/passwd')",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("outside the allowed data roots"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn models_import_check_and_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A checkpoint as downloaded: a model directory inside another.
    let download = dir.path().join("download/snapshot");
    quiver_models::testing::write_tiny_bert(&download, 32, 7).expect("tiny");
    let out = run_in(
        dir.path(),
        &[
            "models", "import", "download", "--name", "tiny", "--dir", "models",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("imported tiny (bert)"), "{stdout}");
    assert!(
        stdout.contains("CREATE MODEL tiny TYPE bert FROM 'models/tiny'"),
        "{stdout}"
    );
    assert!(dir.path().join("models/tiny/model.safetensors").is_file());

    let out = run_in(dir.path(), &["models", "check", "models/tiny"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("32 floats (expected 32), length 1.0000"),
        "{stdout}"
    );

    std::fs::write(
        dir.path().join("quiver.toml"),
        "[models.tiny]\ntype = \"bert\"\npath = \"models/tiny\"\nbatch_size = 16\n",
    )
    .expect("config");
    let out = run_in(
        dir.path(),
        &[
            "--config",
            "quiver.toml",
            "models",
            "list",
            "--format",
            "csv",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("tiny,bert,text embedding,models/tiny,cpu,f32,16,32,"),
        "{stdout}"
    );
    let out = run_in(
        dir.path(),
        &["--config", "quiver.toml", "models", "check", "tiny"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Not a model: a clear error, no panic.
    let out = run_in(dir.path(), &["models", "import", "quiver.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a readable zip archive"),
        "{}",
        text(&out.stderr)
    );
}
