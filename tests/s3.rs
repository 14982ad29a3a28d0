//! Object-store tests against a real S3-compatible server (moto) on
//! loopback: COPY into a bucket, then read it back through every path the
//! engine offers (read_* functions, CREATE EXTERNAL TABLE, globs, plain
//! http:// URLs), and the errors of a missing bucket or a dead endpoint.

use std::time::{Duration, Instant};

use datafusion::arrow::array::Int64Array;
use quiver::Quiver;
use quiver_tests::{MotoServer, batches_to_rows};

async fn count(q: &Quiver, sql: &str) -> i64 {
    let batches = q
        .collect(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let col = datafusion::arrow::compute::cast(
        batches[0].column(0),
        &datafusion::arrow::datatypes::DataType::Int64,
    )
    .expect("an integer result");
    col.as_any()
        .downcast_ref::<Int64Array>()
        .expect("cast to Int64")
        .value(0)
}

/// A moto server with bucket `quiver` holding the sample dataset, and an
/// engine pointed at it.
async fn setup() -> (MotoServer, Quiver, tempfile::TempDir) {
    let server = MotoServer::start().expect("start moto (pip install 'moto[server]')");
    let status = server.create_bucket("quiver").expect("create bucket");
    assert!(status.contains("200"), "create bucket: {status}");
    let q = Quiver::builder()
        .config(server.config())
        .build()
        .expect("engine");
    let dir = tempfile::tempdir().expect("tempdir");
    quiver::sample::generate(dir.path()).expect("sample data");
    let local = dir.path().display().to_string();
    for f in 0..quiver::sample::ORDER_FILES {
        let n = count(
            &q,
            &format!(
                "COPY (SELECT * FROM read_parquet('{local}/orders/part-{f}.parquet')) \
                 TO 's3://quiver/orders/part-{f}.parquet' STORED AS PARQUET"
            ),
        )
        .await;
        assert_eq!(
            n as usize,
            quiver::sample::ORDERS / quiver::sample::ORDER_FILES
        );
    }
    count(
        &q,
        &format!(
            "COPY (SELECT * FROM read_csv('{local}/customers.csv')) \
             TO 's3://quiver/customers.csv' STORED AS CSV"
        ),
    )
    .await;
    count(
        &q,
        &format!(
            "COPY (SELECT * FROM read_json('{local}/events.json')) \
             TO 's3://quiver/events/events.json' STORED AS JSON"
        ),
    )
    .await;
    (server, q, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_functions_and_globs_on_s3() {
    let (_server, q, _dir) = setup().await;
    assert_eq!(
        count(
            &q,
            "SELECT count(*) FROM read_parquet('s3://quiver/orders/')"
        )
        .await,
        100_000
    );
    assert_eq!(
        count(
            &q,
            "SELECT count(*) FROM read_parquet('s3://quiver/orders/part-*.parquet')"
        )
        .await,
        100_000
    );
    assert_eq!(
        count(
            &q,
            "SELECT count(*) FROM read_parquet('s3://quiver/orders/part-[01].parquet')"
        )
        .await,
        50_000
    );
    assert_eq!(
        count(
            &q,
            "SELECT count(*) FROM read_csv('s3://quiver/customers.csv')"
        )
        .await,
        1_000
    );
    assert_eq!(
        count(&q, "SELECT count(*) FROM read_json('s3://quiver/events/')").await,
        5_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_tables_and_joins_on_s3() {
    let (_server, q, _dir) = setup().await;
    q.sql("CREATE EXTERNAL TABLE orders STORED AS PARQUET LOCATION 's3://quiver/orders/'")
        .await
        .expect("orders");
    q.sql(
        "CREATE EXTERNAL TABLE customers STORED AS CSV LOCATION 's3://quiver/customers.csv' \
         OPTIONS ('format.has_header' 'true')",
    )
    .await
    .expect("customers");
    q.sql(
        "CREATE EXTERNAL TABLE half STORED AS PARQUET \
         LOCATION 's3://quiver/orders/part-[23].parquet'",
    )
    .await
    .expect("glob table");
    assert_eq!(count(&q, "SELECT count(*) FROM half").await, 50_000);
    let rows = batches_to_rows(
        &q.collect(
            "SELECT c.country, count(*) AS n FROM orders o JOIN customers c \
             ON o.customer_id = c.id GROUP BY c.country ORDER BY n DESC LIMIT 2",
        )
        .await
        .expect("join"),
    )
    .expect("rows");
    // The same figures as the local sample (tests/slt/queries).
    assert_eq!(rows, vec![vec!["NG", "13190"], vec!["US", "13046"]]);
    // The same files from the local copy agree row for row.
    assert_eq!(
        count(&q, "SELECT sum(order_id) FROM orders").await,
        (1..=100_000i64).sum::<i64>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_urls_read_single_files() {
    let (server, q, dir) = setup().await;
    for (local, key) in [
        ("orders/part-0.parquet", "public/part-0.parquet"),
        ("customers.csv", "public/customers.csv"),
    ] {
        let body = std::fs::read(dir.path().join(local)).expect("sample file");
        let status = server.put_public("quiver", key, &body).expect("upload");
        assert!(status.contains("200"), "upload {key}: {status}");
    }
    let url = format!("{}/quiver/public/part-0.parquet", server.endpoint());
    assert_eq!(
        count(&q, &format!("SELECT count(*) FROM read_parquet('{url}')")).await,
        25_000
    );
    let url = format!("{}/quiver/public/customers.csv", server.endpoint());
    assert_eq!(
        count(&q, &format!("SELECT count(*) FROM read_csv('{url}')")).await,
        1_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_copy_leaves_no_object_in_the_bucket() {
    let (_server, q, _dir) = setup().await;
    let err = q
        .collect(
            "COPY (SELECT CAST(CASE WHEN order_id > 90000 THEN 'x' ELSE '1' END AS INT) AS v \
             FROM read_parquet('s3://quiver/orders/')) \
             TO 's3://quiver/failed/' STORED AS PARQUET",
        )
        .await
        .expect_err("the cast fails");
    assert!(err.to_string().contains("Cannot cast"), "{err}");
    let err = q
        .collect("SELECT * FROM read_parquet('s3://quiver/failed/')")
        .await
        .expect_err("nothing was left");
    assert!(err.to_string().contains("No files found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_and_dead_endpoint_fail_fast_with_the_url() {
    let server = MotoServer::start().expect("start moto");
    let q = Quiver::builder()
        .config(server.config())
        .build()
        .expect("engine");
    let err = q
        .collect("SELECT * FROM read_parquet('s3://no-such-bucket/x/')")
        .await
        .expect_err("no bucket");
    let msg = err.to_string();
    assert!(msg.contains("no-such-bucket"), "{msg}");

    // Nothing listens on this port any more.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut cfg = server.config();
    cfg.object_store.s3.endpoint = Some(format!("http://127.0.0.1:{dead}"));
    cfg.object_store.request_timeout_secs = 3;
    let q = Quiver::builder().config(cfg).build().expect("engine");
    let started = Instant::now();
    let err = q
        .collect("SELECT * FROM read_parquet('s3://quiver/orders/')")
        .await
        .expect_err("dead endpoint");
    let msg = err.to_string();
    assert!(msg.contains("s3://quiver/orders/"), "{msg}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_credentials_are_refused_with_the_url() {
    let server = MotoServer::start_with_auth().expect("start moto with auth");
    let q = Quiver::builder()
        .config(server.config())
        .build()
        .expect("engine");
    let started = Instant::now();
    let err = q
        .collect("SELECT * FROM read_parquet('s3://quiver/orders/')")
        .await
        .expect_err("the key is unknown to the server");
    let msg = err.to_string();
    assert!(msg.contains("s3://quiver/orders/"), "{msg}");
    assert!(msg.contains("403"), "{msg}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_in_a_bucket() {
    let (server, q, dir) = setup().await;
    let images = dir.path().join("images");
    for (name, _, _, _) in quiver::sample::IMAGES {
        let body = std::fs::read(images.join(name)).expect("sample image");
        let status = server
            .put_public("quiver", &format!("images/{name}"), &body)
            .expect("upload");
        assert!(status.contains("200"), "upload {name}: {status}");
    }
    let rows = batches_to_rows(
        &q.collect(
            "SELECT format, width, height FROM read_images('s3://quiver/images/*.png') \
             ORDER BY width",
        )
        .await
        .expect("read_images over s3"),
    )
    .expect("rows");
    assert_eq!(
        rows,
        vec![vec!["jpeg", "48", "32"], vec!["png", "200", "150"]]
    );
    assert_eq!(
        count(
            &q,
            "SELECT count(*) FROM read_images('s3://quiver/images/') WHERE image IS NOT NULL"
        )
        .await,
        quiver::sample::IMAGES.len() as i64
    );
}

/// `url_download` over s3:// and plain http:// URLs, and images written
/// back to a bucket with `COPY … STORED AS IMAGES`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_urls_and_image_copies_in_a_bucket() {
    let (server, q, dir) = setup().await;
    let images = dir.path().join("images");
    for (name, _, _, _) in quiver::sample::IMAGES {
        let body = std::fs::read(images.join(name)).expect("sample image");
        server
            .put_public("quiver", &format!("photos/{name}"), &body)
            .expect("upload");
    }
    // A metadata table that only references its images, by s3:// and http:// URLs.
    let http = server.endpoint();
    let rows = batches_to_rows(
        &q.collect(&format!(
            "SELECT image_width(url_download(u)), image_format(url_download(h)) \
             FROM (VALUES ('s3://quiver/photos/forest.png', '{http}/quiver/photos/logo.gif')) AS t(u, h)"
        ))
        .await
        .expect("url_download over s3 and http"),
    )
    .expect("rows");
    assert_eq!(rows, vec![vec!["200", "gif"]]);
    // The path column of an S3 listing is a URL that url_download reads back.
    assert_eq!(
        count(
            &q,
            "SELECT count(*) FROM read_images('s3://quiver/photos/') \
             WHERE url_download(path) = image AND path LIKE 's3://quiver/photos/%'"
        )
        .await,
        quiver::sample::IMAGES.len() as i64
    );
    // A missing object: the row, the URL and the reason.
    let err = q
        .collect("SELECT url_download('s3://quiver/photos/nope.jpg')")
        .await
        .expect_err("missing object");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("row 1 of its batch: s3://quiver/photos/nope.jpg")
            && msg.contains("not found"),
        "{msg}"
    );
    // Thumbnails written to the bucket, one object per row.
    assert_eq!(
        count(
            &q,
            "COPY (SELECT split_part(regexp_replace(path, '^.*/', ''), '.', 1) AS name, \
             image_encode(image_thumbnail(image, 32), 'png') AS thumb \
             FROM read_images('s3://quiver/photos/')) \
             TO 's3://quiver/thumbs/' STORED AS IMAGES OPTIONS (path_column 'name')"
        )
        .await,
        quiver::sample::IMAGES.len() as i64
    );
    let rows = batches_to_rows(
        &q.collect(
            "SELECT path, format, width FROM read_images('s3://quiver/thumbs/') \
             WHERE path LIKE '%beach%' ORDER BY path",
        )
        .await
        .expect("read the thumbnails back"),
    )
    .expect("rows");
    assert_eq!(
        rows,
        vec![
            vec!["s3://quiver/thumbs/beach-small.png", "png", "32"],
            vec!["s3://quiver/thumbs/beach.png", "png", "32"],
        ]
    );
}

/// Audio in a bucket: headers read from both ends of each object (ranged
/// GETs), decoding, and clips written back with `COPY … STORED AS AUDIO`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_in_a_bucket() {
    let (server, q, dir) = setup().await;
    let audio = dir.path().join("audio");
    for (name, _, _, _) in quiver::sample_audio::AUDIO {
        let body = std::fs::read(audio.join(name)).expect("sample audio");
        let status = server
            .put_public("quiver", &format!("audio/{name}"), &body)
            .expect("upload");
        assert!(status.contains("200"), "upload {name}: {status}");
    }
    let rows = batches_to_rows(
        &q.collect(
            "SELECT format, count(*), sum(duration), sum(frames) FROM read_audio('s3://quiver/audio/') \
             GROUP BY format ORDER BY format",
        )
        .await
        .expect("read_audio over s3"),
    )
    .expect("rows");
    assert_eq!(
        rows,
        vec![
            vec!["flac", "2", "68.0", "1172300"],
            vec!["wav", "4", "5.5", "134050"]
        ]
    );
    let rows = batches_to_rows(
        &q.collect(
            "SELECT audio_slice(audio, 60, 65) FROM read_audio('s3://quiver/audio/talk.flac')",
        )
        .await
        .expect("decode over s3"),
    )
    .expect("rows");
    assert_eq!(rows, vec![vec!["<pcm 16 kHz mono 5.00 s>"]]);
    let written = count(
        &q,
        "COPY (SELECT regexp_replace(path, '^.*/|[.].*$', '') AS name, audio_decode(audio, 16000, true) AS pcm \
         FROM read_audio('s3://quiver/audio/*.wav')) \
         TO 's3://quiver/speech/' STORED AS AUDIO OPTIONS (path_column 'name')",
    )
    .await;
    assert_eq!(written, 4);
    assert_eq!(
        count(
            &q,
            "SELECT count(*) FROM read_audio('s3://quiver/speech/') WHERE sample_rate = 16000 AND channels = 1 AND format = 'wav'"
        )
        .await,
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_in_a_bucket() {
    let (server, q, dir) = setup().await;
    let video = dir.path().join("video");
    for path in quiver::sample_video::write_video(&video).expect("sample video") {
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let body = std::fs::read(&path).expect("sample video");
        let status = server
            .put_public("quiver", &format!("video/{name}"), &body)
            .expect("upload");
        assert!(status.contains("200"), "upload {name}: {status}");
    }
    let rows = batches_to_rows(
        &q.collect(
            "SELECT regexp_replace(path, '.*/', ''), codec, width, round(duration, 1) \
             FROM read_video('s3://quiver/video/') ORDER BY path",
        )
        .await
        .expect("read_video over s3"),
    )
    .expect("rows");
    assert_eq!(
        rows,
        vec![
            vec!["bars.mkv", "hevc", "320", "3.0"],
            vec!["life.avi", "mpeg4", "160", "4.0"],
            vec!["mandelbrot.webm", "vp9", "320", "3.0"],
            vec!["pattern.mp4", "h264", "320", "6.0"],
            vec!["turned.mov", "mpeg4", "240", "2.0"],
        ]
    );
    let rows = batches_to_rows(
        &q.collect(
            "SELECT count(*), max(image_width(frame)) FROM video_frames('s3://quiver/video/pattern.mp4', fps => 1, width => 100) \
             WHERE pts >= 2",
        )
        .await
        .expect("video_frames over s3"),
    )
    .expect("rows");
    assert_eq!(rows, vec![vec!["4", "100"]]);
}
