//! What media scans read: the sample media behind an object store that
//! counts the bytes each request returns, so that "metadata-only queries
//! read headers only" is measured, not assumed.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use quiver::Quiver;

/// A store that counts the bytes its reads return.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn ObjectStore>,
    bytes: AtomicU64,
    requests: AtomicU64,
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Counting {
    async fn put_opts(&self, l: &Path, p: PutPayload, o: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(l, p, o).await
    }

    async fn put_multipart_opts(
        &self,
        l: &Path,
        o: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(l, o).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        // A HEAD request (a single file's listing) reads no bytes.
        let head = options.head;
        let result = self.inner.get_opts(location, options).await?;
        if head {
            return Ok(result);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(result.range.end - result.range.start, Ordering::Relaxed);
        Ok(result)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        let parts = self.inner.get_ranges(location, ranges).await?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let n: usize = parts.iter().map(bytes::Bytes::len).sum();
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(parts)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, o: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, o).await
    }
}

impl Counting {
    /// An engine whose store for `url` (`counted://name`) counts the
    /// reads of `inner`, and the counter.
    fn engine(inner: Arc<dyn ObjectStore>, url: &str) -> (Quiver, Arc<Counting>) {
        let store = Arc::new(Counting {
            inner,
            bytes: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        });
        let q = Quiver::builder().build().expect("engine");
        q.context().runtime_env().register_object_store(
            &url::Url::parse(url).expect("url"),
            Arc::clone(&store) as Arc<dyn ObjectStore>,
        );
        (q, store)
    }

    fn take(&self) -> (u64, u64) {
        (
            self.requests.swap(0, Ordering::Relaxed),
            self.bytes.swap(0, Ordering::Relaxed),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_queries_read_headers_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    quiver::sample::generate(dir.path()).expect("sample data");
    let (q, store) = Counting::engine(
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("local store")),
        "counted://sample",
    );
    let sizes: Vec<u64> = quiver::sample_audio::AUDIO
        .iter()
        .map(|(name, ..)| {
            std::fs::metadata(dir.path().join("audio").join(name))
                .expect("sample file")
                .len()
        })
        .collect();
    let total: u64 = sizes.iter().sum();

    // count(*) reads the listing only.
    q.collect("SELECT count(*) FROM read_audio('counted://sample/audio/')")
        .await
        .expect("count");
    assert_eq!(store.take(), (0, 0), "count(*) read file bytes");

    // Durations come from the two 16 KiB ends of each file (small files
    // whole), one request per file.
    q.collect(
        "SELECT sum(duration), max(tags['title']) FROM read_audio('counted://sample/audio/')",
    )
    .await
    .expect("durations");
    let (requests, bytes) = store.take();
    let bound: u64 = sizes.iter().map(|s| (*s).min(32 * 1024)).sum();
    assert_eq!(requests, sizes.len() as u64);
    assert!(
        bytes <= bound && bytes < total / 4,
        "read {bytes} bytes of {total} for headers (at most {bound} expected)"
    );

    // Decoding reads every file once, whole.
    q.collect("SELECT sum(audio_rms(audio)) FROM read_audio('counted://sample/audio/')")
        .await
        .expect("decode");
    assert_eq!(store.take(), (sizes.len() as u64, total));

    // A filter on the format reads headers, and only the matching files
    // further.
    q.collect(
        "SELECT count(audio) FROM read_audio('counted://sample/audio/') WHERE format = 'flac'",
    )
    .await
    .expect("filtered");
    let (_, bytes) = store.take();
    let flac: u64 = quiver::sample_audio::AUDIO
        .iter()
        .zip(&sizes)
        .filter(|((name, ..), _)| name.ends_with(".flac"))
        .map(|(_, s)| *s)
        .sum();
    assert!(
        bytes >= flac && bytes <= flac + bound,
        "read {bytes} bytes; the FLAC files hold {flac}"
    );

    // Images: dimensions from the first 64 KiB of each file.
    q.collect("SELECT sum(width * height) FROM read_images('counted://sample/images/')")
        .await
        .expect("image headers");
    let (requests, _) = store.take();
    assert_eq!(requests, quiver::sample::IMAGES.len() as u64);
}

/// The partitions of a scan share its files (one that runs out takes
/// batches from another's queue, and halves them near the end): still,
/// every file is read once and makes one row, run after run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_that_share_the_work_read_every_file_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    // About 15 MB of clips: several 4 MiB batches for each partition.
    let (paths, _) = quiver::sample_audio::write_audio_corpus(dir.path(), 40).expect("corpus");
    let total: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(p).expect("clip").len())
        .sum();
    let (q, store) = Counting::engine(
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("local store")),
        "counted://clips",
    );
    for partitions in [2, 3, 8] {
        q.collect(&format!(
            "SET datafusion.execution.target_partitions = {partitions}"
        ))
        .await
        .expect("set");
        for _ in 0..3 {
            let batches = q
                .collect(
                    "SELECT count(*), count(DISTINCT path), count(audio) \
                     FROM read_audio('counted://clips/')",
                )
                .await
                .expect("scan");
            let row = &batches[0];
            let value = |c: usize| {
                row.column(c)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::Int64Array>()
                    .map(|a| a.value(0))
                    .expect("a bigint")
            };
            assert_eq!(
                (value(0), value(1), value(2)),
                (40, 40, 40),
                "{partitions} partitions"
            );
            assert_eq!(store.take(), (40, total), "{partitions} partitions");
        }
    }
}

