//! A request's deadline, and the socket under TLS that keeps it: the whole exchange (connect,
//! handshake, request, answer) must be over by then, not merely each read within a timeout,
//! which a server answering a byte at a time would start anew with each byte.
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// When a request and its answer must be complete.
#[derive(Clone, Copy, Debug)]
pub(super) struct Deadline {
    at: Instant,
    /// The time it allowed, for the error message.
    budget: Duration,
}

impl Deadline {
    /// `budget` from now.
    pub(super) fn after(budget: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + budget,
            budget,
        }
    }

    /// The time left, or the error of a request out of time.
    pub(super) fn left(&self) -> io::Result<Duration> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no complete answer within {}",
                    crate::timefmt::go_duration(self.budget)
                ),
            ));
        }
        Ok(left)
    }

    /// Whether the time is up.
    pub(super) fn passed(&self) -> bool {
        Instant::now() >= self.at
    }
}

/// The socket under TLS with the limits of the exchange it carries: each read or write waits
/// at most `step` and never past `deadline`. The timeout is set before every system call, not
/// once per response read: rustls itself reads in a loop until a TLS record is complete, and a
/// server sending a byte at a time would otherwise start every wait anew.
pub(super) struct Timed {
    sock: TcpStream,
    step: Option<Duration>,
    deadline: Option<Deadline>,
}

impl Timed {
    pub(super) fn new(
        sock: TcpStream,
        step: Option<Duration>,
        deadline: Option<Deadline>,
    ) -> Timed {
        Timed {
            sock,
            step,
            deadline,
        }
    }

    /// The limits of the next reads and writes (`None`: none).
    pub(super) fn set_limits(&mut self, step: Option<Duration>, deadline: Option<Deadline>) {
        self.step = step;
        self.deadline = deadline;
    }

    /// The timeout of the next system call (`None`: wait as long as it takes).
    fn limit(&self) -> io::Result<Option<Duration>> {
        let Some(deadline) = self.deadline else {
            return Ok(self.step);
        };
        let left = deadline.left()?;
        Ok(Some(self.step.map_or(left, |step| step.min(left))))
    }

    /// A timed-out call past the deadline says so (the OS only says "would block").
    fn explain(&self, err: io::Error) -> io::Error {
        let timeout = matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        );
        match self.deadline.map(|d| d.left()) {
            Some(Err(out_of_time)) if timeout => out_of_time,
            _ => err,
        }
    }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.set_read_timeout(self.limit()?)?;
        self.sock.read(buf).map_err(|e| self.explain(e))
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.set_write_timeout(self.limit()?)?;
        self.sock.write(buf).map_err(|e| self.explain(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}
