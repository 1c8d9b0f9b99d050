//! How a program stops the event loops it started, besides SIGINT/SIGTERM: one socket pair per
//! loop. The loop registers its end with its poll; [`Trigger::stop`] shuts the other end's
//! writing side down, so the loop's end reads end-of-file (readable) and the loop begins the
//! same graceful shutdown a signal starts. Nothing is written, so nothing can fill up, and a
//! second stop is a no-op. A socket rather than a `mio::Waker`: a poll may have one waker, and
//! the backends own theirs.
//!
//! The signals are installed by [`handle_signals`] before the server says it listens, and one
//! loop watches them and pulls the trigger for all.
use std::io;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

/// The stopping end: held by whoever may stop the server (the embedding program's handle).
#[derive(Debug)]
pub(crate) struct Trigger {
    ends: Mutex<Vec<UnixStream>>,
}

/// One event loop's end, to register with its poll.
pub(crate) type Receiver = mio::net::UnixStream;

/// A trigger for `n` event loops and each loop's receiving end.
pub(crate) fn channel(n: usize) -> io::Result<(Trigger, Vec<Receiver>)> {
    let mut ends = Vec::with_capacity(n);
    let mut receivers = Vec::with_capacity(n);
    for _ in 0..n {
        let (ours, theirs) = UnixStream::pair()?;
        theirs.set_nonblocking(true)?;
        ends.push(ours);
        receivers.push(mio::net::UnixStream::from_std(theirs));
    }
    let trigger = Trigger {
        ends: Mutex::new(ends),
    };
    Ok((trigger, receivers))
}

impl Trigger {
    /// Tells every loop to shut down gracefully; returns at once.
    pub(crate) fn stop(&self) {
        let ends = self.ends.lock().unwrap_or_else(|e| e.into_inner());
        for end in ends.iter() {
            // Fails only if the loop is gone already (its end closed): nothing to stop then.
            let _ = end.shutdown(Shutdown::Write);
        }
    }
}

/// Installs the handlers of SIGINT and SIGTERM (stop) and SIGHUP (reload): from now on these
/// signals are queued for the loop that watches them, not acted on by the system's default
/// (which would end the process at once).
pub(crate) fn handle_signals() -> io::Result<Signals> {
    Signals::new([SIGINT, SIGTERM, SIGHUP])
}