/// Late materialization: a join of 100,000 image rows with a metadata
/// table that names 1% of them reads the bytes of those 1% only (and
/// nothing of the others: their listing is enough for the join).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_read_the_bytes_of_the_rows_they_keep() {
    const FILES: usize = 100_000;
    let dir = tempfile::tempdir().expect("tempdir");
    quiver::sample::generate(dir.path()).expect("sample data");
    let png = bytes::Bytes::from(
        std::fs::read(dir.path().join("images/mislabelled.png")).expect("sample png"),
    );
    let memory = Arc::new(object_store::memory::InMemory::new());
    for i in 0..FILES {
        memory
            .put(
                &Path::from(format!("photos/img_{i:06}.png")),
                PutPayload::from_bytes(png.clone()),
            )
            .await
            .expect("put");
    }
    let (q, store) = Counting::engine(memory, "counted://big");
    // Metadata for every 100th file, made from the listing alone.
    let (progress, _) = q.start_progress();
    let progress = progress.expect("progress counters");
    q.collect(
        "CREATE TABLE meta AS SELECT path, 'label ' || substr(path, -10, 6) AS label \
         FROM read_images('counted://big/photos/') WHERE path LIKE '%00.png'",
    )
    .await
    .expect("metadata table");
    assert_eq!(store.take(), (0, 0), "the metadata came from the listing");
    assert_eq!(progress.files(), 0, "progress counts no file read");

    let sql = "SELECT m.label, i.image, i.size FROM read_images('counted://big/photos/') i \
               JOIN meta m ON i.path = m.path";
    let plan = q.collect(&format!("EXPLAIN {sql}")).await.expect("explain");
    let plan = datafusion::arrow::util::pretty::pretty_format_batches(&plan)
        .expect("format")
        .to_string();
    assert!(plan.contains("media_fetch"), "{plan}");
    assert!(plan.contains("reads=listing"), "{plan}");

    q.start_progress();
    let batches = q.collect(sql).await.expect("join");
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, FILES / 100);
    // Progress (`quiver_files_read`) counts the files media_fetch read,
    // not the listing's 100,000.
    assert_eq!(progress.files(), (FILES / 100) as u64);
    let mut fetched = 0;
    for batch in &batches {
        let images = batch
            .column(1)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::BinaryArray>()
            .expect("image column");
        for image in images.iter() {
            assert_eq!(image, Some(png.as_ref()));
            fetched += 1;
        }
    }
    assert_eq!(fetched, FILES / 100);
    let (requests, bytes) = store.take();
    assert_eq!(requests, (FILES / 100) as u64, "one read per kept row");
    assert_eq!(bytes, (FILES / 100 * png.len()) as u64);

    // Pixels decoded below the join (a CTE here) are decoded above it, from
    // the files of the rows it keeps.
    let sql = "WITH px AS (SELECT path, image_resize(image_decode(image), 4, 4) AS pixels \
               FROM read_images('counted://big/photos/')) \
               SELECT m.label, p.pixels['width'] AS w FROM px p JOIN meta m ON p.path = m.path";
    let plan = q.collect(&format!("EXPLAIN {sql}")).await.expect("explain");
    let plan = datafusion::arrow::util::pretty::pretty_format_batches(&plan)
        .expect("format")
        .to_string();
    assert!(plan.contains("image_decode(media_fetch"), "{plan}");
    assert!(plan.contains("reads=listing"), "{plan}");
    let batches = q.collect(sql).await.expect("join over decoded pixels");
    let widths: Vec<u32> = batches
        .iter()
        .flat_map(|b| {
            b.column(1)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::UInt32Array>()
                .expect("width column")
                .iter()
                .collect::<Vec<_>>()
        })
        .map(|w| w.expect("a width"))
        .collect();
    assert_eq!(widths, vec![4; FILES / 100]);
    let (requests, bytes) = store.take();
    assert_eq!(requests, (FILES / 100) as u64, "one read per kept row");
    assert_eq!(bytes, (FILES / 100 * png.len()) as u64);
}

