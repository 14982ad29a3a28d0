//! The images benchmark of issue 6, measured in one run over a generated
//! corpus of photo-like JPEGs (640×480 to 1920×1080, 100–400 KB):
//!
//! - **decode-only limit**: every image read and fully decoded with the
//!   decoder Quiver uses (`quiver_media::pixels::decode`), one thread per
//!   core, no SQL;
//! - **tensor pipeline**: `SELECT count(*), avg(t[1]) FROM (SELECT
//!   image_to_tensor(image, 224, 224) AS t FROM read_images('…'))`;
//! - **metadata only**: `SELECT count(*), sum(width * height) FROM
//!   read_images('…')`.
//!
//! Targets: the tensor pipeline at ≥ 0.85× the decode-only limit (above it
//! where DCT-scaled decoding applies), metadata-only ≥ 20× faster than the
//! tensor pipeline. Run with `cargo bench -p quiver-benches --bench images`;
//! `QUIVER_BENCH_IMAGES` (default 1000) and `QUIVER_BENCH_ROUNDS` (default
//! 3) change the corpus and the rounds. The corpus is kept under
//! `target/bench-data/` between runs. Rounds alternate between the three so
//! that machine noise hits them alike; figures are medians.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use quiver::Quiver;
use quiver_benches::{corpus_dir, count_of, each_file_in_parallel, env_usize, median};
use quiver_media::DecodeLimits;

/// Reads and fully decodes every file, one worker per core.
fn decode_only(paths: &[PathBuf], threads: usize) -> usize {
    let limits = DecodeLimits::default();
    each_file_in_parallel(paths, threads, |bytes| {
        let img = quiver_media::pixels::decode(bytes, &limits, None).expect("decode corpus file");
        (img.width * img.height) as usize
    })
}

/// Single-thread milliseconds per image of each stage of the tensor path,
/// to see where the time goes.
fn breakdown(paths: &[PathBuf]) {
    use quiver_media::pixels::{ResizeFilter, decode, resize, to_tensor};
    let files: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| std::fs::read(p).expect("read corpus file"))
        .collect();
    let limits = DecodeLimits::default();
    let time = |f: &dyn Fn(&[u8])| {
        let t = Instant::now();
        for b in &files {
            f(b);
        }
        t.elapsed().as_secs_f64() * 1e3 / files.len() as f64
    };
    let probe = time(&|b| {
        quiver_media::probe_image(b).expect("probe");
    });
    let full = time(&|b| {
        decode(b, &limits, None).expect("decode");
    });
    let scaled = time(&|b| {
        decode(b, &limits, Some((224, 224))).expect("decode");
    });
    let small: Vec<_> = files
        .iter()
        .map(|b| decode(b, &limits, Some((224, 224))).expect("decode"))
        .collect();
    let t = Instant::now();
    for p in &small {
        to_tensor(p, 224, 224, [0.0; 3], [1.0; 3]).expect("tensor");
    }
    let tensor = t.elapsed().as_secs_f64() * 1e3 / small.len() as f64;
    let t = Instant::now();
    for p in &small {
        resize(p, 224, 224, ResizeFilter::Bilinear).expect("resize");
    }
    let resize_ms = t.elapsed().as_secs_f64() * 1e3 / small.len() as f64;
    println!(
        "one thread, ms per image: header probe {probe:.3}, full decode {full:.2}, DCT-scaled decode (>=224) {scaled:.2}, resize of the scaled image {resize_ms:.2}, resize+tensor {tensor:.2}"
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let count = env_usize("QUIVER_BENCH_IMAGES", 1000);
    let rounds = env_usize("QUIVER_BENCH_ROUNDS", 3);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = corpus_dir(&format!("photos-{count}"));
    let started = Instant::now();
    let paths = quiver::sample::write_photo_corpus(&dir, count, threads).expect("write corpus");
    let sizes: Vec<u64> = paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .collect();
    let total: u64 = sizes.iter().sum();
    println!(
        "corpus: {count} photo-like JPEGs in {} ({:.1} MB, {:.0}–{:.0} KB, mean {:.0} KB; ready in {:.1} s); {threads} cores",
        dir.display(),
        total as f64 / 1e6,
        *sizes.iter().min().unwrap_or(&0) as f64 / 1e3,
        *sizes.iter().max().unwrap_or(&0) as f64 / 1e3,
        total as f64 / count as f64 / 1e3,
        started.elapsed().as_secs_f64()
    );

    breakdown(&paths[..paths.len().min(200)]);

    let q = Quiver::builder().build().expect("engine");
    let location = format!("{}/", dir.display());
    let tensor_sql = format!(
        "SELECT count(*), avg(t[1]) FROM (SELECT image_to_tensor(image, 224, 224) AS t FROM read_images('{location}'))"
    );
    let meta_sql = format!("SELECT count(*), sum(width * height) FROM read_images('{location}')");
    // The scan alone, every file read whole (no decoding): the I/O share.
    let bytes_sql = format!("SELECT count(image) FROM read_images('{location}')");

    if std::env::var_os("QUIVER_BENCH_EXPLAIN").is_some() {
        let plan = q
            .collect(&format!("EXPLAIN ANALYZE {tensor_sql}"))
            .await
            .expect("explain");
        println!(
            "{}",
            datafusion::arrow::util::pretty::pretty_format_batches(&plan).expect("format")
        );
    }
    // Warm the page cache and check the answers once.
    let decoded = decode_only(&paths, threads);
    assert_eq!(count_of(&q, &tensor_sql).await, count as i64);
    assert_eq!(count_of(&q, &meta_sql).await, count as i64);

    let (mut dec, mut ten, mut meta, mut bytes) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let t = Instant::now();
        assert_eq!(decode_only(&paths, threads), decoded);
        dec.push(t.elapsed());
        let t = Instant::now();
        count_of(&q, &tensor_sql).await;
        ten.push(t.elapsed());
        let t = Instant::now();
        count_of(&q, &meta_sql).await;
        meta.push(t.elapsed());
        let t = Instant::now();
        count_of(&q, &bytes_sql).await;
        bytes.push(t.elapsed());
    }
    let rate = |d: Duration| count as f64 / d.as_secs_f64();
    let (dec, ten, meta, bytes) = (median(dec), median(ten), median(meta), median(bytes));
    println!(
        "decode-only limit : {:>8.1} images/s ({:.2} s)",
        rate(dec),
        dec.as_secs_f64()
    );
    println!(
        "tensor pipeline   : {:>8.1} images/s ({:.2} s)",
        rate(ten),
        ten.as_secs_f64()
    );
    println!(
        "metadata only     : {:>8.1} images/s ({:.3} s)",
        rate(meta),
        meta.as_secs_f64()
    );
    println!(
        "scan of the bytes : {:>8.1} images/s ({:.3} s), no decoding",
        rate(bytes),
        bytes.as_secs_f64()
    );
    println!(
        "tensor / decode-only = {:.2}x (target >= 0.85x); metadata / tensor = {:.1}x (target >= 20x)",
        rate(ten) / rate(dec),
        rate(meta) / rate(ten)
    );
}
