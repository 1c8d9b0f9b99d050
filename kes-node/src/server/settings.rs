//! What a server takes from its config into the [`App`], at start and on a reload: logging,
//! `api.<path>` options and the static policies of `policy:`. Shared by the stateful server
//! (`node.rs`), the edge server (`edge.rs`) and SIGHUP (`reload.rs`).
use crate::api::App;
use crate::config::Config;

/// What the stateful and the edge server take from the config alike: logging, `api.<path>`
/// options and the static policies.
pub(super) fn configure(app: &mut App, config: &Config) -> Result<(), String> {
    set_logs(app, config);
    app.skip_auth = config
        .api
        .iter()
        .filter(|(_, r)| r.skip_auth)
        .map(|(p, _)| p.trim_end_matches('/').to_owned())
        .collect();
    seed_policies(app, config)
}

/// `log.audit` and `log.error` (at start and on a reload).
pub(super) fn set_logs(app: &App, config: &Config) {
    use std::sync::atomic::Ordering;
    app.logs
        .audit_to_stdout
        .store(config.log_audit, Ordering::Relaxed);
    app.logs
        .error_to_stderr
        .store(config.log_error, Ordering::Relaxed);
}

/// Writes the config's `policy:` section into the default enclave: each policy, and each of
/// its identities assigned to it. Entries that already match are left alone.
pub(super) fn seed_policies(app: &App, config: &Config) -> Result<(), String> {
    use crate::command::Command;
    use crate::records::{IdentityRecord, PolicyRecord};
    use crate::store::DEFAULT_ENCLAVE;
    let now = crate::timefmt::now();
    for (name, p) in &config.policies {
        let mut allow = p.allow.clone();
        let mut deny = p.deny.clone();
        allow.sort();
        allow.dedup();
        deny.sort();
        deny.dedup();
        let same = app
            .store
            .policy(DEFAULT_ENCLAVE, name)
            .is_ok_and(|old| old.allow == allow && old.deny == deny);
        if !same {
            let policy = PolicyRecord {
                allow,
                deny,
                created_at: now,
                created_by: config.admin_identity.clone(),
            };
            let cmd = Command::CreatePolicy {
                enclave: DEFAULT_ENCLAVE.into(),
                name: name.clone(),
                policy,
                replace: true,
            };
            app.write_local(cmd)
                .map_err(|e| format!("config: policy.{name}: cannot store it: {e}"))?;
        }
        for id in &p.identities {
            if app
                .store
                .identity(DEFAULT_ENCLAVE, id)
                .is_ok_and(|old| old.policy == *name && !old.admin)
            {
                continue;
            }
            let record = IdentityRecord {
                policy: name.clone(),
                admin: false,
                ttl: std::time::Duration::ZERO,
                expires_at: None,
                created_at: now,
                created_by: config.admin_identity.clone(),
                children: Vec::new(),
            };
            let cmd = Command::CreateIdentity {
                enclave: DEFAULT_ENCLAVE.into(),
                identity: id.clone(),
                record,
                replace: true,
            };
            app.write_local(cmd)
                .map_err(|e| format!("config: policy.{name}.identities: cannot store {id}: {e}"))?;
        }
    }
    Ok(())
}
