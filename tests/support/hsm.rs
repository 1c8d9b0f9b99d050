//! What the HSM tests (`tests/hsm_tpm.rs`, `tests/hsm_aws.rs`) do with `kes-node` besides
//! running servers: its `hsm` commands, the HSM entries of `/v1/status`, and start-up refusals.
use std::path::Path;
use std::process::{Command, Output};

use super::{Env, Server, KES_NODE};

/// `kes-node ARGS` without `KES_HSM_KEY` (the HSM comes from `--config`/`--to` files).
pub fn kes(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(KES_NODE)
        .args(args)
        .env_remove("KES_HSM_KEY")
        .output()
        .expect("run kes-node")
}

/// Its standard output; panics (showing everything) if it failed.
pub fn ok(out: &Output) -> String {
    assert!(out.status.success(), "kes-node failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kes-node hsm ls --json`: the HSMs holding a sealed copy of `<data>/kes.db`.
pub fn ls(data: &Path) -> Vec<String> {
    serde_json::from_str(&ok(&kes(&[&"hsm", &"ls", &"--json", &"--data", &data]))).unwrap()
}

/// The `hsm` entries of `/v1/status`.
pub fn status_hsm(server: &Server) -> serde_json::Value {
    server.admin().get("/v1/status").assert_json_ok()["hsm"].clone()
}

/// The server must not start; its error is one line that contains every one of `what`.
#[track_caller]
pub fn refused(env: &Env, what: &[&str]) -> String {
    let exited = env.try_start().err().expect("the server must not start");
    let err = exited.stderr.trim().to_string();
    for w in what {
        assert!(err.contains(w), "expected {w:?} in: {err}");
    }
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}
