//! A software TPM 2.0 for the tests: `swtpm socket --tpm2` (Debian/Ubuntu package `swtpm`,
//! which `.ci/test` installs) on loopback ports of its own, its state in a temporary
//! directory, and `tpm2-tools` to change its PCRs. [`Swtpm::start`] returns `None`, with the
//! reason printed, only when swtpm is not installed and `CI` is unset; in CI it must run.
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::TempDir;

pub struct Swtpm {
    child: Child,
    /// The command port; the control port is the next one.
    pub port: u16,
    _state: TempDir,
}

/// Whether swtpm is installed; `false` (after printing why) lets a test skip outside CI.
pub fn available(test: &str) -> bool {
    let found = Command::new("swtpm")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "swtpm is not installed (apt-get install swtpm swtpm-tools tpm2-tools libtss2-dev; \
             .ci/test does): in CI the TPM tests must run"
        );
        eprintln!("{test}: skipped: swtpm is not installed (apt-get install swtpm tpm2-tools)");
    }
    found
}

/// Two free consecutive loopback ports (swtpm's command and control ports).
fn free_ports() -> u16 {
    loop {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

impl Swtpm {
    /// A new TPM (a fresh storage seed: keys of another TPM do not load in it), started and
    /// answering.
    pub fn start(tag: &str) -> Swtpm {
        let state = TempDir::new(tag);
        for _ in 0..5 {
            let port = free_ports();
            let mut child = Command::new("swtpm")
                .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
                .arg("--tpmstate")
                .arg(format!("dir={}", state.path().display()))
                .args([
                    "--server",
                    &format!("type=tcp,bindaddr=127.0.0.1,port={port}"),
                ])
                .args([
                    "--ctrl",
                    &format!("type=tcp,bindaddr=127.0.0.1,port={}", port + 1),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("swtpm must be installed (apt-get install swtpm; .ci/test does)");
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // a port taken meanwhile: try others
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Swtpm {
                        child,
                        port,
                        _state: state,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("swtpm did not start");
    }

    /// The TCTI that reaches it.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Extends PCR `pcr` of the sha256 bank (`tpm2_pcrextend`): the measured state changes.
    pub fn extend(&self, pcr: u8) {
        let out = Command::new("tpm2_pcrextend")
            .args(["-T", &self.tcti()])
            .arg(format!("{pcr}:sha256={}", "ab".repeat(32)))
            .output()
            .expect("tpm2_pcrextend must be installed (apt-get install tpm2-tools)");
        assert!(out.status.success(), "tpm2_pcrextend: {out:?}");
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}
