//! Headless Chromium driven through chromedriver by the W3C WebDriver
//! protocol (JSON over HTTP on loopback): open a page, find and click
//! elements, read the page, take screenshots. Both processes are killed
//! when the browser is dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use super::http;

/// The key W3C WebDriver names an element by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Browser {
    /// chromedriver on a free loopback port, and a headless Chromium
    /// session that sends `headers` with every request it makes.
    pub fn start(headers: &[(&str, &str)]) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver (Debian: apt-get install -y chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + START_TIMEOUT;
        while http::try_request("GET", &format!("{base}/status"), &[], b"").is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        // The flags keep a headless Chromium off the network it cannot
        // reach here, and out of the sandbox root cannot use.
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1000,1400",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            _profile: profile,
        };
        let answer = browser.call(
            "POST",
            "/session",
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
            }}}),
        );
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_owned();
        if !headers.is_empty() {
            let headers: serde_json::Map<String, Value> = headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), json!(v)))
                .collect();
            browser.cdp("Network.enable", json!({}));
            browser.cdp("Network.setExtraHTTPHeaders", json!({"headers": headers}));
        }
        browser
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let body = if method == "GET" || method == "DELETE" {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let resp = http::request(
            method,
            &format!("{}{path}", self.base),
            &[("Content-Type", "application/json")],
            &body,
        );
        let value: Value = serde_json::from_slice(&resp.body).unwrap_or_default();
        assert_eq!(resp.status, 200, "{method} {path}: {value}");
        value["value"].clone()
    }

    fn session_call(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body)
    }

    fn cdp(&self, cmd: &str, params: Value) {
        self.session_call(
            "POST",
            "/goog/cdp/execute",
            json!({"cmd": cmd, "params": params}),
        );
    }

    pub fn open(&self, url: &str) {
        self.session_call("POST", "/url", json!({ "url": url }));
    }

    pub fn url(&self) -> String {
        self.session_call("GET", "/url", json!({}))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn title(&self) -> String {
        self.session_call("GET", "/title", json!({}))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The page's HTML as the browser holds it.
    pub fn source(&self) -> String {
        self.session_call("GET", "/source", json!({}))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first element `css` selects; the test fails if there is none.
    #[track_caller]
    pub fn find(&self, css: &str) -> Element<'_> {
        let found = self.find_all(css);
        found
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no {css:?} on {}", self.url()))
    }

    pub fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let found = self.session_call(
            "POST",
            "/elements",
            json!({"using": "css selector", "value": css}),
        );
        found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT].as_str())
            .map(|id| Element {
                browser: self,
                id: id.to_owned(),
            })
            .collect()
    }

    /// The element whose text is `text`, among those `css` selects.
    #[track_caller]
    pub fn find_text(&self, css: &str, text: &str) -> Element<'_> {
        self.find_all(css)
            .into_iter()
            .find(|e| e.text() == text)
            .unwrap_or_else(|| panic!("no {css:?} saying {text:?} on {}", self.url()))
    }

    /// Makes the window `width` x `height` CSS pixels (a phone's, say).
    pub fn resize(&self, width: u32, height: u32) {
        self.session_call(
            "POST",
            "/window/rect",
            json!({"width": width, "height": height}),
        );
    }

    /// A PNG of the window, written to `path`.
    pub fn screenshot(&self, path: &Path) {
        let png = self.session_call("GET", "/screenshot", json!({}));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .expect("a base64 PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, bytes).unwrap();
    }
}

impl Element<'_> {
    pub fn click(&self) {
        let path = format!("/element/{}/click", self.id);
        self.browser.session_call("POST", &path, json!({}));
    }

    pub fn text(&self) -> String {
        let path = format!("/element/{}/text", self.id);
        self.browser
            .session_call("GET", &path, json!({}))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("{}/session/{}", self.base, self.session);
            let _ = http::try_request("DELETE", &path, &[], b"");
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
