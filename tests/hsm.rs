//! Real PKCS#11 sealing: SoftHSMv2 tokens in temporary directories (`SOFTHSM2_CONF` per test,
//! `softhsm2-util --init-token`), real `kes-node` servers sealed by them, restarts, a second
//! and third HSM added and removed with `kes-node hsm add|rm|ls`, every start-up error, and a
//! token that disappears under a running server. SoftHSMv2 must be installed (`.ci/run` does):
//! without it these tests fail, they never skip.
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{Env, HsmKey, TempDir, OTHER_HSM_KEY};

const KES_NODE: &str = env!("CARGO_BIN_EXE_kes-node");
const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN_VAR: &str = "KES_TEST_PKCS11_PIN";
const PIN: &str = "0815-kes-pin";
const SO_PIN: &str = "5678-so-pin";

/// A SoftHSMv2 configuration of its own: a token directory only this test sees.
struct SoftHsm2 {
    dir: TempDir,
    conf: PathBuf,
}

impl SoftHsm2 {
    fn new(tag: &str) -> SoftHsm2 {
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} is missing: install SoftHSMv2 (apt-get install softhsm2), as .ci/run does"
        );
        let dir = TempDir::new(tag);
        std::fs::create_dir_all(dir.path().join("tokens")).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().join("tokens").display()
            ),
        )
        .unwrap();
        SoftHsm2 { dir, conf }
    }

    fn init_token(&self, label: &str) {
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &self.conf)
            .args(["--init-token", "--free", "--label", label, "--pin", PIN])
            .args(["--so-pin", SO_PIN])
            .output()
            .expect("softhsm2-util must be installed (apt-get install softhsm2; .ci/run does)");
        assert!(out.status.success(), "init token {label}: {out:?}");
    }

    /// The token directories (one per token).
    fn token_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path().join("tokens"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    /// An environment whose servers see this configuration and the PIN.
    fn env(&self, tag: &str, hsm: String) -> Env {
        let mut env = Env::with_hsm(tag, HsmKey::Yaml(hsm));
        env.set_env("SOFTHSM2_CONF", self.conf.to_str().unwrap());
        env.set_env(PIN_VAR, PIN);
        env
    }

    /// `kes-node ARGS` with this configuration and the PIN (and no `KES_HSM_KEY`).
    fn kes(&self, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
        Command::new(KES_NODE)
            .args(args)
            .env_remove("KES_HSM_KEY")
            .env("SOFTHSM2_CONF", &self.conf)
            .env(PIN_VAR, PIN)
            .output()
            .expect("run kes-node")
    }
}

/// An `hsm:` section for a SoftHSM token.
fn pkcs11(token: &str, key_label: &str, extra: &str) -> String {
    format!(
        "hsm:\n  pkcs11:\n    module: {MODULE}\n    token: {token}\n    pin_env: {PIN_VAR}\n    \
         key_label: {key_label}\n{extra}"
    )
}

fn soft(key: &str) -> String {
    format!("hsm:\n  key: \"{key}\"\n")
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "kes-node failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "kes-node should have failed: {out:?}"
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    err
}

fn ls(hsm: &SoftHsm2, data: &Path) -> Vec<String> {
    let out = ok(&hsm.kes(&[&"hsm", &"ls", &"--json", &"--data", &data]));
    serde_json::from_str(&out).unwrap()
}

fn status_hsm(server: &support::Server) -> Value {
    server.admin().get("/v1/status").assert_json_ok()["hsm"].clone()
}

