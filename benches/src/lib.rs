//! Helpers the benchmarks share.

use std::time::Duration;

/// `name` from the environment as a number, else `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of some timings (the upper one of an even count).
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// `target/bench-data/NAME`, where generated corpora are kept between runs
/// (next to the running bench binary: `target/release/deps/…`).
pub fn corpus_dir(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("bench binary path");
    let target = exe
        .ancestors()
        .nth(3)
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    target.join("bench-data").join(name)
}

/// Reads every file and hands its bytes to `work`, one worker per core
/// pulling from a shared queue (the "decode-only limit" of a benchmark);
/// returns the sum of what `work` returned.
pub fn each_file_in_parallel(
    paths: &[std::path::PathBuf],
    threads: usize,
    work: impl Fn(&[u8]) -> usize + Sync,
) -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let total = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = paths.get(i) else { return };
                    let bytes = std::fs::read(path).expect("read corpus file");
                    total.fetch_add(work(&bytes), Ordering::Relaxed);
                }
            });
        }
    });
    total.into_inner()
}

/// The first column of the first row of `sql`'s result, as a count.
pub async fn count_of(q: &quiver::Quiver, sql: &str) -> i64 {
    use datafusion::arrow::array::{Array, Int64Array};
    let batches = q.collect(sql).await.expect("query");
    let col = batches[0].column(0);
    col.as_any()
        .downcast_ref::<Int64Array>()
        .map(|a| a.value(0))
        .expect("count column")
}
