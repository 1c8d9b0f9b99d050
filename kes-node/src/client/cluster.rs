//! The cluster of stateful nodes: its members and leader, adding and removing nodes, and a
//! consistent backup of a node's database.
use super::{Call, Client, ClientError, ClusterInfo, Reply};

impl Client {
    /// The members, the leader and the answering node's view of them
    /// (`GET /v1/cluster/describe`).
    pub fn describe_cluster(&self) -> Result<Reply<ClusterInfo>, ClientError> {
        self.json(self.get("/v1/cluster/describe"))
    }

    /// A backup of the answering node's database (`GET /v1/cluster/backup`; admin only), in
    /// memory. See [`backup_cluster_to`](Self::backup_cluster_to) for large databases.
    pub fn backup_cluster(&self) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::new();
        self.backup_cluster_to(&mut out)?;
        Ok(out)
    }

    /// A backup of the answering node's database written to `out` as it arrives; returns the
    /// byte count. A write to `out` that fails ends the download with [`ClientError::Config`].
    pub fn backup_cluster_to(&self, out: &mut dyn std::io::Write) -> Result<u64, ClientError> {
        let (mut stream, endpoint) = self.open_stream("/v1/cluster/backup")?;
        let mut total = 0u64;
        while let Some(bytes) = stream
            .next_bytes()
            .map_err(|e| super::http::io_error(endpoint, e))?
        {
            out.write_all(&bytes)
                .map_err(|e| ClientError::Config(format!("cannot write the backup: {e}")))?;
            total += bytes.len() as u64;
        }
        Ok(total)
    }

    /// Adds the node at `endpoint` (`host:port`), started with `--join`, to the cluster
    /// (`PUT /v1/cluster/expand`; admin only). A node that is a member already fails with
    /// [`ClientError::Exists`].
    pub fn expand_cluster(&self, endpoint: &str) -> Result<(), ClientError> {
        let body = serde_json::json!({ "endpoint": endpoint });
        self.empty(Call {
            method: "PUT",
            path: "/v1/cluster/expand".into(),
            body: Some(body.to_string().into_bytes()),
        })
    }

    /// Removes the node at `endpoint` from the cluster (`DELETE /v1/cluster/shrink`; admin
    /// only). `force` removes a node that is down for good, although it cannot agree. A node
    /// that is not a member fails with [`ClientError::NotFound`].
    pub fn shrink_cluster(&self, endpoint: &str, force: bool) -> Result<(), ClientError> {
        let body = serde_json::json!({ "endpoint": endpoint, "force": force });
        self.empty(Call {
            method: "DELETE",
            path: "/v1/cluster/shrink".into(),
            body: Some(body.to_string().into_bytes()),
        })
    }
}
