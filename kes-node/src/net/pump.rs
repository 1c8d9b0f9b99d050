//! The TLS pump shared by both kinds of connection the server holds: HTTP clients
//! (`net/connection.rs`) and peer links (`cluster/peer.rs`). It moves bytes between a
//! non-blocking socket and a TLS session: ciphertext in, plaintext into [`Pump::input`];
//! queued plaintext out as ciphertext. What the plaintext means is the caller's business.
//!
//! Reading stops at a bound the caller gives: a connection not yet authenticated gets
//! [`PRE_AUTH_INPUT`] (a peer's Hello and its length; see `cluster/peer.rs`), in this one place.
use std::io::{self, Read};

use mio::net::TcpStream;

use super::session::Session;

/// The most plaintext a connection may send before it is authenticated at the protocol level:
/// a peer's length-prefixed Hello frame (at most 256 bytes: the frame is ~45) and its 4-byte
/// length. Both the event loop (before it hands a peer connection on) and the peer link
/// (until the Hello verified) hold a stranger to it.
pub(crate) const PRE_AUTH_INPUT: usize = 4 + 256;

/// A TLS session over a socket, and the plaintext it received that was not consumed yet.
pub(crate) struct Pump {
    pub tls: Session,
    /// Received plaintext, in order; the caller takes what it understood off the front.
    pub input: Vec<u8>,
    /// A read that comes back short means the socket is drained (see [`Pump::read`]). Only
    /// a caller that hears of the peer's FIN from the poller may set it (and clears it once
    /// the poller reported one: data and FIN may sit in the socket together, and the end
    /// must still be read); otherwise reads go on to `WouldBlock`.
    pub short_read_drains: bool,
    /// The peer ended the stream (TCP or TLS close).
    eof: bool,
}

/// What one [`Pump::read`] did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Reading {
    /// Some bytes arrived from the peer.
    pub heard: bool,
    /// It stopped because the input reached the bound.
    pub capped: bool,
}

/// The socket as the TLS session reads it, noting whether the last read came back short
/// (see [`Pump::read`]).
struct Noting<'a> {
    socket: &'a mut TcpStream,
    short: bool,
}

impl Read for Noting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.socket.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

/// Why a connection broke.
#[derive(Debug)]
pub(crate) enum Broken {
    /// The TLS session failed (rustls may have queued an alert: flush it before closing).
    Tls(rustls::Error),
    /// The socket failed.
    Io(io::Error),
}

impl Pump {
    pub(crate) fn new(tls: Session, input: Vec<u8>) -> Pump {
        Pump {
            tls,
            input,
            short_read_drains: false,
            eof: false,
        }
    }

    /// The pump of a caller that hears of FINs from the poller (see
    /// [`Pump::short_read_drains`]).
    pub(crate) fn with_short_reads(mut self) -> Pump {
        self.short_read_drains = true;
        self
    }

    /// True once the peer ended the stream.
    pub(crate) fn eof(&self) -> bool {
        self.eof
    }

    /// Reads what the socket has, until it is drained, the stream ends, the input holds
    /// `cap` bytes, or `hold` (asked before each read, with the input so far) says stop.
    ///
    /// Drained (with [`Pump::short_read_drains`]): a read that returned less than it asked
    /// for emptied the socket's receive queue, so the loop stops there instead of asking once
    /// more for a `WouldBlock` (one syscall per request saved, issue 16). That is safe with
    /// edge-triggered readiness (mio's): bytes that arrive after that read raise a new edge,
    /// and bytes that arrived during it were either in it or raise one too; only a FIN
    /// queued behind the data would go unread, which is why the caller must know of it.
    pub(crate) fn read(
        &mut self,
        socket: &mut TcpStream,
        cap: usize,
        mut hold: impl FnMut(&Session, &[u8]) -> bool,
    ) -> Result<Reading, Broken> {
        let mut reading = Reading::default();
        while !self.eof {
            if self.input.len() >= cap {
                reading.capped = true;
                break;
            }
            if hold(&self.tls, &self.input) {
                break;
            }
            let mut noting = Noting {
                socket: &mut *socket,
                short: false,
            };
            match self.tls.read_tls(&mut noting) {
                Ok(0) => self.eof = true,
                Ok(_) => {
                    reading.heard = true;
                    self.tls.process_new_packets().map_err(Broken::Tls)?;
                    // Straight into `input` (no bounce buffer to zero and copy): `Ok` once the
                    // peer closed the session, `WouldBlock` when there is no more for now;
                    // what was read before either is kept. rustls holds at most 16 KiB of
                    // received plaintext, so one call adds at most that.
                    if self.tls.read_plaintext(&mut self.input).is_ok() {
                        self.eof = true;
                    }
                    if noting.short && self.short_read_drains {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Broken::Io(e)),
            }
        }
        Ok(reading)
    }

    /// Writes what the session has queued while the socket takes it: `Ok(true)` once all of
    /// it is out, `Ok(false)` if the socket is full (its writable event comes later).
    pub(crate) fn flush(&mut self, socket: &mut TcpStream) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(socket) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}
