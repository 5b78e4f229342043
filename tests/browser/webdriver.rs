//! Just enough WebDriver (plain JSON over HTTP, as ChromeDriver and geckodriver speak it) to
//! drive the page in headless Chromium (WebGPU on SwiftShader) and headless Firefox (WebGPU on
//! the machine's Vulkan driver, lavapipe here), and the page served by `mnist-wgpu serve`.

use std::cell::Cell;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/lib/chromium/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const FIREFOX: &str = "/usr/bin/firefox-esr";
const CHROMIUM_INSTALL: &str = "the browser tests need Chromium and ChromeDriver: \
    `apt-get install chromium chromium-driver` (Debian), then build the page with web/build.sh";
const FIREFOX_INSTALL: &str = "the browser tests need Firefox and geckodriver: \
    `apt-get install firefox-esr` (Debian) and `cargo install geckodriver`, then build the page \
    with web/build.sh";

/// The browser engines the page is tested in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Chromium,
    Firefox,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Chromium => "Chromium",
            Engine::Firefox => "Firefox",
        }
    }
}

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

/// geckodriver: on PATH, or where `cargo install` puts it.
fn geckodriver() -> Option<PathBuf> {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|c| c.join("bin"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(cargo_bin)
        .map(|d| d.join("geckodriver"))
        .find(|p| p.is_file())
}

/// Chromium's capabilities: WebGPU on SwiftShader, or (`webgpu` false) no WebGPU.
fn chromium_caps(webgpu: bool, downloads: &Path) -> Value {
    let mut args: Vec<&str> = COMMON_FLAGS.to_vec();
    if webgpu {
        args.extend(WEBGPU_FLAGS);
    } else {
        args.push("--disable-features=WebGPU");
    }
    json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": args,
            "prefs": {
                "download.default_directory": downloads,
                "download.prompt_for_download": false,
                // Scripted clicks are no user gesture, so Chromium would ask before a second
                // download (the set's per-model buttons); a person's clicks never are asked.
                "profile.default_content_setting_values.automatic_downloads": 1,
            },
        },
        "goog:loggingPrefs": {"browser": "ALL"},
    }}})
}

/// Firefox's capabilities. Headless Firefox fails its GL probe, which puts WebGPU on its
/// blocklist, hence `ignore-blocklist`; the page's console goes to stdout (geckodriver has no
/// log endpoint); the proxy points at a closed port so that start-up calls stay on the machine
/// (the page, on 127.0.0.1, is never proxied).
fn firefox_caps(webgpu: bool, downloads: &Path) -> Value {
    json!({"capabilities": {"alwaysMatch": {
        "browserName": "firefox",
        "moz:firefoxOptions": {
            "binary": FIREFOX,
            "args": ["-headless"],
            "prefs": {
                "dom.webgpu.enabled": webgpu,
                "gfx.webgpu.ignore-blocklist": true,
                "devtools.console.stdout.content": true,
                "browser.download.folderList": 2,
                "browser.download.dir": downloads,
                "browser.download.useDownloadDir": true,
                "browser.download.always_ask_before_handling_new_types": false,
                "browser.helperApps.neverAsk.saveToDisk": "application/octet-stream",
                "network.proxy.type": 1,
                "network.proxy.http": "127.0.0.1",
                "network.proxy.http_port": 9,
                "network.proxy.ssl": "127.0.0.1",
                "network.proxy.ssl_port": 9,
                "app.normandy.enabled": false,
                "app.update.disabledForTesting": true,
            },
        },
    }}})
}

/// One headless browser session through its WebDriver.
pub struct Browser {
    pub engine: Engine,
    session: String,
    agent: ureq::Agent,
    /// Firefox: the file its stdout (and so the page's console) goes to, and how much of it
    /// [`Browser::console`] has read.
    stdout: Option<(PathBuf, Cell<usize>)>,
    _driver: Process,
}

