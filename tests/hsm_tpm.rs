//! Real TPM 2.0 sealing (cargo feature `tpm`) against a software TPM: `swtpm socket --tpm2`
//! started by each test on loopback ports of its own (`tests/support/swtpm.rs`), real
//! `kes-node` servers sealed by it: restarts, PCR-bound copies refused once a PCR is extended
//! (`tpm2_pcrextend`), another TPM refused, a TPM that goes away reported by the health check,
//! and `kes-node hsm add|rm|ls` with a TPM copy beside a SoftHSM recovery copy. Outside CI the
//! tests skip, saying so, when swtpm is not installed; in CI (`CI` set) they must run.
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::hsm::{kes, ls, ok, refused, status_hsm};
use support::swtpm::{self, Swtpm};
use support::{Env, HsmKey, OTHER_HSM_KEY};

/// An `hsm:` section for the TPM `tpm`, bound to `pcrs` (none: `[]`).
fn tpm(tpm: &Swtpm, pcrs: &str) -> String {
    format!(
        "hsm:\n  tpm:\n    tcti: {}\n    pcrs: [{pcrs}]\n    health_check: 200ms\n",
        tpm.tcti()
    )
}

#[test]
fn a_tpm_seals_restarts_and_refuses_a_changed_pcr_or_another_tpm() {
    if !swtpm::available("tpm restart") {
        return;
    }
    let mut tpm_a = Swtpm::start("tpm-a");
    let mut env = Env::with_hsm("tpm-restart", HsmKey::Yaml(tpm(&tpm_a, "0, 7")));
    let mut server = env.start();
    let mut admin = server.admin();
    admin.create_key("k");
    let (plain, ct) = admin.generate("k", None);
    assert_eq!(
        status_hsm(&server),
        json!([{"name": "tpm2:sha256:0,7", "state": "ok"}])
    );
    server.stop();
    assert_eq!(ls(&env.data), ["tpm2:sha256:0,7"]);

    // Restarted, the TPM unseals the same root key: old ciphertexts decrypt.
    let mut server = env.start();
    assert_eq!(server.admin().decrypt("k", &ct, None), plain);
    server.stop();
    let before = std::fs::read(env.db_path()).unwrap();

    // Another TPM (another storage seed): the copy does not load there.
    let tpm_b = Swtpm::start("tpm-b");
    env.set_hsm(HsmKey::Yaml(tpm(&tpm_b, "0, 7")));
    refused(
        &env,
        &["kes.db is sealed with a different key of HSM 'tpm2:sha256:0,7'"],
    );

    // PCR 7 extended (the measured boot state changed): the TPM refuses to unseal.
    tpm_a.extend(7);
    env.set_hsm(HsmKey::Yaml(tpm(&tpm_a, "0, 7")));
    refused(
        &env,
        &[
            "HSM 'tpm2:sha256:0,7' refuses to unseal the root key",
            "PCRs 0,7 (sha256) do not hold the values the root key was sealed to",
        ],
    );
    assert_eq!(
        std::fs::read(env.db_path()).unwrap(),
        before,
        "refusals change nothing"
    );

    // An unbound copy (no PCRs) is another HSM; the TPM going away while a server runs is
    // reported by the health check, and the server keeps serving.
    let unbound = Env::with_hsm("tpm-unbound", HsmKey::Yaml(tpm(&tpm_a, "")));
    let mut server = unbound.start();
    server.admin().create_key("u");
    assert_eq!(
        status_hsm(&server),
        json!([{"name": "tpm2", "state": "ok"}])
    );
    tpm_a.stop();
    let start = Instant::now();
    loop {
        let state = status_hsm(&server)[0]["state"]
            .as_str()
            .unwrap()
            .to_string();
        if state.starts_with("unavailable: ") && state.contains("cannot reach the TPM") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "still {state}");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.admin().get("/v1/key/describe/u").assert_json_ok();
    server.stop();
    refused(
        &unbound,
        &[
            "cannot reach the TPM at 'swtpm:host=127.0.0.1",
            "hsm.tpm.tcti",
        ],
    );
}

#[test]
fn a_tpm_copy_beside_a_softhsm_recovery_copy() {
    if !swtpm::available("tpm add/rm/ls") {
        return;
    }
    let tpm_a = Swtpm::start("tpm-copies");
    let mut env = Env::with_hsm("tpm-copies", HsmKey::Yaml(tpm(&tpm_a, "7")));
    let mut server = env.start();
    server.admin().create_key("k");
    let (plain, ct) = server.admin().generate("k", None);
    server.stop();

    // A SoftHSM recovery copy beside the TPM's.
    let recovery = env.tmp.path().join("recovery.yml");
    std::fs::write(&recovery, format!("hsm:\n  key: \"{OTHER_HSM_KEY}\"\n")).unwrap();
    let out = ok(&kes(&[
        &"hsm",
        &"add",
        &"--config",
        &env.config,
        &"--to",
        &recovery,
        &"--data",
        &env.data,
    ]));
    assert!(out.contains("added HSM 'kes:v1:hsm:soft'"), "{out}");
    assert_eq!(ls(&env.data), ["kes:v1:hsm:soft", "tpm2:sha256:7"]);

    // The boot state changes: the TPM refuses, the recovery key opens kes.db.
    tpm_a.extend(7);
    refused(&env, &["refuses to unseal the root key", "PCRs 7 (sha256)"]);
    let tpm_yml = env.tmp.path().join("tpm.yml");
    std::fs::write(&tpm_yml, tpm(&tpm_a, "7")).unwrap();
    env.set_hsm(HsmKey::Config(OTHER_HSM_KEY.into()));
    let mut server = env.start();
    assert_eq!(server.admin().decrypt("k", &ct, None), plain);
    server.stop();

    // Re-seal to the new state: drop the stale TPM copy, add a fresh one with the recovery key.
    let out = ok(&kes(&[
        &"hsm",
        &"rm",
        &"tpm2:sha256:7",
        &"--config",
        &env.config,
        &"--data",
        &env.data,
    ]));
    assert!(out.contains("removed HSM 'tpm2:sha256:7'"), "{out}");
    assert_eq!(ls(&env.data), ["kes:v1:hsm:soft"]);
    ok(&kes(&[
        &"hsm",
        &"add",
        &"--config",
        &env.config,
        &"--to",
        &tpm_yml,
        &"--data",
        &env.data,
    ]));
    assert_eq!(ls(&env.data), ["kes:v1:hsm:soft", "tpm2:sha256:7"]);
    env.set_hsm(HsmKey::Yaml(tpm(&tpm_a, "7")));
    let mut server = env.start();
    assert_eq!(server.admin().decrypt("k", &ct, None), plain);
    server.stop();
    // The last copy is never removed; the configured one (the TPM) cannot remove itself.
    let out = kes(&[
        &"hsm",
        &"rm",
        &"tpm2:sha256:7",
        &"--config",
        &tpm_yml,
        &"--data",
        &env.data,
    ]);
    assert!(!out.status.success(), "{out:?}");
}
