//! Downloads against a real HTTP server on 127.0.0.1, started inside each test, serving the
//! real MNIST files (or wrong bytes, errors, dropped connections, stalls). No outside network.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mnist_wgpu::data::{self, Kind, MNIST_FILES};
use mnist_wgpu::fetch::{self, FetchConfig, FetchError, Need, Progress};

/// What the server does for one path.
#[derive(Clone)]
enum Reply {
    /// 200 with these bytes (and `Content-Encoding: gzip`, as S3 sends for .gz files).
    Bytes(Vec<u8>),
    Status(u16),
    /// Announces the whole length, sends this many bytes, then closes the connection.
    DropAfter(Vec<u8>, usize),
    /// Sends the headers and this many bytes, then goes silent for a long time.
    StallAfter(Vec<u8>, usize),
}

struct Server {
    base: String,
    requests: Arc<AtomicUsize>,
}

impl Server {
    /// Serves `routes` (path without the leading slash -> reply); everything else is 404.
    fn start(routes: HashMap<String, Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        let routes = Arc::new(Mutex::new(routes));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let routes = routes.clone();
                let count = count.clone();
                std::thread::spawn(move || serve(stream, &routes, &count));
            }
        });
        Server { base, requests }
    }
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn serve(mut stream: TcpStream, routes: &Mutex<HashMap<String, Reply>>, count: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
    }
    count.fetch_add(1, Ordering::SeqCst);
    let path = request
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_string();
    let reply = routes
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or(Reply::Status(404));
    let head = |len: usize| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\n\
             Content-Encoding: gzip\r\nConnection: close\r\n\r\n"
        )
    };
    let _ = match reply {
        Reply::Bytes(b) => stream
            .write_all(head(b.len()).as_bytes())
            .and_then(|_| stream.write_all(&b)),
        Reply::Status(code) => stream.write_all(
            format!("HTTP/1.1 {code} Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        ),
        Reply::DropAfter(b, n) => stream
            .write_all(head(b.len()).as_bytes())
            .and_then(|_| stream.write_all(&b[..n])),
        Reply::StallAfter(b, n) => {
            let r = stream
                .write_all(head(b.len()).as_bytes())
                .and_then(|_| stream.write_all(&b[..n]))
                .and_then(|_| stream.flush());
            std::thread::sleep(Duration::from_secs(60));
            r
        }
    };
}

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/mnist")
}

fn gz(name: &str) -> Vec<u8> {
    std::fs::read(assets().join(format!("{name}.gz"))).unwrap()
}

/// Every MNIST file served as the real thing.
fn real_files() -> HashMap<String, Reply> {
    MNIST_FILES
        .iter()
        .map(|(n, _)| (format!("{n}.gz"), Reply::Bytes(gz(n))))
        .collect()
}

/// A data directory holding every MNIST file except `missing`.
fn all_but(name: &str, missing: &str) -> PathBuf {
    let dir = common::scratch(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (n, _) in MNIST_FILES {
        if n != missing {
            let f = format!("{n}.gz");
            std::fs::copy(assets().join(&f), dir.join(&f)).unwrap();
        }
    }
    dir
}

fn config(mirrors: &[&str]) -> FetchConfig {
    FetchConfig {
        mirrors: mirrors.iter().map(|m| m.to_string()).collect(),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(1),
        progress: Progress::Quiet,
    }
}

fn ensure(dir: &Path, cfg: &FetchConfig) -> (Result<Vec<PathBuf>, FetchError>, Vec<String>) {
    let mut warnings = Vec::new();
    let r = fetch::ensure(dir, Kind::Mnist, Need::All, cfg, false, &mut |w| {
        warnings.push(w.to_string())
    });
    (r, warnings)
}

/// The directory's file names, sorted (temporary files included).
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn clean_download_of_all_four_files_verifies_and_loads() {
    let server = Server::start(real_files());
    let dir = common::scratch("clean").join("nested/cache");
    // What a download killed with SIGKILL leaves: removed before anything else happens.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".train-images-idx3-ubyte.gz.999999.part"), b"half").unwrap();
    let (r, warnings) = ensure(&dir, &config(&[&server.base]));
    assert_eq!(r.unwrap().len(), 4);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(server.requests(), 4);
    let mut want: Vec<String> = MNIST_FILES.iter().map(|(n, _)| format!("{n}.gz")).collect();
    want.sort();
    assert_eq!(listing(&dir), want);
    // The bytes arrived as served despite Content-Encoding: gzip, so they verify and load.
    let m = data::load(&dir, Kind::Mnist).unwrap();
    assert_eq!((m.train.len(), m.test.len()), (60_000, 10_000));
}

#[test]
fn a_cached_verified_file_is_never_downloaded_again() {
    let server = Server::start(real_files());
    let dir = all_but("cached", "");
    let (r, _) = ensure(&dir, &config(&[&server.base]));
    assert!(r.unwrap().is_empty());
    assert_eq!(server.requests(), 0, "requested files it already had");
}

#[test]
fn a_404_mirror_is_skipped_for_the_next() {
    let bad = Server::start(HashMap::new());
    let good = Server::start(real_files());
    let dir = all_but("404", "t10k-labels-idx1-ubyte");
    let (r, warnings) = ensure(&dir, &config(&[&bad.base, &good.base]));
    assert_eq!(r.unwrap().len(), 1);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(&bad.base) && warnings[0].contains("HTTP 404"),
        "{}",
        warnings[0]
    );
    assert_eq!(good.requests(), 1);
    data::load(&dir, Kind::Mnist).unwrap();
}

