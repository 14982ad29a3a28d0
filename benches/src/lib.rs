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

/// CPU seconds this process has used so far (user + system, all threads)
/// and its minor page faults, from `/proc/self/stat`; `None` where that
/// cannot be read. Clock ticks are 10 ms, so time several runs.
pub fn process_cpu_seconds() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses: the first
    // is field 3 of the whole line.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    // minflt is field 10, utime and stime fields 14 and 15.
    Some(((field(14)? + field(15)?) as f64 / 100.0, field(10)?))
}

/// The number after `key` in `/proc/self/status` (`Threads:`, or a
/// size in kB); NaN where it cannot be read.
pub fn status_value(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(f64::NAN)
}

/// A `/proc/self/status` size (`VmRSS:`, `VmHWM:`, `RssAnon:`) in MB.
pub fn rss_mb(key: &str) -> f64 {
    status_value(key) / 1024.0
}

/// The process's peak RSS so far (`VmHWM`), in MB.
pub fn peak_rss_mb() -> f64 {
    rss_mb("VmHWM:")
}

/// The lines of an `EXPLAIN [ANALYZE]` result's plans.
pub fn explain_lines(batches: &[datafusion::arrow::array::RecordBatch]) -> Vec<String> {
    use datafusion::arrow::array::{Array, AsArray};
    batches
        .iter()
        .flat_map(|b| {
            let text = b.column(1).as_string::<i32>();
            (0..text.len())
                .flat_map(|i| {
                    text.value(i)
                        .lines()
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}
