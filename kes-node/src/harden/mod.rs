//! Start-up hardening of the long-running servers (`kes-node server`, `server --dev`, `edge`):
//! keep the secrets they hold (the HSM key, the root key, imported keys, API key seeds) out of
//! places other than the process's own memory. [`start`] runs before the server opens
//! anything, in this order:
//!
//! 1. **Secrets leave the environment** ([`handover`]): `KES_HSM_KEY` (and the PKCS#11 PIN
//!    variable) would stay readable in `/proc/PID/environ`; the server re-`exec`s itself once
//!    without them, their values handed over on a pipe.
//! 2. **No core dumps.** A core file of a running server holds every key it has touched.
//!    `RLIMIT_CORE` 0 (soft and hard) stops the kernel writing one; not dumpable
//!    (`PR_SET_DUMPABLE` 0) also stops core handlers that ignore the limit (`|` patterns),
//!    and keeps other processes of the same user from ptrace-attaching or reading
//!    `/proc/PID/mem`.
//! 3. **Memory locked** (`mlockall`), so key material is never written to swap. With
//!    `MCL_ONFAULT` (Linux 4.4) only pages the process touches are locked, as it touches them:
//!    plain `MCL_CURRENT | MCL_FUTURE` would fault in and pin every reserved thread stack and
//!    allocator arena (idle dev server: 9.1 MiB resident with `MCL_ONFAULT`, 13.2 MiB
//!    without, 8.7 MiB unlocked). Where the process may not lock without limit (no
//!    `CAP_IPC_LOCK` and a finite `RLIMIT_MEMLOCK`) it does not try: with `MCL_FUTURE` every
//!    later allocation past the limit would fail. As upstream, the server then logs one line
//!    and goes on.
//!
//! Short-lived commands (`hsm`, `restore`, the client) are not hardened.
pub(crate) mod handover;

use rustix::mm::{mlockall, MlockAllFlags};
use rustix::process::{getrlimit, setrlimit, DumpableBehavior, Resource, Rlimit};
use zeroize::Zeroizing;

pub(crate) use handover::{receive, var};

/// The variable a SoftHSM key may be given in.
pub(crate) const HSM_KEY_VAR: &str = "KES_HSM_KEY";

/// Hardens the process (see the module docs); `secret_vars` are more variables to take out of
/// the environment besides `KES_HSM_KEY`. Does not return if it re-`exec`s itself; an error
/// means handed-over secrets could not be read (the server must not start).
pub(crate) fn start(secret_vars: &[&str]) -> Result<(), String> {
    receive()?;
    let mut names = vec![HSM_KEY_VAR];
    names.extend_from_slice(secret_vars);
    handover::hand_over(&names);
    disable_core_dumps();
    lock_memory();
    Ok(())
}

/// The `KES_HSM_KEY` value: the one handed over at start-up, else the variable (for commands
/// that do not harden).
pub(crate) fn hsm_key() -> Option<Zeroizing<String>> {
    var(HSM_KEY_VAR).ok().map(Zeroizing::new)
}

fn disable_core_dumps() {
    let none = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    if let Err(e) = setrlimit(Resource::Core, none) {
        eprintln!("kes-node: warning: cannot turn core dumps off (RLIMIT_CORE): {e}");
    }
    if let Err(e) = rustix::process::set_dumpable_behavior(DumpableBehavior::NotDumpable) {
        eprintln!("kes-node: warning: cannot mark the process not dumpable: {e}");
    }
}

fn lock_memory() {
    let unlimited = getrlimit(Resource::Memlock).current.is_none();
    let privileged = rustix::thread::capabilities(None).is_ok_and(|c| {
        c.effective
            .contains(rustix::thread::CapabilitySet::IPC_LOCK)
    });
    if !unlimited && !privileged {
        let limit = getrlimit(Resource::Memlock).current.unwrap_or(0);
        eprintln!(
            "kes-node: warning: memory is not locked (keys may be swapped out): RLIMIT_MEMLOCK \
             is {limit} bytes and the process lacks CAP_IPC_LOCK; grant CAP_IPC_LOCK or set \
             the limit to unlimited"
        );
        return;
    }
    let flags = MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT;
    if let Err(e) = mlockall(flags) {
        eprintln!("kes-node: warning: memory is not locked (keys may be swapped out): {e}");
    }
}
