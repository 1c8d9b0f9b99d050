//! Memory hygiene of running servers (`kes-node/src/harden/`), observed from outside through
//! `/proc/PID`: the HSM key and the PKCS#11 PIN are not in the process's environment, memory
//! is locked where the system allows it (and the server logs one line and serves where it does
//! not), core dumps are off and the process is not dumpable. Run as root, as CI does: the
//! unprivileged case starts its server as `nobody` through `prlimit` and `setpriv`
//! (util-linux).

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use support::*;

/// A field of `/proc/PID/status` (`VmLck`, `Uid`...), without its name.
fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// `VmLck` in kB.
fn locked_kb(pid: u32) -> u64 {
    let v = status_field(pid, "VmLck");
    v.trim_end_matches("kB").trim().parse().unwrap()
}

/// The soft and hard core file size limits of `/proc/PID/limits`.
fn core_limit(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let mut words = line["Max core file size".len()..].split_whitespace();
    (
        words.next().unwrap().to_string(),
        words.next().unwrap().to_string(),
    )
}

/// Asserts the key is in neither the environment nor the command line of `pid`.
fn assert_key_not_exposed(pid: u32) {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        !environ.contains(HSM_KEY) && !environ.contains("KES_HSM_KEY="),
        "the HSM key is in /proc/{pid}/environ: {environ:?}"
    );
    // The server got here through the handover, not some other way.
    assert!(environ.contains("KES_SECRETS_FD="), "{environ:?}");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(HSM_KEY));
    // Re-executed, it keeps its name (`ps`, `pgrep kes-node`).
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "kes-node");
}

/// A round trip with a key, so the server demonstrably holds the right HSM key.
fn round_trip(server: &Server) {
    let mut c = server.admin();
    c.create_key("k");
    let ct = c.encrypt("k", b"hygiene", None);
    assert_eq!(c.decrypt("k", &ct, None), b"hygiene");
}

#[test]
fn hsm_key_leaves_the_environment() {
    // Env::new gives the server KES_HSM_KEY in its environment.
    let env = Env::new("hyg-environ");
    let mut server = env.start();
    assert_key_not_exposed(server.pid());
    round_trip(&server);
    let ct = server.admin().encrypt("k", b"kept", None);
    server.stop();

    // Restarted on the same kes.db: the handed-over key unseals it again.
    let server = env.start();
    assert_key_not_exposed(server.pid());
    assert_eq!(server.admin().decrypt("k", &ct, None), b"kept");
}

/// `hsm.key: ${KES_HSM_KEY}` in the config (as the README shows) still finds the key.
#[test]
fn hsm_key_from_the_environment_through_the_config() {
    let mut env = Env::with_hsm(
        "hyg-config-var",
        HsmKey::Yaml("hsm:\n  key: ${KES_HSM_KEY}\n".into()),
    );
    env.set_env("KES_HSM_KEY", HSM_KEY);
    let server = env.start();
    assert_key_not_exposed(server.pid());
    round_trip(&server);
}

/// A PKCS#11 token's PIN given in the environment (`pin_env`) leaves it too.
#[test]
fn pkcs11_pin_leaves_the_environment() {
    const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
    const PIN: &str = "hygiene-pin-4711";
    let token = TempDir::new("hyg-token");
    let conf = token.path().join("softhsm2.conf");
    std::fs::create_dir_all(token.path().join("tokens")).unwrap();
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            token.path().join("tokens").display()
        ),
    )
    .unwrap();
    let init = std::process::Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args(["--init-token", "--free", "--label", "hyg", "--pin", PIN])
        .args(["--so-pin", "5678"])
        .output()
        .expect("softhsm2-util (apt-get install softhsm2; .ci/test does)");
    assert!(init.status.success(), "{init:?}");
    let mut env = Env::with_hsm(
        "hyg-pin",
        HsmKey::Yaml(format!(
            "hsm:\n  pkcs11:\n    module: {MODULE}\n    token: hyg\n    pin_env: HYG_PIN\n    \
             key_label: root\n"
        )),
    );
    env.set_env("SOFTHSM2_CONF", conf.to_str().unwrap());
    env.set_env("HYG_PIN", PIN);
    let server = env.start();
    let pid = server.pid();
    round_trip(&server);
    let environ = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap())
        .into_owned();
    assert!(
        !environ.contains(PIN) && !environ.contains("HYG_PIN="),
        "the PIN is in /proc/{pid}/environ: {environ:?}"
    );
    // What the token module reads from the environment stays.
    assert!(environ.contains("SOFTHSM2_CONF="), "{environ:?}");
}

