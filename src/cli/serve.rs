//! `mnist-wgpu serve`: the built web page (`web/dist/`, from `web/build.sh`) over HTTP on
//! 127.0.0.1, as any static file server would serve it; browsers load WebAssembly and run
//! WebGPU from `http://127.0.0.1`, not from `file://`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use super::args::UsageError;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The folder to serve.
    #[arg(long, value_name = "DIR", default_value = "web/dist")]
    pub dir: PathBuf,
    /// The port on 127.0.0.1 (0: any free one).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
}

pub fn run(args: ServeArgs) -> Result<()> {
    if !args.dir.join("index.html").is_file() {
        return Err(UsageError(format!(
            "--dir {}: no index.html there; build the page first with web/build.sh",
            args.dir.display()
        ))
        .into());
    }
    let listener = TcpListener::bind(("127.0.0.1", args.port))
        .with_context(|| format!("--port {}: cannot listen on 127.0.0.1", args.port))?;
    let port = listener.local_addr()?.port();
    println!("serving {} at http://127.0.0.1:{port}/", args.dir.display());
    for stream in listener.incoming().flatten() {
        let dir = args.dir.clone();
        // One thread per connection: a browser opens several, and a slow one blocks no other.
        std::thread::spawn(move || {
            let _ = answer(stream, &dir);
        });
    }
    Ok(())
}

/// Answers the requests of one connection (keep-alive) until the client closes it.
fn answer(stream: TcpStream, dir: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        // The headers are not needed: skip to the blank line.
        let mut line = String::new();
        while reader.read_line(&mut line)? > 0 && line.trim_end() != "" {
            line.clear();
        }
        let mut parts = request.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        let (status, kind, body) = match (method, file_for(dir, target)) {
            ("GET" | "HEAD", Some(path)) => match std::fs::read(&path) {
                Ok(bytes) => ("200 OK", mime(&path), bytes),
                Err(_) => ("404 Not Found", "text/plain", b"not found\n".to_vec()),
            },
            ("GET" | "HEAD", None) => ("404 Not Found", "text/plain", b"not found\n".to_vec()),
            _ => (
                "405 Method Not Allowed",
                "text/plain",
                b"GET or HEAD only\n".to_vec(),
            ),
        };
        write!(
            out,
            "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
             Cache-Control: no-cache\r\n\r\n",
            body.len()
        )?;
        if method != "HEAD" {
            out.write_all(&body)?;
        }
        out.flush()?;
    }
}

/// The file a request target names under `dir` (`/` is `index.html`); None for anything that
/// would leave `dir`.
fn file_for(dir: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let rel = Path::new(path.trim_start_matches('/'));
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let file = dir.join(rel);
    match file.is_dir() {
        true => Some(file.join("index.html")),
        false => Some(file),
    }
}

/// The content type a browser needs; `application/wasm` lets it compile while downloading.
fn mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "png" => "image/png",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_cannot_leave_the_folder() {
        let dir = Path::new("/srv/page");
        assert_eq!(
            file_for(dir, "/pkg/a.wasm?x=1"),
            Some(dir.join("pkg/a.wasm"))
        );
        assert_eq!(file_for(dir, "/../etc/passwd"), None);
        assert_eq!(
            file_for(dir, "/data/%2e%2e/x").map(|p| p.starts_with(dir)),
            Some(true)
        );
        assert_eq!(mime(Path::new("a.wasm")), "application/wasm");
    }
}
