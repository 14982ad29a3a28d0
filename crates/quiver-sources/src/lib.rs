//! Quiver's table providers and table functions, over `object_store`.
//!
//! | module | what it holds |
//! |---|---|
//! | [`download`] | `url_download`: the bytes behind a path or URL, fetched concurrently |
//! | [`fetch`] | `media_fetch`: a media file's bytes fetched for the rows a join kept |
//! | [`late`] | late materialization: joins move paths, bytes are fetched above them |
//! | [`listing`] | `read_parquet` / `read_csv` / `read_json`, globbing `CREATE EXTERNAL TABLE` on every scheme |
//! | [`audio`] | `read_audio` and `STORED AS AUDIO`: audio files as rows of header facts and bytes |
//! | [`images`] | `read_images` and `STORED AS IMAGES`: image files as rows of metadata and bytes |
//! | [`media_scan`] | what media tables share: `on_error`, listing filters, balancing, batching, LIMIT |
//! | [`media_write`] | `COPY … TO 'dir/' STORED AS IMAGES` / `AUDIO`: one file per row |
//! | [`video`] | `read_video` and `STORED AS VIDEO`: video files as rows of header facts, read by ranged requests |
//! | [`frames`] | `video_frames`: sampled frames of videos as rows of images, with seeks from SQL predicates |

pub mod audio;
pub mod download;
pub mod fetch;
pub mod frames;
pub mod images;
pub mod late;
pub mod listing;
pub mod media_scan;
pub mod media_write;
pub mod shared_chunks;
pub mod video;
