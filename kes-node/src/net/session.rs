//! A server-side TLS session whose configuration is chosen from the ClientHello (rustls's
//! `Acceptor`): until the hello is complete the connection only collects it; then
//! [`TlsConfigs::choose`] picks the peer configuration for a client offering `kes-peer/1`
//! and the HTTP one for everyone else. A peer link this node dials is a session too, ready
//! from the start. The methods mirror rustls's, so the TLS pump (`net/pump.rs`) does not care
//! which phase or side it is on.
use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::server::{AcceptedAlert, Acceptor};
use rustls::Connection;

use super::tls::TlsConfigs;

pub(crate) enum Session {
    /// Collecting the ClientHello.
    Accepting {
        acceptor: Box<Acceptor>,
        configs: Arc<TlsConfigs>,
    },
    /// Handshaking or established (server side, or a peer link this node dialed).
    Ready(Box<Connection>),
    /// The hello was refused: the alert to send (if not sent yet), then close.
    Refused(Option<AcceptedAlert>),
}

impl Session {
    pub(crate) fn new(configs: Arc<TlsConfigs>) -> Session {
        Session::Accepting {
            acceptor: Box::default(),
            configs,
        }
    }

    /// A session set up already (a peer link this node dials); its plaintext buffer is
    /// unbounded, like an accepted one's.
    pub(crate) fn ready(mut conn: Connection) -> Session {
        conn.set_buffer_limit(None);
        Session::Ready(Box::new(conn))
    }

    pub(crate) fn read_tls(&mut self, rd: &mut dyn Read) -> io::Result<usize> {
        match self {
            Session::Accepting { acceptor, .. } => acceptor.read_tls(rd),
            Session::Ready(c) => c.read_tls(rd),
            Session::Refused(_) => Err(io::Error::other("TLS hello refused")),
        }
    }

    /// Processes what was read; an error means the session failed (an alert may be queued).
    pub(crate) fn process_new_packets(&mut self) -> Result<(), rustls::Error> {
        let Session::Accepting { acceptor, configs } = self else {
            return match self {
                Session::Ready(c) => c.process_new_packets().map(|_| ()),
                _ => Err(rustls::Error::General("TLS hello refused".into())),
            };
        };
        let accepted = match acceptor.accept() {
            Ok(None) => return Ok(()),
            Ok(Some(accepted)) => accepted,
            Err((err, alert)) => {
                *self = Session::Refused(Some(alert));
                return Err(err);
            }
        };
        let hello = accepted.client_hello();
        let config = configs.choose(hello.alpn().into_iter().flatten()).clone();
        match accepted.into_connection(config) {
            Ok(mut conn) => {
                // Responses can exceed rustls's default 64 KiB send buffer (decrypting 1 MB);
                // the connection bounds its output itself (one response at a time, budgets).
                conn.set_buffer_limit(None);
                let res = conn.process_new_packets().map(|_| ());
                *self = Session::Ready(Box::new(Connection::Server(conn)));
                res
            }
            Err((err, alert)) => {
                *self = Session::Refused(Some(alert));
                Err(err)
            }
        }
    }

    pub(crate) fn wants_write(&self) -> bool {
        match self {
            Session::Accepting { .. } => false,
            Session::Ready(c) => c.wants_write(),
            Session::Refused(alert) => alert.is_some(),
        }
    }

    pub(crate) fn write_tls(&mut self, wr: &mut dyn Write) -> io::Result<usize> {
        match self {
            Session::Accepting { .. } => Ok(0),
            Session::Ready(c) => c.write_tls(wr),
            Session::Refused(alert) => {
                if let Some(mut a) = alert.take() {
                    a.write_all(wr)?;
                }
                Ok(0)
            }
        }
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        match self {
            Session::Ready(c) => c.is_handshaking(),
            _ => true,
        }
    }

    pub(crate) fn alpn_protocol(&self) -> Option<&[u8]> {
        match self {
            Session::Ready(c) => c.alpn_protocol(),
            _ => None,
        }
    }

    pub(crate) fn peer_certificates(
        &self,
    ) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        match self {
            Session::Ready(c) => c.peer_certificates(),
            _ => None,
        }
    }

    pub(crate) fn send_close_notify(&mut self) {
        if let Session::Ready(c) = self {
            c.send_close_notify();
        }
    }

    /// Appends the plaintext received so far to `buf`: like `Reader::read_to_end`, `Ok` once
    /// the peer closed the session, `WouldBlock` when there is no more for now.
    pub(crate) fn read_plaintext(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Session::Ready(c) => c.reader().read_to_end(buf),
            _ => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Queues plaintext to send (nothing before the handshake chose a configuration; false
    /// then, or if the session is closed for writing).
    pub(crate) fn write_plaintext(&mut self, bytes: &[u8]) -> bool {
        match self {
            // The buffer limit is off: only a closed session refuses.
            Session::Ready(c) => c.writer().write_all(bytes).is_ok(),
            _ => false,
        }
    }

    /// Keying material exported from the established session (RFC 5705), for a peer link's
    /// Hello; `None` before the handshake finished.
    pub(crate) fn export_keying_material<'b>(
        &self,
        out: &'b mut [u8],
        label: &[u8],
    ) -> Option<&'b [u8]> {
        match self {
            Session::Ready(c) => match &**c {
                Connection::Client(c) => c.export_keying_material(out, label, None).ok(),
                Connection::Server(s) => s.export_keying_material(out, label, None).ok(),
            }
            .map(|b| &b[..]),
            _ => None,
        }
    }
}