/// Video is read through ranged requests: probing reads the headers (the
/// start of the file and the index at its end), a window of frames seeks,
/// and LIMIT stops reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_reads_headers_and_seeks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("long.mp4");
    // 30 s of 640x360 H.264 at 2 Mbit/s, a keyframe every 2 s, the index
    // (moov) written at the end as ffmpeg does by default.
    let status = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=640x360:rate=25:duration=30")
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-b:v",
            "2M",
            "-g",
            "50",
        ])
        .args(["-pix_fmt", "yuv420p"])
        .arg(&path)
        .status()
        .expect("ffmpeg runs (the set-up installs it)");
    assert!(status.success());
    let size = std::fs::metadata(&path).expect("video").len();
    let (q, store) = Counting::engine(
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("local store")),
        "counted://video",
    );

    let rows = quiver_tests::batches_to_rows(
        &q.collect("SELECT duration, frame_count FROM read_video('counted://video/long.mp4')")
            .await
            .expect("probe"),
    )
    .expect("rows");
    assert_eq!(rows, vec![vec!["30.0", "750"]]);
    let (requests, bytes) = store.take();
    println!("probe: {bytes} of {size} bytes, {requests} requests");
    assert!(
        bytes * 10 < size,
        "probing read {bytes} bytes of {size} in {requests} requests"
    );

    // One second in the middle: a seek to the keyframe at 14 s.
    let rows = quiver_tests::batches_to_rows(
        &q.collect(
            "SELECT count(*), min(pts), max(pts) FROM video_frames('counted://video/long.mp4') \
             WHERE pts >= 15 AND pts < 16",
        )
        .await
        .expect("window"),
    )
    .expect("rows");
    assert_eq!(rows, vec![vec!["25", "15.0", "15.96"]]);
    let (requests, bytes) = store.take();
    println!("1-s window: {bytes} of {size} bytes, {requests} requests");
    assert!(
        bytes * 5 < size,
        "a 1-s window read {bytes} bytes of {size} in {requests} requests"
    );

    // LIMIT stops decoding and reading.
    q.collect("SELECT frame FROM video_frames('counted://video/long.mp4', fps => 1) LIMIT 2")
        .await
        .expect("limit");
    let (requests, bytes) = store.take();
    println!("LIMIT 2 at 1 fps: {bytes} of {size} bytes, {requests} requests");
    assert!(
        bytes * 5 < size,
        "two frames read {bytes} bytes of {size} in {requests} requests"
    );

    // All frames read the file about once.
    q.collect(
        "SELECT count(*) FROM video_frames('counted://video/long.mp4', keyframes_only => true)",
    )
    .await
    .expect("keyframes");
    let (requests, bytes) = store.take();
    println!("keyframes: {bytes} of {size} bytes, {requests} requests");
    assert!(bytes <= size * 2, "keyframes read {bytes} bytes of {size}");
}
