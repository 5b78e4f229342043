//! Getting a data set's files: the cache directory, and downloading the missing files from the
//! public mirrors, verified before they are put in place.
//!
//! A file is streamed into a temporary file in the target directory, its decompressed content
//! is checked against the known SHA-256, and only then is it renamed to `<name>.gz`. Whatever
//! goes wrong (HTTP error, timeout, dropped connection, wrong bytes), the temporary file is
//! removed and the next mirror is tried, so the directory only ever holds verified files.

use std::fs;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::data::{self, Kind, find_file};

/// How to download.
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// Base URLs, tried in order; each serves `<base><file>.gz`.
    pub mirrors: Vec<String>,
    pub connect_timeout: Duration,
    /// Longest wait for any single read of the response.
    pub read_timeout: Duration,
    /// Progress bars on a terminal, plain lines elsewhere, or nothing.
    pub progress: Progress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// A bar when stderr is a terminal, else one line per file.
    Auto,
    Lines,
    Quiet,
}

impl FetchConfig {
    /// The data set's mirrors, with `first` (from `--mirror`) put before them.
    pub fn new(kind: Kind, first: Option<&str>) -> FetchConfig {
        let mut mirrors: Vec<String> = first.iter().map(|m| with_slash(m)).collect();
        mirrors.extend(kind.mirrors().iter().map(|m| m.to_string()));
        FetchConfig {
            mirrors,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            progress: Progress::Auto,
        }
    }
}

fn with_slash(url: &str) -> String {
    if url.ends_with('/') {
        url.to_string()
    } else {
        format!("{url}/")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{dir}: cannot create the data directory: {source}")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("no user cache directory on this system to keep {dataset} in; pass --data-dir DIR")]
    NoCache { dataset: &'static str },
    #[error(
        "could not download {file} into {dir}; tried:\n{}\n(pass --data-dir DIR with the four files, or --mirror URL)",
        tried.iter().map(|(u, e)| format!("  {u}: {e}")).collect::<Vec<_>>().join("\n")
    )]
    AllMirrorsFailed {
        file: String,
        dir: PathBuf,
        tried: Vec<(String, String)>,
    },
    #[error("{dir}: no `{file}` or `{file}.gz` there, {why}")]
    Missing {
        dir: PathBuf,
        file: String,
        why: &'static str,
    },
}

/// The platform's user cache directory for `kind` (e.g. `~/.cache/mnist-wgpu/mnist/`).
pub fn cache_dir(kind: Kind) -> Result<PathBuf, FetchError> {
    dirs::cache_dir()
        .map(|d| d.join("mnist-wgpu").join(kind.name()))
        .ok_or(FetchError::NoCache {
            dataset: kind.name(),
        })
}

/// Which files a command needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    All,
    TestOnly,
}

/// Makes sure the files of `kind` that `need` names are in `dir`, downloading the missing
/// ones. Files already there are left alone (loading verifies them). Returns the files it
/// downloaded.
pub fn ensure(
    dir: &Path,
    kind: Kind,
    need: Need,
    config: &FetchConfig,
    offline: bool,
    warn: &mut dyn FnMut(&str),
) -> Result<Vec<PathBuf>, FetchError> {
    let skip = if need == Need::TestOnly { 2 } else { 0 };
    let missing: Vec<_> = kind
        .files()
        .into_iter()
        .skip(skip)
        .filter(|(name, _)| find_file(dir, name).is_none())
        .collect();
    let Some(&(first, _)) = missing.first() else {
        return Ok(Vec::new());
    };
    let why = if kind == Kind::Idx {
        Some("and --dataset idx has no known checksums to download against")
    } else if offline {
        Some("and --offline forbids downloading it")
    } else if config.mirrors.is_empty() {
        Some("and there is no mirror to download it from")
    } else {
        None
    };
    if let Some(why) = why {
        return Err(FetchError::Missing {
            dir: dir.to_path_buf(),
            file: first.to_string(),
            why,
        });
    }
    fs::create_dir_all(dir).map_err(|source| FetchError::Dir {
        dir: dir.to_path_buf(),
        source,
    })?;
    remove_stale_parts(dir);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(config.connect_timeout))
        .timeout_resolve(Some(config.connect_timeout))
        .timeout_per_read(Some(config.read_timeout))
        .user_agent(concat!("mnist-wgpu/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut fetched = Vec::new();
    for (name, sha) in missing {
        let file = format!("{name}.gz");
        let target = dir.join(&file);
        let mut tried = Vec::new();
        for (i, mirror) in config.mirrors.iter().enumerate() {
            let url = format!("{mirror}{file}");
            match download(&agent, &url, &target, sha, config) {
                Ok(()) => {
                    fetched.push(target.clone());
                    break;
                }
                Err(e) => {
                    // The last failure is reported in the error, with all the others.
                    if i + 1 < config.mirrors.len() {
                        warn(&format!("warning: {url}: {e}; trying the next mirror"));
                    }
                    tried.push((url, e));
                }
            }
        }
        if tried.len() == config.mirrors.len() {
            return Err(FetchError::AllMirrorsFailed {
                file,
                dir: dir.to_path_buf(),
                tried,
            });
        }
    }
    Ok(fetched)
}

/// A temporary file that is removed unless it was renamed into place.
struct Part {
    path: PathBuf,
    done: bool,
}

impl Drop for Part {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
    }
}