#[test]
fn a_server_sealed_by_a_token_restarts_with_its_data() {
    let hsm = SoftHsm2::new("p11-restart");
    hsm.init_token("kes");
    let env = hsm.env("p11-restart", pkcs11("kes", "root", ""));
    let mut server = env.start();
    let mut admin = server.admin();
    admin.create_key("k");
    let (plain, ct) = admin.generate("k", None);
    assert_eq!(
        status_hsm(&server),
        json!([{"name": "pkcs11:kes/root", "state": "ok"}])
    );
    server.stop();
    assert!(!server.stdout().contains(PIN) && !server.stderr().contains(PIN));
    assert_eq!(ls(&hsm, &env.data), ["pkcs11:kes/root"]);

    // Restarted, the same token unseals the same root key: old ciphertexts decrypt.
    let mut server = env.start();
    assert_eq!(server.admin().decrypt("k", &ct, None), plain);
    assert_eq!(server.admin().list("*"), ["k"]);
    let backup = server.admin().get("/v1/cluster/backup");
    assert_eq!(backup.status, 200);
    server.stop();

    // A backup is sealed by the token too: restoring needs it (and never creates a key).
    let file = env.tmp.path().join("backup.bin");
    std::fs::write(&file, &backup.body).unwrap();
    let gone = env.tmp.path().join("gone.yml");
    std::fs::write(&gone, pkcs11("kes", "gone", "")).unwrap();
    let restored = env.tmp.path().join("restored");
    let err = failed(&hsm.kes(&[&"restore", &"--from", &file, &"--config", &gone, &restored]));
    assert!(
        err.contains("has no AES key labeled 'gone'") && err.contains("configure the HSM and key"),
        "{err}"
    );
    ok(&hsm.kes(&[
        &"restore",
        &"--from",
        &file,
        &"--config",
        &env.config,
        &restored,
    ]));
    let mut copy = hsm.env("p11-restored", pkcs11("kes", "root", ""));
    copy.data = restored;
    let mut server = copy.start();
    assert_eq!(server.admin().decrypt("k", &ct, None), plain);
    server.stop();

    // The first start created the sealing key on the token; kes.db holds only sealed data.
    let db = std::fs::read(env.db_path()).unwrap();
    assert!(!db.windows(PIN.len()).any(|w| w == PIN.as_bytes()));
}

