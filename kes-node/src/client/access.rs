//! Who may do what: policies (allow and deny rules on API paths) and the identities they are
//! assigned to. An identity is the hex SHA-256 of a client certificate's public key (see
//! [`Credentials::identity`](super::Credentials::identity)).
use super::{Client, ClientError, IdentityInfo, List, Names, Policy, PolicyInfo, Reply, SelfInfo};

impl Client {
    /// Creates a policy (`PUT /v1/policy/create/<name>`, stateful servers). Fails with
    /// [`ClientError::Exists`] ([`POLICY_EXISTS`](super::ApiError::POLICY_EXISTS)).
    pub fn create_policy(&self, name: &str, policy: &Policy) -> Result<(), ClientError> {
        self.empty(self.put("/v1/policy/create/", name, Some(policy.to_wire())))
    }

    /// The policy's metadata (`GET /v1/policy/describe/<name>`; Go: `DescribePolicy`). Fails
    /// with [`ClientError::NotFound`]
    /// ([`POLICY_NOT_FOUND`](super::ApiError::POLICY_NOT_FOUND)).
    pub fn describe_policy(&self, name: &str) -> Result<Reply<PolicyInfo>, ClientError> {
        self.json(self.get_named("/v1/policy/describe/", name))
    }

    /// The policy's rules (`GET /v1/policy/read/<name>`; Go: `GetPolicy`).
    pub fn read_policy(&self, name: &str) -> Result<Reply<Policy>, ClientError> {
        self.json(self.get_named("/v1/policy/read/", name))
    }

    /// One page of policy names starting with `prefix` (`GET /v1/policy/list/<prefix>`; Go:
    /// `ListPolicies`); a trailing `*` is ignored, `*` or empty lists all. See
    /// [`policies`](Self::policies) for all pages.
    pub fn list_policies(&self, prefix: &str) -> Result<Reply<List>, ClientError> {
        self.list_page("/v1/policy/list/", prefix)
    }

    /// All policy names starting with `prefix`, page after page.
    pub fn policies(&self, prefix: &str) -> Names<'_> {
        Names::new(self, "/v1/policy/list/", prefix)
    }

    /// Deletes the policy (`DELETE /v1/policy/delete/<name>`).
    pub fn delete_policy(&self, name: &str) -> Result<(), ClientError> {
        self.empty(self.delete("/v1/policy/delete/", name))
    }

    /// Assigns `policy` to `identity` (`POST /v1/policy/assign/<policy>`, the route of KES
    /// v0.19 to v0.22; here it creates the identity with that policy).
    pub fn assign_policy(&self, policy: &str, identity: &str) -> Result<(), ClientError> {
        let body = serde_json::json!({ "identity": identity });
        let mut call = self.put("/v1/policy/assign/", policy, Some(body));
        call.method = "POST";
        self.empty(call)
    }

    /// Creates an identity with a policy, or an admin (`PUT /v1/identity/create/<identity>`,
    /// stateful servers). `ttl` is a Go duration (`720h`), empty for none. Fails with
    /// [`ClientError::Exists`] ([`IDENTITY_EXISTS`](super::ApiError::IDENTITY_EXISTS)).
    pub fn create_identity(
        &self,
        identity: &str,
        policy: &str,
        admin: bool,
        ttl: &str,
    ) -> Result<(), ClientError> {
        let mut body = serde_json::json!({ "policy": policy, "admin": admin });
        if !ttl.is_empty() {
            body["ttl"] = ttl.into();
        }
        self.empty(self.put("/v1/identity/create/", identity, Some(body)))
    }

    /// The identity's policy, parent and expiry (`GET /v1/identity/describe/<identity>`; Go:
    /// `DescribeIdentity`).
    pub fn describe_identity(&self, identity: &str) -> Result<Reply<IdentityInfo>, ClientError> {
        self.json(self.get_named("/v1/identity/describe/", identity))
    }

    /// Who the server thinks this client is, with its policy's rules
    /// (`GET /v1/identity/self/describe`; Go: `DescribeSelf`). Needs no policy.
    pub fn describe_self(&self) -> Result<Reply<SelfInfo>, ClientError> {
        self.json(self.get("/v1/identity/self/describe"))
    }

    /// One page of identities starting with `prefix` (`GET /v1/identity/list/<prefix>`; Go:
    /// `ListIdentities`). See [`identities`](Self::identities) for all pages.
    pub fn list_identities(&self, prefix: &str) -> Result<Reply<List>, ClientError> {
        self.list_page("/v1/identity/list/", prefix)
    }

    /// All identities starting with `prefix`, page after page.
    pub fn identities(&self, prefix: &str) -> Names<'_> {
        Names::new(self, "/v1/identity/list/", prefix)
    }

    /// Deletes the identity and the identities it created (`DELETE
    /// /v1/identity/delete/<identity>`).
    pub fn delete_identity(&self, identity: &str) -> Result<(), ClientError> {
        self.empty(self.delete("/v1/identity/delete/", identity))
    }
}
