//! Backups over the API and `kes-node restore`: a backup restores into a new directory with
//! the cluster's HSM key, brings every key, enclave and policy back (old ciphertexts decrypt),
//! and is refused with another HSM key without leaving a database behind.
mod support;

use std::process::Command;

use serde_json::json;
use support::{Env, HsmKey, HSM_KEY, OTHER_HSM_KEY};

const KES_NODE: &str = env!("CARGO_BIN_EXE_kes-node");

fn restore(from: &std::path::Path, dir: &std::path::Path, hsm: &str) -> std::process::Output {
    Command::new(KES_NODE)
        .arg("restore")
        .arg("--from")
        .arg(from)
        .arg(dir)
        .env("KES_HSM_KEY", hsm)
        .output()
        .expect("run kes-node restore")
}

#[test]
fn a_backup_restores_everything_into_a_new_directory() {
    let env = Env::new("backup-src");
    let mut server = env.start();
    let mut admin = server.admin();
    admin.put("/v1/key/create/kept").assert_empty_ok();
    let ct = admin
        .put_json("/v1/key/generate/kept", &json!({"context": "Y3R4"}))
        .assert_json_ok()["ciphertext"]
        .clone();
    admin.put("/v1/enclave/create/tenant").assert_empty_ok();
    admin
        .must(
            "PUT",
            "/v1/key/create/in-tenant",
            &[("Kes-Enclave", "tenant")],
            None,
        )
        .assert_empty_ok();
    admin
        .put_json("/v1/policy/create/p", &json!({"allow": ["/v1/status"]}))
        .assert_empty_ok();

    let backup = admin.get("/v1/cluster/backup");
    assert_eq!(backup.status, 200);
    assert_eq!(
        backup.header("Content-Type"),
        Some("application/octet-stream")
    );
    assert!(
        !backup.body.windows(4).any(|w| w == b"kept"),
        "names and key material are encrypted in the backup"
    );
    assert!(backup.chunked, "the backup streams (chunked)");
    // The connection serves the next request after the streamed body.
    admin.get("/v1/key/describe/kept").assert_json_ok();
    server.stop();
    let file = env.tmp.path().join("backup.bin");
    std::fs::write(&file, &backup.body).unwrap();

    // Another HSM key cannot restore it, and nothing is left behind.
    let wrong = Env::with_hsm("backup-wrong", HsmKey::Env(OTHER_HSM_KEY.into()));
    let out = restore(&file, &wrong.data, OTHER_HSM_KEY);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not unseal the backup"), "{stderr}");
    assert!(
        !wrong.data.join("kes.db").exists(),
        "a refused restore leaves no kes.db"
    );

    // The right key restores everything.
    let dst = Env::with_hsm("backup-dst", HsmKey::Env(HSM_KEY.into()));
    let out = restore(&file, &dst.data, HSM_KEY);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = dst.start();
    let mut admin = server.admin();
    admin.get("/v1/key/describe/kept").assert_json_ok();
    let pt = admin
        .put_json(
            "/v1/key/decrypt/kept",
            &json!({"ciphertext": ct, "context": "Y3R4"}),
        )
        .assert_json_ok();
    assert!(pt["plaintext"].is_string());
    admin
        .must(
            "GET",
            "/v1/key/describe/in-tenant",
            &[("Kes-Enclave", "tenant")],
            None,
        )
        .assert_json_ok();
    admin.get("/v1/policy/read/p").assert_json_ok();
    // The restored node is a cluster of one and takes writes.
    admin.put("/v1/key/create/after-restore").assert_empty_ok();

    // Restoring into a directory that already has a database is refused.
    let out = restore(&file, &dst.data, HSM_KEY);
    assert!(!out.status.success());
}