#[test]
fn hsms_are_added_used_and_removed() {
    let hsm = SoftHsm2::new("p11-add");
    hsm.init_token("kes");
    hsm.init_token("backup");
    let mut env = hsm.env("p11-add", pkcs11("kes", "root", ""));
    let mut server = env.start();
    let mut admin = server.admin();
    admin.create_key("k");
    let (plain, ct) = admin.generate("k", None);

    // Offline only: redb lets one process open kes.db.
    let soft_file = env.tmp.path().join("soft.yml");
    std::fs::write(&soft_file, soft(OTHER_HSM_KEY)).unwrap();
    let add_soft: [&dyn AsRef<std::ffi::OsStr>; 8] = [
        &"hsm",
        &"add",
        &"--to",
        &soft_file,
        &"--config",
        &env.config,
        &"--data",
        &env.data,
    ];
    let err = failed(&hsm.kes(&add_soft));
    assert!(err.contains("in use by another process"), "{err}");
    server.stop();

    assert_eq!(
        ok(&hsm.kes(&add_soft)).trim(),
        format!("added HSM 'kes:v1:hsm:soft' to {}", env.db_path().display())
    );
    let err = failed(&hsm.kes(&add_soft));
    assert!(
        err.contains("already holds a root key sealed by HSM 'kes:v1:hsm:soft'"),
        "{err}"
    );

    // A second token, sealing with AES key wrap; its key is created by `add`.
    let backup_file = env.tmp.path().join("backup.yml");
    std::fs::write(
        &backup_file,
        pkcs11("backup", "wrap-key", "    mechanism: aes-key-wrap\n"),
    )
    .unwrap();
    ok(&hsm.kes(&[
        &"hsm",
        &"add",
        &"--to",
        &backup_file,
        &"--config",
        &env.config,
        &"--data",
        &env.data,
    ]));
    assert_eq!(
        ls(&hsm, &env.data),
        [
            "kes:v1:hsm:soft",
            "pkcs11:backup/wrap-key",
            "pkcs11:kes/root"
        ]
    );
    let plain_ls = ok(&hsm.kes(&[&"hsm", &"ls", &"--data", &env.data]));
    assert_eq!(
        plain_ls,
        "kes:v1:hsm:soft\npkcs11:backup/wrap-key\npkcs11:kes/root\n"
    );

    // Each HSM alone opens the database.
    env.set_hsm(HsmKey::Config(OTHER_HSM_KEY.into()));
    let mut server = env.start();
    assert_eq!(server.admin().decrypt("k", &ct, None), plain);
    assert_eq!(
        status_hsm(&server),
        json!([{"name": "kes:v1:hsm:soft", "state": "ok"}])
    );
    server.stop();
    env.set_hsm(HsmKey::Yaml(pkcs11(
        "backup",
        "wrap-key",
        "    mechanism: aes-key-wrap\n",
    )));
    let mut server = env.start();
    assert_eq!(server.admin().decrypt("k", &ct, None), plain);
    server.stop();

    // Remove the first token's copy, with the SoftHSM configured.
    let soft_config = env.tmp.path().join("soft.yml");
    let data = env.data.clone();
    let rm = |name: &str, config: &Path| {
        hsm.kes(&[&"hsm", &"rm", &name, &"--config", &config, &"--data", &data])
    };
    ok(&rm("pkcs11:kes/root", &soft_config));
    assert_eq!(
        ls(&hsm, &env.data),
        ["kes:v1:hsm:soft", "pkcs11:backup/wrap-key"]
    );
    let err = failed(&rm("pkcs11:kes/root", &soft_config));
    assert!(
        err.contains("holds no root key sealed by HSM 'pkcs11:kes/root'"),
        "{err}"
    );
    let err = failed(&rm("kes:v1:hsm:soft", &soft_config));
    assert!(
        err.contains("'kes:v1:hsm:soft' is the configured HSM"),
        "{err}"
    );

    // The removed token no longer opens it; the others still do.
    env.set_hsm(HsmKey::Yaml(pkcs11("kes", "root", "")));
    let err = env.try_start().err().unwrap().stderr;
    assert!(
        err.contains("kes.db has no root key sealed by HSM 'pkcs11:kes/root'"),
        "{err}"
    );

    // Down to one copy, which is never removed.
    ok(&rm("kes:v1:hsm:soft", &backup_file));
    assert_eq!(ls(&hsm, &env.data), ["pkcs11:backup/wrap-key"]);
    let err = failed(&rm("pkcs11:backup/wrap-key", &backup_file));
    assert!(err.contains("only sealed copy of the root key"), "{err}");
    env.set_hsm(HsmKey::Yaml(pkcs11(
        "backup",
        "wrap-key",
        "    mechanism: aes-key-wrap\n",
    )));
    let mut server = env.start();
    assert_eq!(server.admin().decrypt("k", &ct, None), plain);
    server.stop();
}

