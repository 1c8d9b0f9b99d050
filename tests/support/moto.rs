//! A local AWS emulator for the tests: moto in server mode (`python3 -m moto.server`, PyPI
//! `moto[server]`, which `.ci/test` installs), started on a port of its own per test. The edge
//! server's Secrets Manager tests (`tests/edge.rs`) and the AWS KMS HSM's (`tests/hsm_aws.rs`)
//! use it.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::IO_TIMEOUT;

/// A local AWS emulator: `moto_server` (PyPI `moto[server]`, installed by `.ci/test`).
pub struct Moto {
    pub child: std::process::Child,
    pub port: u16,
    /// The last lines moto wrote to stderr (its request log, its errors).
    pub log: Arc<Mutex<Vec<String>>>,
}

/// How long moto may take to serve (a cold first start imports a lot of Python).
pub const MOTO_START: Duration = Duration::from_secs(60);

impl Moto {
    /// Starts moto on `port` (one it picks itself if `None`) and returns once it serves: it
    /// bound the port itself (werkzeug's "Running on" line, so no other process answers in its
    /// place) and a Secrets Manager call succeeded. Moto loads a service's backend on that
    /// service's first call; a first call made by an edge server under test (time-limited,
    /// concurrent with the others') must find it loaded: readiness, not an open port.
    /// With `auth_after = Some(n)`, moto checks signatures and IAM permissions from the
    /// (n+1)-th of the test's own requests on (the readiness call is not counted).
    pub fn start(port: Option<u16>, auth_after: Option<u32>) -> Moto {
        use std::io::BufRead;
        // `python3 -m moto.server` is `moto_server` without depending on PATH.
        let mut cmd = std::process::Command::new("python3");
        cmd.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.unwrap_or(0).to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
        if let Some(n) = auth_after {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", (n + 1).to_string());
        }
        let mut child = cmd
            .spawn()
            .expect("python3 not found (moto, the AWS emulator, runs on it)");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (bound_tx, bound) = std::sync::mpsc::channel::<u16>();
        {
            let pipe = child.stderr.take().unwrap();
            let log = log.clone();
            // Drains moto's stderr for its life (a full pipe would block its request log).
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.trim().strip_prefix("* Running on http://") {
                        if let Some(Ok(p)) = rest.rsplit(':').next().map(str::parse) {
                            let _ = bound_tx.send(p);
                        }
                    }
                    let mut log = log.lock().unwrap();
                    if log.len() == 50 {
                        log.remove(0);
                    }
                    log.push(line);
                }
            });
        }
        let mut moto = Moto {
            child,
            port: 0,
            log,
        };
        let hint = "`pip install 'moto[server]'` (.ci/test does)";
        moto.port = match bound.recv_timeout(MOTO_START) {
            Ok(p) => p,
            // The pipe closed without the line: moto exited (a port in use, not installed).
            Err(_) => {
                let status = moto.child.try_wait().ok().flatten();
                panic!(
                    "moto did not start ({status:?}; {hint}):\n{}",
                    moto.log.lock().unwrap().join("\n")
                );
            }
        };
        if let Some(p) = port {
            assert_eq!(moto.port, p, "moto listens on another port");
        }
        let start = Instant::now();
        loop {
            match moto.try_json("secretsmanager.ListSecrets", &serde_json::json!({})) {
                Ok(_) => break,
                Err(why) => assert!(
                    start.elapsed() < MOTO_START,
                    "moto does not serve Secrets Manager: {why}\n{}",
                    moto.log.lock().unwrap().join("\n")
                ),
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto exited ({status}): {hint}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One plain HTTP request; (status, body).
    pub fn http(
        &self,
        service: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        self.try_http(service, method, path, headers, body)
            .unwrap_or_else(|e| panic!("moto: {method} {path}: {e}"))
    }

    /// [`Moto::http`], with an error where no answer arrives.
    pub fn try_http(
        &self,
        service: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: {}\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=AKIDSETUP/20240101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=00\r\n",
            self.port,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let status = out
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {out:?}")))?;
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }

    /// An IAM call (query protocol).
    pub fn iam(&self, query: &str) -> String {
        let (status, body) = self.http(
            "iam",
            "POST",
            "/",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            &format!("{query}&Version=2010-05-08"),
        );
        assert_eq!(status, 200, "{query}: {body}");
        body
    }

    /// A JSON API call: `target` is `TrentService.CreateKey`, `secretsmanager.CreateSecret`…
    pub fn json(&self, target: &str, body: &serde_json::Value) -> serde_json::Value {
        self.try_json(target, body)
            .unwrap_or_else(|e| panic!("{target}: {e}"))
    }

    /// [`Moto::json`], with an error for anything but a 200 and a JSON answer.
    pub fn try_json(
        &self,
        target: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let service = if target.starts_with("TrentService") {
            "kms"
        } else {
            "secretsmanager"
        };
        let (status, text) = self
            .try_http(
                service,
                "POST",
                "/",
                &[
                    ("Content-Type", "application/x-amz-json-1.1"),
                    ("X-Amz-Target", target),
                ],
                &body.to_string(),
            )
            .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("{status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
    }

    /// moto's whole state (its `/moto-api/data.json`): the secrets as stored.
    pub fn secrets(&self) -> Vec<serde_json::Value> {
        let (status, text) = self.http("s3", "GET", "/moto-api/data.json", &[], "");
        assert_eq!(status, 200, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["secretsmanager"]["FakeSecret"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
