//! Runs `tests/slt/**/*.slt` against a fresh Quiver engine per file.
//!
//! ```text
//! cargo test -p quiver-tests --test sqllogictests                 # all files
//! cargo test -p quiver-tests --test sqllogictests -- copy         # files whose path contains "copy"
//! cargo test -p quiver-tests --test sqllogictests -- --complete   # rewrite expected output
//! ```
//!
//! Files see `${SAMPLE_DIR}` (the generated sample dataset, with damaged
//! files under `images-bad/`, `audio-bad/` and `video-bad/`, lossy audio
//! under `audio-lossy/`, video under `video/`, models under `models/`) and
//! `$__TEST_DIR__` (a fresh temporary directory) after
//! `control substitution on`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use quiver::QuiverConfig;
use quiver_tests::QuiverDb;
use sqllogictest::{Runner, default_normalizer, default_validator, strict_column_validator};

/// The generated sample directory, written back as `${SAMPLE_DIR}` in
/// results (paths in `SHOW MODELS`, say), so that expected output does not
/// depend on where the temporary directory is.
static SAMPLE_DIR: std::sync::OnceLock<String> = std::sync::OnceLock::new();

#[allow(clippy::ptr_arg)] // sqllogictest's Normalizer takes &String
fn normalizer(s: &String) -> String {
    let s = default_normalizer(s);
    match SAMPLE_DIR.get() {
        Some(dir) => s.replace(dir.as_str(), "${SAMPLE_DIR}"),
        None => s,
    }
}

fn slt_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            slt_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "slt") {
            out.push(p);
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("slt");
    let mut files = vec![];
    slt_files(&root, &mut files);
    files.sort();
    let name_of = |p: &Path| {
        p.strip_prefix(&root)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };

    // nextest asks for a listing, then runs each test by exact name.
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            for f in &files {
                println!("{}: test", name_of(f));
            }
        }
        return ExitCode::SUCCESS;
    }
    let complete = args.iter().any(|a| a == "--complete");
    let exact = args.iter().any(|a| a == "--exact");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let selected: Vec<&PathBuf> = files
        .iter()
        .filter(|f| {
            let n = name_of(f);
            filters.is_empty()
                || filters.iter().any(|flt| {
                    if exact {
                        n == **flt
                    } else {
                        n.contains(flt.as_str())
                    }
                })
        })
        .collect();

    let sample = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot create a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = quiver::sample::generate(sample.path())
        .and_then(|_| quiver::sample::write_bad_images(&sample.path().join("images-bad")))
        .and_then(|_| quiver::sample_audio::write_bad_audio(&sample.path().join("audio-bad")))
        // MP3, Ogg and AAC fixtures need the ffmpeg command (.ci/setup
        // installs it).
        .and_then(|_| quiver::sample_audio::write_lossy_audio(&sample.path().join("audio-lossy")))
        // Video fixtures are encoded by the ffmpeg command too.
        .and_then(|_| quiver::sample_video::write_video(&sample.path().join("video")).map(drop))
        .and_then(|_| quiver::sample_video::write_bad_video(&sample.path().join("video-bad")))
        // The tiny BERT and all-MiniLM-L6-v2 (from the wheel .ci/setup
        // downloads).
        .and_then(|_| quiver::sample::write_models(sample.path()))
    {
        eprintln!("cannot generate sample data: {e}");
        return ExitCode::FAILURE;
    }
    let sample_dir = sample.path().to_string_lossy().into_owned();
    let _ = SAMPLE_DIR.set(sample_dir.clone());

    let (mut passed, mut failed) = (0usize, 0usize);
    for file in selected {
        let mut runner = Runner::new(|| async { QuiverDb::new(QuiverConfig::default()) });
        runner.set_var("SAMPLE_DIR".into(), sample_dir.clone());
        runner.with_column_validator(strict_column_validator);
        runner.with_normalizer(normalizer);
        let result = if complete {
            runner
                .update_test_file(
                    file,
                    " ",
                    default_validator,
                    normalizer,
                    strict_column_validator,
                )
                .await
                .map_err(|e| e.to_string())
        } else {
            runner
                .run_file_async(file)
                .await
                .map_err(|e| e.display(false).to_string())
        };
        match result {
            Ok(()) => {
                passed += 1;
                println!("ok      {}", name_of(file));
            }
            Err(e) => {
                failed += 1;
                println!("FAILED  {}\n{e}", name_of(file));
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
