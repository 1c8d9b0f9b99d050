//! What a handler gives back: a response now, or a state change whose outcome decides the
//! response, or something to wait for. Writes are not applied by handlers: the event loop hands
//! them to its backend (the cluster: replication, then the store; the edge server: the central
//! key store) and answers the client once the change is done. A read may wait for the cluster's
//! gate, or for the edge server's key store ([`Fetch`]); the event loop then handles the request
//! again with what it waited for ([`Resume`]).
use super::errors::{store_error, Kind};
use crate::command::Command;
use crate::http::Response;
use crate::item::ItemName;
use crate::records::KeyRecord;
use crate::store::StoreError;

/// A handler's answer.
pub(crate) enum Reply {
    Now(Response),
    Write(Write),
    /// A read of these names must wait until no write to them is pending on this node; the
    /// event loop asks the cluster and handles the request again once it may be answered.
    Gate(Vec<ItemName>),
    /// The edge server needs this from its key store first (the cache did not have it).
    Fetch(Fetch),
}

/// What a request waits for before it can be answered.
#[derive(Debug)]
pub(crate) enum Wait {
    /// The cluster's read gate for these names.
    Gate(Vec<ItemName>),
    /// A key store answer (edge server).
    Fetch(Fetch),
}

/// What an edge server asks its key store for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fetch {
    /// One key, by name.
    Key(String),
    /// The names of the keys starting with this prefix.
    List(String),
}

/// The key store's answer to a [`Fetch`].
#[derive(Clone)]
pub(crate) enum Fetched {
    Key(Result<KeyRecord, StoreError>),
    List(Result<Vec<String>, StoreError>),
}

/// How a waiting request goes on.
pub(crate) enum Resume {
    /// The gate opened: handle it now.
    Granted,
    /// It may not be served: answer `503` with the reason.
    Refused(String),
    /// Handle it with the key store's answer.
    Fetched(Fetched),
}

/// A state change and how to answer the client once its outcome is known.
pub(crate) struct Write {
    pub cmd: Command,
    kind: Kind,
    io_message: &'static str,
}

impl Reply {
    /// Propose `cmd`; answer `200` on success, else the store error as a `kind` error.
    pub(crate) fn write(cmd: Command, kind: Kind, io_message: &'static str) -> Reply {
        Reply::Write(Write {
            cmd,
            kind,
            io_message,
        })
    }
}

impl Write {
    /// The response for the command's outcome.
    pub(crate) fn respond(&self, outcome: Result<(), StoreError>) -> Response {
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