#[test]
fn memory_locked_and_core_dumps_off() {
    // We run as root: mlockall is allowed.
    let env = Env::new("hyg-locked");
    let server = env.start();
    let pid = server.pid();
    round_trip(&server);
    assert!(locked_kb(pid) > 0, "VmLck is 0: memory is not locked");
    assert_eq!(core_limit(pid), ("0".into(), "0".into()));
    assert!(
        !server.stderr().contains("not locked"),
        "{}",
        server.stderr()
    );
    // Only touched pages are locked (MCL_ONFAULT): resident memory stays far below the
    // locked mappings' size, which counts every reserved thread stack and heap.
    let rss: u64 = status_field(pid, "VmRSS")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    assert!(
        rss < locked_kb(pid),
        "VmRSS {rss} kB >= VmLck {} kB",
        locked_kb(pid)
    );
}

#[test]
fn edge_server_is_hardened_too() {
    let mut env = Env::edge("hyg-edge");
    let keys = env.tmp.path().join("keys");
    env.append_config(&format!("keystore:\n  fs:\n    path: {}\n", keys.display()));
    env.set_env("KES_HSM_KEY", HSM_KEY);
    let server = env.start();
    let pid = server.pid();
    assert_key_not_exposed(pid);
    round_trip(&server);
    assert!(locked_kb(pid) > 0);
    assert_eq!(core_limit(pid), ("0".into(), "0".into()));
}

/// `chown -R uid:gid path`.
fn chown_all(path: &Path, id: u32) {
    std::os::unix::fs::chown(path, Some(id), Some(id)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_all(&entry.unwrap().path(), id);
        }
    }
}

/// As an unprivileged user (no CAP_IPC_LOCK, RLIMIT_MEMLOCK 64 KiB) the server may not lock
/// its memory: it says so once and serves. It is still not dumpable: the kernel then gives
/// its `/proc/PID` files to root instead of the process's user.
#[test]
fn unprivileged_server_logs_once_and_serves() {
    const NOBODY: u32 = 65534;
    let mut env = Env::new("hyg-nobody");
    // The binary and every file the server reads or writes, where `nobody` can reach them.
    let bin = env.tmp.path().join("kes-node");
    std::fs::copy(KES_NODE, &bin).unwrap();
    chown_all(env.tmp.path(), NOBODY);
    let id = NOBODY.to_string();
    env.set_launcher([
        "prlimit".to_string(),
        "--memlock=65536:65536".into(),
        "setpriv".into(),
        format!("--reuid={id}"),
        format!("--regid={id}"),
        "--clear-groups".into(),
        "--".into(),
        bin.display().to_string(),
    ]);
    let server = env.start();
    let pid = server.pid();
    round_trip(&server);

    assert!(
        status_field(pid, "Uid").starts_with(&id),
        "the server does not run as nobody: Uid {}",
        status_field(pid, "Uid")
    );
    let stderr = server.stderr();
    assert_eq!(
        stderr.matches("memory is not locked").count(),
        1,
        "expected one line about unlocked memory:\n{stderr}"
    );
    assert_eq!(locked_kb(pid), 0);
    let owner = std::fs::metadata(format!("/proc/{pid}/status"))
        .unwrap()
        .uid();
    assert_eq!(
        owner, 0,
        "/proc/{pid} belongs to its user: the process is dumpable"
    );
    assert_eq!(core_limit(pid), ("0".into(), "0".into()));
    assert_key_not_exposed(pid);
}