#[test]
fn start_up_errors_name_the_problem() {
    let hsm = SoftHsm2::new("p11-errors");
    hsm.init_token("kes");
    let mut env = hsm.env("p11-errors", pkcs11("kes", "root", ""));
    let expect_refusal = |env: &Env, what: &str| {
        let exited = env.try_start().err().expect("the server must not start");
        let err = exited.stderr;
        assert!(err.contains(what), "expected {what:?} in: {err}");
        assert!(!err.contains(PIN), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    };

    // Nothing is created while the HSM is not usable.
    env.set_hsm(HsmKey::Yaml(
        pkcs11("kes", "root", "").replace(MODULE, "/nonexistent/libpkcs11.so"),
    ));
    expect_refusal(&env, "PKCS#11 module /nonexistent/libpkcs11.so not found");
    let not_a_module = env.tmp.path().join("not-a-module.so");
    std::fs::write(&not_a_module, "text").unwrap();
    env.set_hsm(HsmKey::Yaml(
        pkcs11("kes", "root", "").replace(MODULE, not_a_module.to_str().unwrap()),
    ));
    expect_refusal(&env, "cannot load PKCS#11 module");
    env.set_hsm(HsmKey::Yaml(pkcs11("nope", "root", "")));
    expect_refusal(&env, "no PKCS#11 token labeled 'nope'");
    env.set_hsm(HsmKey::Yaml(pkcs11("kes", "root", "")));
    env.set_env(PIN_VAR, "9999-wrong-pin");
    expect_refusal(&env, "wrong PIN for PKCS#11 token 'kes'");
    assert!(!env.db_path().exists());

    env.set_env(PIN_VAR, PIN);
    let mut server = env.start();
    server.admin().create_key("k");
    server.stop();
    let before = std::fs::read(env.db_path()).unwrap();

    env.set_env(PIN_VAR, "9999-wrong-pin");
    expect_refusal(&env, "wrong PIN for PKCS#11 token 'kes'");
    env.set_env(PIN_VAR, PIN);
    // A key label the token does not have, and kes.db was not sealed with.
    env.set_hsm(HsmKey::Yaml(pkcs11("kes", "gone", "")));
    expect_refusal(
        &env,
        "PKCS#11 token 'kes' has no AES key labeled 'gone' (HSM 'pkcs11:kes/gone'), and kes.db \
         has no root key sealed by it (it has: pkcs11:kes/root)",
    );
    // The token replaced by a new one of the same label: its key is missing although kes.db
    // holds a copy sealed by it.
    for dir in hsm.token_dirs() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    hsm.init_token("kes");
    env.set_hsm(HsmKey::Yaml(pkcs11("kes", "root", "")));
    expect_refusal(
        &env,
        "PKCS#11 token 'kes' has no AES key labeled 'root' (HSM 'pkcs11:kes/root'), but kes.db \
         holds the root key sealed by it",
    );
    assert_eq!(
        std::fs::read(env.db_path()).unwrap(),
        before,
        "refusals change nothing"
    );
}

#[test]
fn a_token_removed_while_running_is_reported_and_the_server_keeps_serving() {
    let hsm = SoftHsm2::new("p11-removed");
    hsm.init_token("kes");
    let env = hsm.env(
        "p11-removed",
        pkcs11("kes", "root", "    health_check: 100ms\n"),
    );
    let server = env.start();
    let mut admin = server.admin();
    admin.create_key("k");
    let (plain, ct) = admin.generate("k", None);
    assert_eq!(
        status_hsm(&server),
        json!([{"name": "pkcs11:kes/root", "state": "ok"}])
    );

    // The token disappears: its directory is moved away.
    let tokens = hsm.token_dirs();
    let moved = hsm.dir.path().join("moved");
    std::fs::rename(&tokens[0], &moved).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let state = loop {
        let status = status_hsm(&server);
        let state = status[0]["state"].as_str().unwrap().to_string();
        if state != "ok" {
            break state;
        }
        assert!(
            Instant::now() < deadline,
            "the HSM still reads ok: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(state.starts_with("unavailable: "), "{state}");
    // The first failed probe names the failing call, later ones that the token is not found.
    assert!(
        state.contains("PKCS#11 token 'kes'") || state.contains("no PKCS#11 token labeled 'kes'"),
        "{state}"
    );

    // The root key is in memory: keys keep working, old and new.
    let mut admin = server.admin();
    assert_eq!(admin.decrypt("k", &ct, None), plain);
    admin.create_key("k2");
    let (plain2, ct2) = admin.generate("k2", None);
    assert_eq!(admin.decrypt("k2", &ct2, None), plain2);
    // The change is logged too (the log line follows the recorded state: poll for it).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server
        .stderr()
        .contains("HSM 'pkcs11:kes/root': unavailable")
    {
        assert!(Instant::now() < deadline, "not logged: {}", server.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
}
