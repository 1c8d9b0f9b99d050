//! Keeps a damaged `kes.db` from taking the server down: redb asserts on the structure of
//! the pages it reads, so a damaged file can make it panic. Every store operation that reads
//! the file runs inside [`guarded`], which turns such a panic into
//! [`StoreError::Corrupted`] naming the file and the problem: the request gets a `500` with
//! that message, and at start the server refuses to open the file with it (no backtrace).
//!
//! Panics inside a guarded operation are not printed by the process's panic hook (the error
//! carries their message); any other panic is printed as before.
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use super::{Corruption, StoreError};

thread_local! {
    /// True while this thread runs a guarded operation.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Installs the panic hook that keeps guarded panics quiet (once per process).
fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `f`; a panic inside it becomes `Corrupted("<what>: kes.db is damaged: ...")`.
pub(crate) fn guarded<T>(
    what: impl FnOnce() -> String,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    match catch(f) {
        Ok(result) => result,
        Err(panic) => Err(StoreError::Corrupted(Corruption::Panicked {
            during: what(),
            panic,
        })),
    }
}

/// Runs `f`, quietly catching a panic: `Err` with its message.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    let outer = GUARDED.with(|g| g.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(outer));
    result.map_err(|payload| panic_message(&*payload))
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_corrupted_error() {
        let err = guarded::<()>(
            || "reading key 'k'".into(),
            || panic!("assertion failed: page"),
        )
        .unwrap_err();
        match err {
            StoreError::Corrupted(what) => {
                let msg = what.to_string();
                assert!(
                    msg.starts_with("reading key 'k': kes.db is damaged"),
                    "{msg}"
                );
                assert!(msg.contains("assertion failed: page"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(guarded(String::new, || Ok(7)), Ok(7));
    }
}
