//! The HSM's health as `/v1/status` reports it: a thread probes the configured HSM every
//! `hsm.pkcs11.health_check` and records the outcome; handlers only read the record, so a slow
//! or hung token never holds up a request. The root key is unsealed once at start and kept in
//! memory, so a token that goes away changes what the status says, not what the server serves.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::Hsm;

/// One HSM's entry in `/v1/status`: `state` is `ok` or `unavailable: <why>`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub(crate) struct HsmState {
    pub name: String,
    pub state: String,
}

/// The last probe result of each configured HSM.
#[derive(Default)]
pub(crate) struct HsmHealth {
    states: Mutex<Vec<HsmState>>,
}

impl HsmHealth {
    /// What `/v1/status` reports.
    pub(crate) fn snapshot(&self) -> Vec<HsmState> {
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records a probe result; returns whether the state changed.
    fn record(&self, name: &str, result: Result<(), String>) -> Option<String> {
        let state = match result {
            Ok(()) => "ok".to_string(),
            Err(why) => format!("unavailable: {why}"),
        };
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        match states.iter_mut().find(|s| s.name == name) {
            Some(s) if s.state == state => None,
            Some(s) => {
                s.state.clone_from(&state);
                Some(state)
            }
            None => {
                states.push(HsmState {
                    name: name.to_string(),
                    state: state.clone(),
                });
                Some(state)
            }
        }
    }
}

/// Records `hsm` as healthy now (it just unsealed the root key) and starts its probe thread,
/// which logs every change of state to standard error. The thread ends (and lets go of the
/// HSM) at its first probe after the server dropped `health`: an embedded server that stopped
/// leaves no thread behind for longer than `every`.
pub(crate) fn watch(hsm: Arc<dyn Hsm>, health: Arc<HsmHealth>, every: Duration) {
    health.record(hsm.name(), Ok(()));
    let health = Arc::downgrade(&health);
    let spawned = std::thread::Builder::new()
        .name("hsm-health".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            let Some(health) = health.upgrade() else {
                return;
            };
            if let Some(state) = health.record(hsm.name(), hsm.probe()) {
                eprintln!("kes-node: HSM '{}': {state}", hsm.name());
            }
        });
    if let Err(err) = spawned {
        eprintln!("kes-node: cannot start the HSM health check: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_changes_only() {
        let health = HsmHealth::default();
        assert_eq!(health.record("a", Ok(())), Some("ok".into()));
        assert_eq!(health.record("a", Ok(())), None);
        assert_eq!(
            health.record("a", Err("gone".into())),
            Some("unavailable: gone".into())
        );
        assert_eq!(
            health.snapshot(),
            vec![HsmState {
                name: "a".into(),
                state: "unavailable: gone".into()
            }]
        );
    }
}
