//! Quiver's table providers and table functions, over `object_store`.
//!
//! | module | what it holds |
//! |---|---|
//! | [`download`] | `url_download`: the bytes behind a path or URL, fetched concurrently |
//! | [`listing`] | `read_parquet` / `read_csv` / `read_json`, globbing `CREATE EXTERNAL TABLE` on every scheme |
//! | [`images`] | `read_images` and `STORED AS IMAGES`: image files as rows of metadata and bytes |
//! | [`images_write`] | `COPY … TO 'dir/' STORED AS IMAGES`: one file per row |

pub mod download;
pub mod images;
pub mod images_write;
pub mod listing;
