//! The cluster as `GET /v1/cluster/describe` shows it: the backend that runs the cluster
//! publishes it here after each event-loop round, the handler reads it.
use std::collections::BTreeMap;

use kes_core::consensus::NodeId;

/// The body of `GET /v1/cluster/describe`: upstream's fields and ours.
#[derive(serde::Serialize, Clone, Debug, Default)]
pub(crate) struct Describe {
    pub nodes: BTreeMap<String, String>,
    pub leader_id: u64,
    pub node_id: NodeId,
    pub term: u64,
    pub commit_index: u64,
    pub role: String,
    /// Each other member's peer link: `connected`, `dialing`, `unreachable` or `refused`, with
    /// the error of the last failed attempt.
    pub links: BTreeMap<String, LinkView>,
    /// A membership change appended but not committed yet, or an expand being prepared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_change: Option<String>,
    /// The link epoch this view was made at (not shown).
    #[serde(skip)]
    pub epoch: u64,
}

/// One peer link in [`Describe`].
#[derive(serde::Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LinkView {
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
