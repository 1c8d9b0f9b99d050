//! SIGHUP: reloads what can change without a restart, from the same config file.
//!
//! The TLS certificate and key, `tls.ca` and `tls.auth` (new connections get them; open ones
//! keep theirs), `log.audit`/`log.error`, `store.min_free`, and the static policies of
//! `policy:` (stored as at start). Everything is read and validated before anything is applied, so a config that does
//! not load or a certificate that does not parse changes nothing: the server goes on with the
//! settings it has and says why on standard error. Other fields (address, HSM, admin, cluster,
//! limits, key store) need a restart; a change there is named in the log line.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::api::App;
use crate::config::Config;
use crate::net::tls::{self, Shared};

/// What a SIGHUP reloads, and from where.
pub(super) struct Reloader {
    /// The config file; `None` for a dev server (nothing to reload).
    path: Option<PathBuf>,
    tls: Arc<Shared>,
    /// A stateful node (it also speaks the peer protocol).
    peers: bool,
    /// The config as last applied, to name what changed.
    current: std::sync::Mutex<Config>,
}

impl Reloader {
    pub(super) fn new(
        path: Option<&Path>,
        tls: Arc<Shared>,
        peers: bool,
        config: &Config,
    ) -> Reloader {
        Reloader {
            path: path.map(Path::to_path_buf),
            tls,
            peers,
            current: std::sync::Mutex::new(config.clone()),
        }
    }

    /// Reloads; logs one line with what was reloaded, or why nothing was.
    pub(super) fn reload(&self, app: &App) {
        let Some(path) = &self.path else {
            eprintln!("kes-node: SIGHUP: a dev server has no config file to reload");
            return;
        };
        match self.try_reload(path, app) {
            Ok(what) => eprintln!("kes-node: SIGHUP: reloaded {}: {what}", path.display()),
            Err(why) => eprintln!(
                "kes-node: SIGHUP: cannot reload {}: {why}: the server goes on with its current \
                 settings",
                path.display()
            ),
        }
    }

    fn try_reload(&self, path: &Path, app: &App) -> Result<String, String> {
        let new = crate::config::load(path)?;
        let configs = tls::configs(&new, self.peers)?;
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        self.tls.replace(configs);
        super::settings::set_logs(app, &new);
        app.store.set_min_free(
            new.min_free
                .unwrap_or(crate::store::space::DEFAULT_MIN_FREE),
        );
        let policies = super::settings::seed_policies(app, &new);
        let mut what = format!(
            "TLS certificate {} and key {}",
            new.tls.cert.display(),
            new.tls.key.display()
        );
        if let Some(ca) = &new.tls.ca {
            what.push_str(&format!(", tls.ca {}", ca.display()));
        }
        what.push_str(&format!(
            ", tls.auth {}, log.audit {}, log.error {}, store.min_free",
            on(new.tls.auth),
            on(new.log_audit),
            on(new.log_error),
        ));
        match policies {
            Ok(()) => what.push_str(&format!(", {} static policies", new.policies.len())),
            Err(err) => what.push_str(&format!("; but not the static policies: {err}")),
        }
        let restart = needs_restart(&current, &new);
        if !restart.is_empty() {
            what.push_str(&format!(
                "; changed but only applied by a restart: {}",
                restart.join(", ")
            ));
        }
        *current = new;
        Ok(what)
    }
}

fn on(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// The fields that changed although a reload does not apply them.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.address != new.address {
        changed.push("address");
    }
    if old.admin_identity != new.admin_identity {
        changed.push("admin.identity");
    }
    if old.hsm != new.hsm {
        changed.push("hsm");
    }
    if old.read_lease != new.read_lease || old.clock_drift != new.clock_drift {
        changed.push("cluster");
    }
    changed
}
