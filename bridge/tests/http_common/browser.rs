//! A real headless Chromium driven over WebDriver: Debian's
//! `chromium-driver` (chromedriver) on a free loopback port, fantoccini as
//! the client. The session keeps the browser's console log
//! (`goog:loggingPrefs`), read back through chromedriver's log endpoint.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::which;

/// How long a page condition may take to become true.
pub const PAGE_WAIT: Duration = Duration::from_secs(60);

/// chromedriver and one browser session.
pub struct Browser {
    pub client: Client,
    driver: Child,
    session: String,
}

/// A POST to chromedriver beside the W3C commands.
#[derive(Debug)]
struct DriverPost {
    path: String,
    body: String,
}

impl fantoccini::wd::WebDriverCompatibleCommand for DriverPost {
    fn endpoint(
        &self,
        base_url: &url::Url,
        _session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&self.path)
    }

    fn method_and_body(&self, _url: &url::Url) -> (axum::http::Method, Option<String>) {
        (axum::http::Method::POST, Some(self.body.clone()))
    }
}

/// The binaries, or a panic that says how to install them.
fn binaries() -> (PathBuf, PathBuf) {
    let find = |bin: &str, package: &str| {
        which(bin).unwrap_or_else(|| {
            panic!(
                "{bin} is not installed, and this test drives the dashboard in headless \
                 Chromium over WebDriver: `apt-get install -y {package}` (CI's .ci/run does) \
                 and run again"
            )
        })
    };
    (
        find("chromium", "chromium"),
        find("chromedriver", "chromium-driver"),
    )
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with its profile in
    /// `profile`.
    pub async fn start(profile: &Path) -> Browser {
        let (chromium, chromedriver) = binaries();
        let port = crate::common::free_port();
        let mut driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        // It says so on stdout once it listens.
        let out = driver.stdout.take().expect("chromedriver's stdout");
        let mut lines = BufReader::new(out).lines();
        tokio::time::timeout(PAGE_WAIT, async {
            while let Some(l) = lines.next_line().await.expect("chromedriver's output") {
                if l.contains("started successfully") {
                    return;
                }
            }
            panic!("chromedriver ended before it listened");
        })
        .await
        .expect("chromedriver listens within 60 s");
        // Keep draining its stdout so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--no-first-run",
                    "--window-size=1280,1800",
                    format!("--user-data-dir={}", profile.join("profile").display()),
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!("an object"),
        };
        let client = tokio::time::timeout(
            PAGE_WAIT,
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        .expect("a browser session within 60 s")
        .expect("chromedriver opens a Chromium session");
        let session = client
            .session_id()
            .await
            .expect("the session id")
            .expect("a session");
        Browser {
            client,
            driver,
            session,
        }
    }

    /// Loads `url`.
    pub async fn goto(&self, url: &str) {
        tokio::time::timeout(PAGE_WAIT, self.client.goto(url))
            .await
            .expect("the page loads within 60 s")
            .unwrap_or_else(|e| panic!("loading {url}: {e}"));
    }

    /// Runs `script` (a function body: `return ...`) in the page.
    pub async fn js(&self, script: &str) -> Value {
        tokio::time::timeout(PAGE_WAIT, self.client.execute(script, Vec::new()))
            .await
            .unwrap_or_else(|_| panic!("the browser did not run a script within 60 s: {script}"))
            .unwrap_or_else(|e| panic!("the script failed ({e}): {script}"))
    }

    /// Waits until `script` returns true in the page; `what` names it.
    /// The page's DOM is in the panic when it never does.
    pub async fn until(&self, what: &str, script: &str) {
        let waited = tokio::time::timeout(PAGE_WAIT, async {
            loop {
                if self.js(script).await == Value::Bool(true) {
                    return;
                }
                // The page changes on its own (polls, events); look again.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        if waited.is_err() {
            let dom = self.js("return document.body.innerText").await;
            panic!("the page never showed {what} within {PAGE_WAIT:?}; it shows:\n{dom}");
        }
    }

    /// Everything the page wrote to its console at level `SEVERE`
    /// (errors, failed loads, CSP violations), since the last call.
    pub async fn console_errors(&self) -> Vec<String> {
        let log = self
            .driver_post("se/log", &json!({ "type": "browser" }))
            .await;
        let entries = log.get("value").unwrap_or(&log);
        entries
            .as_array()
            .unwrap_or_else(|| panic!("no browser log in {log}"))
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// A PNG of the window.
    pub async fn screenshot(&self, to: &Path) {
        let png = tokio::time::timeout(PAGE_WAIT, self.client.screenshot())
            .await
            .expect("a screenshot within 60 s")
            .expect("a screenshot");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(to, png).expect("write the screenshot");
    }

    /// chromedriver's `POST /session/{id}/{path}` (one the WebDriver
    /// client does not offer), through the client's own connection.
    async fn driver_post(&self, path: &str, body: &Value) -> Value {
        let cmd = DriverPost {
            path: format!("session/{}/{path}", self.session),
            body: body.to_string(),
        };
        tokio::time::timeout(PAGE_WAIT, self.client.issue_cmd(cmd))
            .await
            .expect("chromedriver answers within 60 s")
            .unwrap_or_else(|e| panic!("chromedriver {path}: {e}"))
    }

    /// Closes the session and stops chromedriver.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(PAGE_WAIT, self.client.close()).await;
        let _ = self.driver.kill().await;
    }
}