/// Runs one failing download of the test labels and checks the error lists the URL with
/// `expect`, and that nothing was left in the directory.
fn fails_cleanly(name: &str, reply: Reply, expect: &str) -> Duration {
    let file = "t10k-labels-idx1-ubyte";
    let server = Server::start(HashMap::from([(format!("{file}.gz"), reply)]));
    let dir = all_but(name, file);
    let before = listing(&dir);
    let t0 = Instant::now();
    let (r, warnings) = ensure(&dir, &config(&[&server.base]));
    let took = t0.elapsed();
    let e = r.unwrap_err().to_string();
    assert!(e.contains(&format!("{}{file}.gz: ", server.base)), "{e}");
    assert!(e.contains(expect), "expected {expect:?} in: {e}");
    assert!(e.contains("--data-dir"), "no hint in: {e}");
    assert!(
        warnings.is_empty(),
        "the only mirror's failure is the error: {warnings:?}"
    );
    eprintln!("{name}: {e}");
    assert_eq!(listing(&dir), before, "left something behind");
    std::fs::remove_dir_all(&dir).unwrap();
    took
}

#[test]
fn wrong_bytes_are_rejected_and_nothing_is_left_behind() {
    // The training labels under the test labels' name: a valid gzip, the wrong content.
    fails_cleanly(
        "wrong",
        Reply::Bytes(gz("train-labels-idx1-ubyte")),
        "SHA-256",
    );
    fails_cleanly(
        "garbage",
        Reply::Bytes(b"<html>moved</html>".to_vec()),
        "SHA-256",
    );
}

#[test]
fn a_connection_dropped_mid_body_is_rejected() {
    let body = gz("t10k-labels-idx1-ubyte");
    let half = body.len() / 2;
    fails_cleanly("dropped", Reply::DropAfter(body, half), "bytes");
}

#[test]
fn a_stalled_server_times_out_within_the_limit() {
    let body = gz("t10k-labels-idx1-ubyte");
    let took = fails_cleanly("stall", Reply::StallAfter(body, 100), "timed out");
    // read timeout 1 s; the server stalls for 60 s
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn a_server_that_never_answers_times_out() {
    // Accepts the connection and reads nothing, sends nothing.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let _held: Vec<_> = listener.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(60));
    });
    let dir = all_but("silent", "t10k-labels-idx1-ubyte");
    let t0 = Instant::now();
    let (r, _) = ensure(&dir, &config(&[&base]));
    let e = r.unwrap_err().to_string();
    assert!(e.contains("timed out"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

#[test]
fn the_command_line_downloads_from_mirror_and_trains() {
    let server = Server::start(real_files());
    let dir = common::scratch("cli");
    let out = common::bin()
        .args([
            "train",
            "--device",
            "cpu",
            "--epochs",
            "1",
            "--hidden",
            "16",
            "--no-save",
        ])
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "--mirror",
            &server.base,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}");
    // Not a terminal: one plain line per file, no progress bar.
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("downloaded "))
        .collect();
    assert_eq!(lines.len(), 4, "{stderr}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains(&server.base) && l.ends_with("SHA-256 verified"))
    );
    assert!(stdout.contains("Model Accuracy"), "{stdout}");
    // A second run finds the files and asks for nothing.
    let before = server.requests();
    let out = common::bin()
        .args(["eval", "--device", "cpu", "--model"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity/torch_tutorial.safetensors"))
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "--mirror",
            &server.base,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(server.requests(), before);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_mirror_failing_lists_each_url_with_its_failure() {
    let a = Server::start(HashMap::new());
    let b = Server::start(HashMap::new());
    let dir = common::scratch("allfail");
    // Through the library, so that the built-in (internet) mirrors are not in the list.
    let (r, warnings) = ensure(&dir, &config(&[&a.base, &b.base]));
    let e = r.unwrap_err().to_string();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    for m in [&a.base, &b.base] {
        assert!(
            e.contains(&format!("  {m}train-images-idx3-ubyte.gz: HTTP 404")),
            "{e}"
        );
    }
    assert!(!dir.exists() || listing(&dir).is_empty());
}
