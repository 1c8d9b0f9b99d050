//! Durability of a node's `kes.db` under a real full disk: a `kes-node server` whose data
//! directory is a small tmpfs (mounted by the test; it runs as root, as CI does), filled with a
//! filler file. Writes answer 507 and are never acknowledged without being stored, reads go on,
//! writes resume by themselves once space is freed, a node starts on a full disk and serves
//! reads, and everything acknowledged is there after a restart.
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Env, Server};

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs at {} (these tests need root, as CI has): {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            path: at.to_path_buf(),
        }
    }

    /// Writes a filler file until the disk is full (or `leave` bytes remain, roughly).
    fn fill(&self, name: &str, leave: u64) -> PathBuf {
        let path = self.path.join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0x5au8; 64 * 1024];
        loop {
            let free = free_bytes(&self.path);
            if free <= leave {
                break;
            }
            let n = block.len().min((free - leave) as usize).max(4096);
            if f.write_all(&block[..n]).is_err() {
                break; // Full.
            }
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap()
}

/// An environment whose data directory is on a fresh 8 MiB tmpfs.
fn env_on_tmpfs(tag: &str, min_free: &str) -> (Env, Tmpfs) {
    let mut env = Env::new(tag);
    let fs = Tmpfs::mount(&env.tmp.path().join("mnt"), "8m");
    env.data = fs.path.join("data");
    std::fs::create_dir_all(&env.data).unwrap();
    env.append_config(&format!("store:\n  min_free: {min_free}\n"));
    (env, fs)
}

/// Creates `secret-<i>` (a 100 KB secret) until a write fails; returns the acknowledged names
/// and the failing response's status and message.
fn write_until_refused(server: &Server, from: usize) -> (Vec<String>, u16, String) {
    let mut c = server.admin();
    let value = base64_of(&vec![7u8; 100_000]);
    let mut acked = Vec::new();
    for i in from..from + 500 {
        let name = format!("secret-{i}");
        let resp = c.put_json(
            &format!("/v1/secret/create/{name}"),
            &serde_json::json!({ "secret": value }),
        );
        if resp.status != 200 {
            let message = resp.json()["message"].as_str().unwrap_or("").to_string();
            return (acked, resp.status, message);
        }
        acked.push(name);
    }
    panic!("500 secrets of 100 KB fit on an 8 MiB disk");
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Every name in `names` reads back, and the listing holds all of them.
#[track_caller]
fn assert_all_readable(server: &Server, names: &[String]) {
    let mut c = server.admin();
    for name in names {
        let resp = c.get(&format!("/v1/secret/describe/{name}"));
        assert_eq!(resp.status, 200, "{name}: {}", resp.text());
    }
    let listed = c.get("/v1/secret/list/*").text();
    for name in names {
        assert!(listed.contains(&format!("\"{name}\"")), "{name} not listed");
    }
}

/// Polls until a secret can be created again (writes resume without a restart).
fn wait_writable(server: &Server, name: &str) {
    let mut c = server.admin();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let resp = c.put_json(
            &format!("/v1/secret/create/{name}"),
            &serde_json::json!({ "secret": base64_of(b"after") }),
        );
        if resp.status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "writes did not resume: {} {}\n{}",
            resp.status,
            resp.text(),
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn below_min_free_writes_are_refused_with_507_and_reads_go_on() {
    let (env, fs) = env_on_tmpfs("minfree", "2MiB");
    let server = env.start();
    let mut c = server.admin();
    c.create_key("k1");
    let filler = fs.fill("filler", 1 << 20);

    // Refused before the disk is full, with the KES error body and the reason.
    let resp = c.put("/v1/key/create/k2");
    assert_eq!(resp.status, 507, "{}", resp.text());
    let message = resp.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("store.min_free"), "{message}");
    // Reads and key operations that store nothing go on.
    assert_eq!(c.get("/v1/key/describe/k1").status, 200);
    let (plaintext, ciphertext) = c.generate("k1", None);
    assert_eq!(c.decrypt("k1", &ciphertext, None), plaintext);
    assert!(c.get("/v1/key/list/*").text().contains("\"k1\""));
    // Deletions pass: they are how an operator makes room.
    assert_eq!(c.delete("/v1/key/delete/k1").status, 200);

    std::fs::remove_file(filler).unwrap();
    c.create_key("k3");
}

#[test]
fn a_full_disk_fails_writes_keeps_reads_and_loses_nothing() {
    // No floor: the writes themselves meet the full disk.
    let (env, fs) = env_on_tmpfs("diskfull", "0");
    let mut server = env.start();
    server.admin().create_key("k1");
    let mut acked = Vec::new();
    let filler = fs.fill("filler", 0);
    let (more, status, message) = write_until_refused(&server, 0);
    acked.extend(more);
    assert_eq!(status, 507, "{message}\n{}", server.stderr());
    assert!(message.contains("disk is full"), "{message}");

    // The server is alive and serves reads of everything acknowledged.
    assert_all_readable(&server, &acked);
    let mut c = server.admin();
    let (plaintext, ciphertext) = c.generate("k1", None);
    assert_eq!(c.decrypt("k1", &ciphertext, None), plaintext);
    // Still full: a small write fits only if kes.db has room left inside (then it is stored
    // like any other); otherwise it is refused the same way, and the server lives on.
    let resp = c.put("/v1/key/create/k2");
    assert!(
        [200, 503, 507].contains(&resp.status),
        "{} {}",
        resp.status,
        resp.text()
    );

    // Space returns: writes resume by themselves.
    std::fs::remove_file(&filler).unwrap();
    wait_writable(&server, "after-full");
    acked.push("after-full".into());
    assert!(
        server.stderr().contains("cannot persist the cluster state"),
        "{}",
        server.stderr()
    );

    // Nothing acknowledged is lost across a restart.
    server.stop();
    let server = env.start();
    assert_all_readable(&server, &acked);
    server.admin().create_key("k4");
}

#[test]
fn a_node_starts_on_a_full_disk_and_serves_reads() {
    let (env, fs) = env_on_tmpfs("startfull", "1MiB");
    let mut server = env.start();
    let mut acked = Vec::new();
    {
        let mut c = server.admin();
        for i in 0..10 {
            let name = format!("secret-{i}");
            let body = serde_json::json!({ "secret": base64_of(&[1u8; 100_000]) });
            c.put_json(&format!("/v1/secret/create/{name}"), &body)
                .assert_empty_ok();
            acked.push(name);
        }
    }
    server.stop();
    let filler = fs.fill("filler", 0);

    let server = env
        .try_start()
        .unwrap_or_else(|e| panic!("no start on a full disk: {:?}\n{}", e.status, e.stderr));
    assert_all_readable(&server, &acked);
    let mut c = server.admin();
    let resp = c.put("/v1/key/create/k1");
    assert_eq!(resp.status, 507, "{}", resp.text());

    std::fs::remove_file(&filler).unwrap();
    wait_writable(&server, "after-start");
    assert_all_readable(&server, &acked);
}
