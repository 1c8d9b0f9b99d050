//! Cluster membership routes: expand (add a node that was started with `--join`) and shrink
//! (remove a node; `force` for a dead one). Both are membership changes of the consensus log,
//! carried out by the leader one node at a time.
use super::body::Fields;
use super::errors::Kind;
use super::reply::Reply;
use super::{App, Ctx};
use crate::command::Command;
use crate::http::{BodyProducer, Producer, Response};
use crate::store::BackupStream;

fn endpoint(ctx: &Ctx) -> Result<(String, bool), Response> {
    let bad = || {
        Response::error(
            400,
            "invalid request body: want {\"endpoint\":\"host:port\"}",
        )
    };
    let fields = Fields::decode(&ctx.req.body).map_err(|_| bad())?;
    let endpoint = fields.string("endpoint").map_err(|_| bad())?;
    let force = fields.boolean("force").map_err(|_| bad())?;
    if endpoint.is_empty() {
        return Err(bad());
    }
    Ok((endpoint, force))
}

pub(super) fn expand(_: &App, ctx: &Ctx) -> Reply {
    match endpoint(ctx) {
        Ok((endpoint, _)) => Reply::write(
            Command::Expand { endpoint },
            Kind::Cluster,
            "failed to expand the cluster",
        ),
        Err(resp) => resp.into(),
    }
}

pub(super) fn shrink(_: &App, ctx: &Ctx) -> Reply {
    match endpoint(ctx) {
        Ok((endpoint, force)) => Reply::write(
            Command::Shrink { endpoint, force },
            Kind::Cluster,
            "failed to shrink the cluster",
        ),
        Err(resp) => resp.into(),
    }
}

/// `GET /v1/cluster/backup`: a consistent copy of this node's applied state, readable only
/// with the cluster's HSM key (see `store/backup.rs`), streamed as it is read so that no
/// backup sits in memory whole. Restore it with `kes-node restore`.
pub(super) fn backup(app: &App, _: &Ctx) -> Response {
    match app.store.backup_stream() {
        Ok(stream) => {
            let mut r = Response::ok();
            r.headers
                .push(("Content-Type", "application/octet-stream".into()));
            r.producer = Some(Producer(Box::new(Backup(stream))));
            r
        }
        Err(err) => Response::error(500, &format!("cannot back up: {err}")),
    }
}

struct Backup(BackupStream);

impl BodyProducer for Backup {
    fn next_piece(&mut self) -> Result<Option<Vec<u8>>, String> {
        self.0.next_piece().map_err(|e| format!("backup: {e}"))
    }
}
