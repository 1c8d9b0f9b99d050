//! Secrets and enclaves, the stateful server's additions to upstream's API: secrets are values
//! the server stores (encrypted) and hands back; an enclave is a namespace of its own keys,
//! secrets, policies and identities (select one with [`Client::with_enclave`]).
use super::{b64, Client, ClientError, EnclaveInfo, List, Names, Reply, Secret, SecretInfo};

impl Client {
    /// Stores a secret value of at most 1 MB (`PUT /v1/secret/create/<name>`). Fails with
    /// [`ClientError::Exists`] ([`SECRET_EXISTS`](super::ApiError::SECRET_EXISTS), which
    /// upstream answers with status 404).
    pub fn create_secret(&self, name: &str, secret: &[u8]) -> Result<(), ClientError> {
        let body = serde_json::json!({ "secret": b64(secret) });
        self.empty(self.put("/v1/secret/create/", name, Some(body)))
    }

    /// The secret's metadata, not its value (`GET /v1/secret/describe/<name>`).
    pub fn describe_secret(&self, name: &str) -> Result<Reply<SecretInfo>, ClientError> {
        self.json(self.get_named("/v1/secret/describe/", name))
    }

    /// The secret's value and metadata (`GET /v1/secret/read/<name>`). Fails with
    /// [`ClientError::NotFound`] ([`SECRET_NOT_FOUND`](super::ApiError::SECRET_NOT_FOUND)).
    pub fn read_secret(&self, name: &str) -> Result<Reply<Secret>, ClientError> {
        self.json(self.get_named("/v1/secret/read/", name))
    }

    /// One page of secret names starting with `prefix` (`GET /v1/secret/list/<prefix>`).
    pub fn list_secrets(&self, prefix: &str) -> Result<Reply<List>, ClientError> {
        self.list_page("/v1/secret/list/", prefix)
    }

    /// All secret names starting with `prefix`, page after page.
    pub fn secrets(&self, prefix: &str) -> Names<'_> {
        Names::new(self, "/v1/secret/list/", prefix)
    }

    /// Deletes the secret (`DELETE /v1/secret/delete/<name>`).
    pub fn delete_secret(&self, name: &str) -> Result<(), ClientError> {
        self.empty(self.delete("/v1/secret/delete/", name))
    }

    /// Creates an enclave (`PUT /v1/enclave/create/<name>`; admin only). Fails with
    /// [`ClientError::Exists`] ([`ENCLAVE_EXISTS`](super::ApiError::ENCLAVE_EXISTS)).
    pub fn create_enclave(&self, name: &str) -> Result<(), ClientError> {
        self.empty(self.put("/v1/enclave/create/", name, None))
    }

    /// The enclave's metadata (`GET /v1/enclave/describe/<name>`).
    pub fn describe_enclave(&self, name: &str) -> Result<Reply<EnclaveInfo>, ClientError> {
        self.json(self.get_named("/v1/enclave/describe/", name))
    }

    /// One page of enclave names starting with `prefix` (`GET /v1/enclave/list/<prefix>`).
    pub fn list_enclaves(&self, prefix: &str) -> Result<Reply<List>, ClientError> {
        self.list_page("/v1/enclave/list/", prefix)
    }

    /// All enclave names starting with `prefix`, page after page.
    pub fn enclaves(&self, prefix: &str) -> Names<'_> {
        Names::new(self, "/v1/enclave/list/", prefix)
    }

    /// Deletes the enclave and everything in it (`DELETE /v1/enclave/delete/<name>`; admin
    /// only).
    pub fn delete_enclave(&self, name: &str) -> Result<(), ClientError> {
        self.empty(self.delete("/v1/enclave/delete/", name))
    }
}