const PART_SUFFIX: &str = ".part";

/// Removes temporary files a killed download left behind (`.<file>.<pid>.part`).
fn remove_stale_parts(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(PART_SUFFIX) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Downloads `url` to `target` via a temporary file, verified against `sha` (of the
/// decompressed content). The error is one line, for the list of mirrors tried.
fn download(
    agent: &ureq::Agent,
    url: &str,
    target: &Path,
    sha: Option<&str>,
    config: &FetchConfig,
) -> Result<(), String> {
    let file = target.file_name().unwrap().to_string_lossy().into_owned();
    let part = Part {
        path: target.with_file_name(format!(".{file}.{}{PART_SUFFIX}", std::process::id())),
        done: false,
    };
    let response = agent.get(url).call().map_err(|e| describe(&e, config))?;
    let length = response.body().content_length();
    // Not `read_to_vec`: its 10 MB default limit is below the training images' size, and the
    // file goes to disk, not memory. Without ureq's gzip feature the bytes arrive as served,
    // even under `Content-Encoding: gzip`, which is what the checksum is over.
    let mut reader = response.into_body().into_reader();
    let mut out = fs::File::create(&part.path).map_err(|e| format!("cannot write: {e}"))?;
    let mut meter = Meter::new(&file, length, config.progress);
    let mut buf = vec![0u8; 1 << 16];
    let mut got: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                meter.abandon();
                let total = length.map_or(String::new(), |l| format!(" of {l}"));
                return Err(format!(
                    "failed after {got}{total} bytes: {}",
                    io_reason(&e, config)
                ));
            }
        };
        out.write_all(&buf[..n])
            .map_err(|e| format!("cannot write: {e}"))?;
        got += n as u64;
        meter.update(got);
    }
    if let Some(l) = length
        && got != l
    {
        meter.abandon();
        return Err(format!("truncated: got {got} of {l} bytes"));
    }
    out.sync_all().map_err(|e| format!("cannot write: {e}"))?;
    drop(out);
    if let Some(sha) = sha {
        let content = data::read_maybe_gz(&part.path).map_err(|e| {
            meter.abandon();
            strip_path(&e.to_string(), &part.path)
        })?;
        if let Err(e) = data::verify(&part.path, &content, sha) {
            meter.abandon();
            return Err(strip_path(&e.to_string(), &part.path));
        }
    }
    fs::rename(&part.path, target).map_err(|e| format!("cannot rename into place: {e}"))?;
    let mut part = part;
    part.done = true;
    meter.finish(url, got);
    Ok(())
}

/// An error message about the temporary file, without its name (the URL names the source).
fn strip_path(message: &str, path: &Path) -> String {
    let p = path.display().to_string();
    message
        .strip_prefix(&p)
        .map(|m| m.trim_start_matches(':').trim().to_string())
        .unwrap_or_else(|| message.to_string())
}

fn describe(e: &ureq::Error, config: &FetchConfig) -> String {
    match e {
        ureq::Error::StatusCode(code) => format!("HTTP {code}"),
        ureq::Error::Timeout(which) => format!(
            "timed out ({which:?}; limits: connect {} s, read {} s)",
            config.connect_timeout.as_secs_f64(),
            config.read_timeout.as_secs_f64()
        ),
        ureq::Error::Io(io) => io_reason(io, config),
        other => other.to_string(),
    }
}

fn io_reason(e: &std::io::Error, config: &FetchConfig) -> String {
    if e.kind() == std::io::ErrorKind::TimedOut || e.to_string().contains("imeout") {
        format!(
            "timed out: no data for {} s (--read-timeout)",
            config.read_timeout.as_secs_f64()
        )
    } else {
        e.to_string()
    }
}

/// Download progress: an indicatif bar on a terminal, else one line when a file is done.
struct Meter {
    bar: Option<indicatif::ProgressBar>,
    lines: bool,
    start: Instant,
}

impl Meter {
    fn new(file: &str, length: Option<u64>, progress: Progress) -> Meter {
        let terminal = std::io::stderr().is_terminal();
        let bar = (progress == Progress::Auto && terminal).then(|| {
            let bar = indicatif::ProgressBar::new(length.unwrap_or(0));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:<28} [{bar:30}] {bytes:>9}/{total_bytes:<9} {bytes_per_sec:>11} eta {eta}",
                )
                .unwrap()
                .progress_chars("=> "),
            );
            bar.set_message(file.to_string());
            bar
        });
        Meter {
            bar,
            lines: progress == Progress::Lines || (progress == Progress::Auto && !terminal),
            start: Instant::now(),
        }
    }
    fn update(&mut self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.set_position(bytes);
        }
    }
    fn abandon(&mut self) {
        if let Some(b) = self.bar.take() {
            b.abandon();
        }
    }
    fn finish(&mut self, url: &str, bytes: u64) {
        if let Some(b) = self.bar.take() {
            b.finish();
        }
        if self.lines {
            let s = self.start.elapsed().as_secs_f64();
            eprintln!(
                "downloaded {url}: {:.1} MB in {s:.1} s ({:.1} MB/s), SHA-256 verified",
                bytes as f64 / 1e6,
                bytes as f64 / 1e6 / s.max(1e-9)
            );
        }
    }
}