impl Browser {
    /// `engine` with WebGPU (or, `webgpu` false, without), saving downloads in `downloads`:
    /// Chromium's WebGPU runs on SwiftShader, Firefox's on the machine's Vulkan driver.
    pub fn start(engine: Engine, webgpu: bool, downloads: &Path) -> Browser {
        let port = free_port();
        let (mut command, caps, stdout, install) = match engine {
            Engine::Chromium => {
                assert!(
                    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
                    "{CHROMIUM_INSTALL}"
                );
                let mut c = Command::new(CHROMEDRIVER);
                c.arg(format!("--port={port}"));
                c.stdout(Stdio::null()).stderr(Stdio::null());
                (c, chromium_caps(webgpu, downloads), None, CHROMIUM_INSTALL)
            }
            Engine::Firefox => {
                let driver = geckodriver().filter(|_| Path::new(FIREFOX).exists());
                let driver = driver.unwrap_or_else(|| panic!("{FIREFOX_INSTALL}"));
                let log = downloads.join("firefox-stdout.txt");
                let file = std::fs::File::create(&log).unwrap();
                let mut c = Command::new(driver);
                c.args(["--port", &port.to_string()]);
                c.stdout(file.try_clone().unwrap()).stderr(file);
                let caps = firefox_caps(webgpu, downloads);
                (c, caps, Some((log, Cell::new(0))), FIREFOX_INSTALL)
            }
        };
        let driver = Process(command.spawn().expect(install));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(900)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let t0 = Instant::now();
        let session = loop {
            match call(&agent, "POST", &format!("{base}/session"), Some(&caps)) {
                Ok(v) if v["sessionId"].is_string() => {
                    break v["sessionId"].as_str().unwrap().to_string();
                }
                r if t0.elapsed() > Duration::from_secs(30) => {
                    panic!("{} WebDriver: {r:?}", engine.name())
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        let b = Browser {
            engine,
            session: format!("{base}/session/{session}"),
            agent,
            stdout,
            _driver: driver,
        };
        // Chromium takes its size from a flag; both get the same window.
        let rect = json!({"width": 1200, "height": 1000});
        b.call("POST", "/window/rect", Some(&rect));
        b
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

    /// The browser console since the last call: (level, message), with Chromium's levels
    /// (SEVERE, WARNING, INFO).
    pub fn console(&self) -> Vec<(String, String)> {
        if let Some((file, read)) = &self.stdout {
            let text = std::fs::read(file).unwrap_or_default();
            let new = String::from_utf8_lossy(&text[read.get().min(text.len())..]).into_owned();
            read.set(text.len());
            let origin = self.eval("location.origin");
            return firefox_console(&new, origin.as_str().unwrap_or("http://127.0.0.1"));
        }
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

/// The page's console lines in Firefox's stdout (with `devtools.console.stdout.content`): its
/// `console.*` calls (a string argument prints quoted, which tells them from the browser's own
/// messages) and the script errors and warnings of the page's origin; any other line that
/// speaks of WebGPU is kept as a warning.
fn firefox_console(stdout: &str, origin: &str) -> Vec<(String, String)> {
    let level = |l: &str| match l {
        "error" => "SEVERE",
        "warn" => "WARNING",
        _ => "INFO",
    };
    let mut out = Vec::new();
    for line in stdout.lines() {
        let entry = if let Some((kind, rest)) = line
            .strip_prefix("console.")
            .and_then(|r| r.split_once(": "))
            .filter(|(_, rest)| rest.starts_with('"'))
        {
            Some((level(kind), rest))
        } else if let Some(rest) = line.strip_prefix("JavaScript error: ") {
            rest.starts_with(origin).then_some(("SEVERE", rest))
        } else if let Some(rest) = line.strip_prefix("JavaScript warning: ") {
            rest.starts_with(origin).then_some(("WARNING", rest))
        } else {
            line.to_lowercase()
                .contains("webgpu")
                .then_some(("WARNING", line))
        };
        if let Some((level, message)) = entry {
            out.push((level.to_string(), message.to_string()));
        }
    }
    out
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
