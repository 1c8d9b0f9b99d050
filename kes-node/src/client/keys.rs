//! Keys: create, import, describe, list, delete, and the cryptography done with them on the
//! server (data keys, encrypt, decrypt, HMAC). The key itself never leaves the server.
use super::types::{Ciphertext, Mac, Plaintext};
use super::{b64, with_context, Client, ClientError, DataKey, KeyInfo, List, Names, Reply};

impl Client {
    /// Creates a key with a random secret (`PUT /v1/key/create/<name>`; Go: `CreateKey`).
    ///
    /// Fails with [`ClientError::Exists`] ([`KEY_EXISTS`](super::ApiError::KEY_EXISTS)) if a
    /// key of that name exists.
    pub fn create_key(&self, name: &str) -> Result<(), ClientError> {
        self.empty(self.put("/v1/key/create/", name, None))
    }

    /// Imports a 32-byte key for `cipher` (`AES256` or `ChaCha20`) (`PUT /v1/key/import/<name>`;
    /// Go: `ImportKey`). Fails with [`ClientError::Exists`] if a key of that name exists.
    pub fn import_key(&self, name: &str, key: &[u8], cipher: &str) -> Result<(), ClientError> {
        let body = serde_json::json!({ "key": b64(key), "cipher": cipher });
        self.empty(self.put("/v1/key/import/", name, Some(body)))
    }

    /// The key's metadata (`GET /v1/key/describe/<name>`; Go: `DescribeKey`). Fails with
    /// [`ClientError::NotFound`] ([`KEY_NOT_FOUND`](super::ApiError::KEY_NOT_FOUND)).
    pub fn describe_key(&self, name: &str) -> Result<Reply<KeyInfo>, ClientError> {
        self.json(self.get_named("/v1/key/describe/", name))
    }

    /// One page of key names starting with `prefix` (`GET /v1/key/list/<prefix>`; Go:
    /// `ListKeys`). `*` or empty lists all keys; otherwise the prefix is literal, as upstream
    /// has it for keys (`app*` matches no `app-1`). A prefix may not end in `-`. See
    /// [`keys`](Self::keys) for all pages.
    pub fn list_keys(&self, prefix: &str) -> Result<Reply<List>, ClientError> {
        self.list_page("/v1/key/list/", prefix)
    }

    /// All key names starting with `prefix`, page after page (Go: `ListIter` over `ListKeys`).
    pub fn keys(&self, prefix: &str) -> Names<'_> {
        Names::new(self, "/v1/key/list/", prefix)
    }

    /// Deletes the key (`DELETE /v1/key/delete/<name>`; Go: `DeleteKey`). Whatever was
    /// encrypted with it cannot be decrypted any more.
    pub fn delete_key(&self, name: &str) -> Result<(), ClientError> {
        self.empty(self.delete("/v1/key/delete/", name))
    }

    /// A new data encryption key, in plain and sealed with the key `name`
    /// (`PUT /v1/key/generate/<name>`; Go: `GenerateKey`). `context` is bound to the
    /// ciphertext as associated data (empty for none): decrypting needs the same context.
    ///
    /// Use the plaintext to encrypt data locally, store the ciphertext beside the data, and
    /// forget the plaintext; [`decrypt`](Self::decrypt) brings it back.
    pub fn generate_key(&self, name: &str, context: &[u8]) -> Result<Reply<DataKey>, ClientError> {
        self.json(self.put("/v1/key/generate/", name, Some(with_context(context))))
    }

    /// Encrypts a small `plaintext` (at most about 1 MB) with the key `name`
    /// (`PUT /v1/key/encrypt/<name>`; Go: `Encrypt`); `context` as for
    /// [`generate_key`](Self::generate_key). Returns the ciphertext.
    pub fn encrypt(
        &self,
        name: &str,
        plaintext: &[u8],
        context: &[u8],
    ) -> Result<Reply<Vec<u8>>, ClientError> {
        let mut body = with_context(context);
        body["plaintext"] = b64(plaintext).into();
        let reply: Reply<Ciphertext> = self.json(self.put("/v1/key/encrypt/", name, Some(body)))?;
        Ok(reply.map(|c| c.ciphertext))
    }

    /// Decrypts a ciphertext of [`encrypt`](Self::encrypt) or
    /// [`generate_key`](Self::generate_key) (`PUT /v1/key/decrypt/<name>`; Go: `Decrypt`).
    ///
    /// A wrong key, a wrong context or a modified ciphertext fails with
    /// [`ClientError::BadRequest`] ([`DECRYPT`](super::ApiError::DECRYPT)).
    pub fn decrypt(
        &self,
        name: &str,
        ciphertext: &[u8],
        context: &[u8],
    ) -> Result<Reply<Vec<u8>>, ClientError> {
        let mut body = with_context(context);
        body["ciphertext"] = b64(ciphertext).into();
        let reply: Reply<Plaintext> = self.json(self.put("/v1/key/decrypt/", name, Some(body)))?;
        Ok(reply.map(|p| p.plaintext))
    }

    /// HMAC-SHA256 of `message` under the key's HMAC key (`PUT /v1/key/hmac/<name>`; Go:
    /// `HMAC`): the same key and message always give the same 32 bytes.
    pub fn hmac(&self, name: &str, message: &[u8]) -> Result<Reply<Vec<u8>>, ClientError> {
        let body = serde_json::json!({ "message": b64(message) });
        let reply: Reply<Mac> = self.json(self.put("/v1/key/hmac/", name, Some(body)))?;
        Ok(reply.map(|m| m.hmac))
    }
}
