//! Just enough WebDriver (plain JSON over HTTP, as ChromeDriver speaks it) to drive the page
//! in headless Chromium with WebGPU on SwiftShader, and the page served by `mnist-wgpu serve`.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/lib/chromium/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const INSTALL: &str = "the browser tests need Chromium and ChromeDriver: \
    `apt-get install chromium chromium-driver` (Debian), then build the page with web/build.sh";

/// Flags that give headless Chromium WebGPU on SwiftShader on a machine with no GPU, and keep
/// it off the network.
const WEBGPU_FLAGS: &[&str] = &[
    "--enable-unsafe-webgpu",
    "--enable-features=Vulkan",
    "--use-vulkan=swiftshader",
    "--use-webgpu-adapter=swiftshader",
    "--disable-gpu-sandbox",
];
const COMMON_FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--window-size=1200,1000",
];

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A child process killed when dropped.
pub struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `mnist-wgpu serve --dir dir` on a free port, and its URL.
pub fn serve(dir: &Path) -> (Process, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mnist-wgpu"))
        .args(["serve", "--port", "0", "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting mnist-wgpu serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .last()
        .filter(|u| u.starts_with("http://"))
        .unwrap_or_else(|| panic!("mnist-wgpu serve said {line:?}"))
        .to_string();
    (Process(child), url)
}

/// One headless Chromium session through ChromeDriver.
pub struct Browser {
    session: String,
    agent: ureq::Agent,
    _driver: Process,
}

impl Browser {
    /// Chromium with WebGPU on SwiftShader (or, `webgpu` false, without WebGPU), saving
    /// downloads in `downloads`.
    pub fn start(webgpu: bool, downloads: &Path) -> Browser {
        assert!(
            Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
            "{INSTALL}"
        );
        let port = free_port();
        let driver = Process(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect(INSTALL),
        );
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(900)))
            .build()
            .into();
        let mut args: Vec<&str> = COMMON_FLAGS.to_vec();
        if webgpu {
            args.extend(WEBGPU_FLAGS);
        } else {
            args.push("--disable-features=WebGPU");
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": args,
                "prefs": {
                    "download.default_directory": downloads,
                    "download.prompt_for_download": false,
                },
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let base = format!("http://127.0.0.1:{port}");
        let t0 = Instant::now();
        let session = loop {
            match call(&agent, "POST", &format!("{base}/session"), Some(&caps)) {
                Ok(v) if v["sessionId"].is_string() => {
                    break v["sessionId"].as_str().unwrap().to_string();
                }
                r if t0.elapsed() > Duration::from_secs(20) => panic!("ChromeDriver: {r:?}"),
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        Browser {
            session: format!("{base}/session/{session}"),
            agent,
            _driver: driver,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        call(
            &self.agent,
            method,
            &format!("{}{path}", self.session),
            body,
        )
        .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
    }

    pub fn open(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({ "url": url })));
    }

    /// The value of the JS expression `expr` in the page.
    pub fn eval(&self, expr: &str) -> Value {
        let script = format!("return {expr};");
        self.call(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": []})),
        )
    }

    /// Runs the statements `body` in the page.
    pub fn run(&self, body: &str) {
        self.call(
            "POST",
            "/execute/sync",
            Some(&json!({"script": body, "args": []})),
        );
    }

    /// Waits until `window.mnist.phase` is one of `phases`; the page's state then.
    pub fn wait_phase(&self, phases: &[&str], limit: Duration) -> Value {
        let t0 = Instant::now();
        loop {
            let state = self.eval("window.mnist ?? null");
            let phase = state["phase"].as_str().unwrap_or("");
            if phases.contains(&phase) || phase == "error" {
                return state;
            }
            assert!(
                t0.elapsed() < limit,
                "the page is still in phase {phase:?} after {limit:?}; its log: {}",
                state["log"]
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The browser console since the last call: (level, message).
    pub fn console(&self) -> Vec<(String, String)> {
        let logs = self.call("POST", "/se/log", Some(&json!({"type": "browser"})));
        logs.as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                let field = |k: &str| l[k].as_str().unwrap_or("").to_string();
                (field("level"), field("message"))
            })
            .collect()
    }

    /// A PNG screenshot of the page.
    pub fn screenshot(&self) -> Vec<u8> {
        let b64 = self.call("GET", "/screenshot", None);
        decode_base64(b64.as_str().expect("a base64 screenshot"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = call(&self.agent, "DELETE", &self.session, None);
    }
}

/// One WebDriver command; its `value`, or the error WebDriver reported.
fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<&Value>,
) -> Result<Value, String> {
    let response = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        ("DELETE", _) => agent.delete(url).call(),
        (_, b) => agent
            .post(url)
            .content_type("application/json")
            .send(b.unwrap_or(&json!({})).to_string()),
    };
    let text = response
        .map_err(|e| e.to_string())?
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_string()
        .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    match v["value"].get("error") {
        Some(e) => Err(format!("{e}: {}", v["value"]["message"])),
        None => Ok(v["value"].clone()),
    }
}

/// Standard base64 (screenshots and data URLs).
pub fn decode_base64(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c:?}"),
    };
    let digits: Vec<u8> = s
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .map(value)
        .collect();
    digits
        .chunks(4)
        .flat_map(|q| {
            let n = q
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &d)| n | (d as u32) << (18 - 6 * i));
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            bytes.into_iter().take(q.len() - 1)
        })
        .collect()
}
