//! What a handler gives back: a response now, or a state change whose outcome decides the
//! response. Writes are not applied by handlers: the event loop hands them to the cluster
//! (replication, then the store), and answers the client once the change committed.
use super::errors::{store_error, Kind};
use crate::command::Command;
use crate::http::Response;
use crate::store::StoreError;

/// A handler's answer.
pub enum Reply {
    Now(Response),
    Write(Write),
    /// A read of these names must wait until no write to them is pending on this node; the
    /// event loop asks the cluster and handles the request again once it may be answered.
    Gate(Vec<String>),
}

/// A state change and how to answer the client once its outcome is known.
pub struct Write {
    pub cmd: Command,
    kind: Kind,
    io_message: &'static str,
}

impl Reply {
    /// Propose `cmd`; answer `200` on success, else the store error as a `kind` error.
    pub fn write(cmd: Command, kind: Kind, io_message: &'static str) -> Reply {
        Reply::Write(Write {
            cmd,
            kind,
            io_message,
        })
    }
}

impl Write {
    /// The response for the command's outcome.
    pub fn respond(&self, outcome: Result<(), StoreError>) -> Response {
        match outcome {
            Ok(()) => Response::ok(),
            Err(err) => store_error(self.kind, err, self.io_message),
        }
    }
}

impl From<Response> for Reply {
    fn from(r: Response) -> Reply {
        Reply::Now(r)
    }
}
