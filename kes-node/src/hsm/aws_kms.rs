//! An AWS KMS key as the [`Hsm`] (`hsm.aws-kms`, cargo feature `aws`): the root key is
//! encrypted by KMS (`TrentService.Encrypt`) and decrypted by it at start-up
//! (`TrentService.Decrypt`); the KMS key never leaves AWS.
//!
//! # Encryption context
//!
//! Every call carries an encryption context that KMS binds to the ciphertext: a blob opens
//! only with the same context, CloudTrail logs it, and key policies may require it
//! (`kms:EncryptionContext:kes:node`). It is the config's `context` pairs and `kes:node`,
//! which names the data: 32 hex digits derived from the root key
//! (`DeriveKey(root key, "kes:v1:kms:node", "")`, 16 bytes), alike for every copy of one
//! database's root key and different for every other database, and revealing nothing of it.
//!
//! # Sealed format
//!
//! ```text
//! 0x01 || node id (16 bytes) || CiphertextBlob (KMS's own format, names the KMS key)
//! ```
//!
//! The node id is stored so that the blob can be decrypted before the root key is known (and
//! from a backup, in another directory); after decryption it is derived again from the
//! plaintext and compared, so a blob whose id was swapped does not open.
//!
//! # Errors
//!
//! A blob of another KMS key (`IncorrectKeyException`) is [`HsmError::WrongKey`]. A blob that
//! does not decrypt under this key and context (`InvalidCiphertextException`: the config's
//! `context` changed, or the blob was altered), and a key that is disabled, pending deletion,
//! missing or not allowed to these credentials, are [`HsmError::Refused`] with KMS's reason;
//! no answer, throttling and server errors are [`HsmError::Device`].
//!
//! # Health
//!
//! [`KmsHsm::probe`] calls `DescribeKey` (no cryptography) and reports a key that is not
//! `Enabled`.
use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::{Hsm, HsmError};
use crate::aws::{AwsError, CredentialSource, Credentials, JsonApi};
use crate::config::{AwsKmsConfig, KMS_NODE_CONTEXT};

const TAG_V1: u8 = 1;
const NODE_ID_LEN: usize = 16;
const NODE_ID_LABEL: &[u8] = b"kes:v1:kms:node";

/// An AWS KMS key that seals the root key.
pub(crate) struct KmsHsm {
    /// `aws-kms:<key id>`
    name: String,
    key_id: String,
    api: JsonApi,
    creds: CredentialSource,
    context: BTreeMap<String, String>,
}

impl KmsHsm {
    /// Resolves the region, endpoint and credentials; contacts nothing yet.
    pub(crate) fn open(cfg: &AwsKmsConfig) -> Result<KmsHsm, String> {
        let region = match &cfg.region {
            Some(region) => region.clone(),
            None => ["AWS_REGION", "AWS_DEFAULT_REGION"]
                .into_iter()
                .find_map(|v| crate::harden::var(v).ok().filter(|r| !r.trim().is_empty()))
                .map(|r| r.trim().to_owned())
                .ok_or(
                    "hsm.aws-kms.region is required (or AWS_REGION in the environment): the \
                     region of the KMS key",
                )?,
        };
        let endpoint = cfg
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("kms.{region}.amazonaws.com"));
        let api = JsonApi::new(
            &endpoint,
            &region,
            "kms",
            "TrentService",
            "hsm.aws-kms.endpoint",
        )?;
        let creds = CredentialSource::new(cfg.credentials.as_ref().map(|c| Credentials {
            access_key: c.access_key.clone(),
            secret_key: c.secret_key.clone(),
            token: c.token.clone(),
        }))
        .map_err(|e| format!("hsm.aws-kms: {e}"))?;
        Ok(KmsHsm {
            name: format!("aws-kms:{}", cfg.key_id),
            key_id: cfg.key_id.clone(),
            api,
            creds,
            context: cfg.context.clone(),
        })
    }

    /// The encryption context of the data whose node id is `id`.
    fn context(&self, id: &[u8; NODE_ID_LEN]) -> BTreeMap<String, String> {
        let mut context = self.context.clone();
        context.insert(KMS_NODE_CONTEXT.into(), hex(id));
        context
    }

    /// One KMS call; errors are classified as the module docs say.
    fn call(&self, action: &str, body: &serde_json::Value) -> Result<Zeroizing<String>, HsmError> {
        let creds = self.creds.get().map_err(HsmError::Device)?;
        let body = Zeroizing::new(serde_json::to_vec(body).expect("JSON"));
        self.api
            .call(&creds, action, &body)
            .map_err(|err| self.classify(action, err))
    }

    fn classify(&self, action: &str, err: AwsError) -> HsmError {
        let what = format!(
            "AWS KMS key '{}' ({}): {action}",
            self.key_id,
            self.api.url()
        );
        let AwsError::Api {
            status,
            kind,
            message,
        } = err
        else {
            return HsmError::Device(format!("{what}: {err}"));
        };
        match kind.as_str() {
            "IncorrectKeyException" => HsmError::WrongKey,
            "InvalidCiphertextException" => HsmError::Refused(format!(
                "{what}: {kind}: the sealed copy does not decrypt under this key and encryption \
                 context: was hsm.aws-kms.context changed? (or the copy is damaged)"
            )),
            "NotFoundException"
            | "DisabledException"
            | "KMSInvalidStateException"
            | "AccessDeniedException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch"
            | "InvalidClientTokenId"
            | "IncompleteSignature"
            | "InvalidKeyUsageException" => HsmError::Refused(format!(
                "{what}: {kind}: {message} (credentials from {})",
                self.creds.describe()
            )),
            _ => HsmError::Device(format!("{what}: {status} {kind}: {message}")),
        }
    }
}

/// `DeriveKey(root key, "kes:v1:kms:node", "")`: the node id of the data `root` encrypts.
fn node_id(root: &[u8]) -> [u8; NODE_ID_LEN] {
    let mut id = [0u8; NODE_ID_LEN];
    kes_core::hsm::derive_key(root, NODE_ID_LABEL, &[], &mut id);
    id
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptOut {
    ciphertext_blob: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DecryptOut {
    plaintext: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeOut {
    key_metadata: KeyMetadata,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyMetadata {
    key_state: Option<String>,
    enabled: Option<bool>,
}

impl Hsm for KmsHsm {
    fn name(&self) -> &str {
        &self.name
    }

    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, HsmError> {
        let id = node_id(plaintext);
        let mut body = json!({
            "KeyId": self.key_id,
            "Plaintext": B64.encode(plaintext),
            "EncryptionContext": self.context(&id),
        });
        let answer = self.call("Encrypt", &body);
        // The JSON held the root key: wipe its string before it is freed.
        if let Some(serde_json::Value::String(s)) = body.get_mut("Plaintext") {
            zeroize::Zeroize::zeroize(s);
        }
        let answer = answer?;
        let out: EncryptOut = serde_json::from_str(&answer)
            .map_err(|e| HsmError::Device(format!("AWS KMS Encrypt: unexpected answer: {e}")))?;
        let blob = B64.decode(out.ciphertext_blob.as_bytes()).map_err(|_| {
            HsmError::Device("AWS KMS Encrypt: CiphertextBlob is not base64".into())
        })?;
        let mut sealed = Vec::with_capacity(1 + NODE_ID_LEN + blob.len());
        sealed.push(TAG_V1);
        sealed.extend_from_slice(&id);
        sealed.extend_from_slice(&blob);
        Ok(sealed)
    }

    fn unseal(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let Some((&TAG_V1, rest)) = sealed.split_first() else {
            return Err(HsmError::WrongKey);
        };
        if rest.len() <= NODE_ID_LEN {
            return Err(HsmError::WrongKey);
        }
        let (id, blob) = rest.split_at(NODE_ID_LEN);
        let id: [u8; NODE_ID_LEN] = id.try_into().expect("split at NODE_ID_LEN");
        let answer = self.call(
            "Decrypt",
            &json!({
                "KeyId": self.key_id,
                "CiphertextBlob": B64.encode(blob),
                "EncryptionContext": self.context(&id),
            }),
        )?;
        let out: DecryptOut = serde_json::from_str(&answer)
            .map_err(|e| HsmError::Device(format!("AWS KMS Decrypt: unexpected answer: {e}")))?;
        let b64 = Zeroizing::new(out.plaintext);
        let plain =
            Zeroizing::new(B64.decode(b64.as_bytes()).map_err(|_| {
                HsmError::Device("AWS KMS Decrypt: Plaintext is not base64".into())
            })?);
        // The id names this plaintext's data, or the blob was put together from two.
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&node_id(&plain)[..], &id[..])) {
            return Err(HsmError::WrongKey);
        }
        Ok(plain)
    }

    fn probe(&self) -> Result<(), String> {
        let answer = self
            .call("DescribeKey", &json!({"KeyId": self.key_id}))
            .map_err(|e| e.to_string())?;
        let out: DescribeOut = serde_json::from_str(&answer)
            .map_err(|e| format!("AWS KMS DescribeKey: unexpected answer: {e}"))?;
        let meta = out.key_metadata;
        match (meta.key_state.as_deref(), meta.enabled) {
            (Some("Enabled") | None, Some(true) | None) => Ok(()),
            (state, _) => Err(format!(
                "AWS KMS key '{}' is {} (it must be Enabled to unseal)",
                self.key_id,
                state.unwrap_or("disabled")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_name_the_root_key() {
        let a = node_id(&[1u8; 32]);
        assert_eq!(a, node_id(&[1u8; 32]));
        assert_ne!(a, node_id(&[2u8; 32]));
        assert_eq!(hex(&a).len(), 32);
    }

    #[test]
    fn foreign_blobs_are_wrong_keys_without_a_call() {
        let cfg = AwsKmsConfig {
            key_id: "k".into(),
            region: Some("us-east-1".into()),
            endpoint: Some("http://127.0.0.1:9".into()),
            credentials: Some(crate::config::AwsCredentials {
                access_key: "a".into(),
                secret_key: Zeroizing::new("b".into()),
                token: None,
            }),
            context: BTreeMap::new(),
            health_check: crate::config::DEFAULT_HEALTH_CHECK,
        };
        let hsm = KmsHsm::open(&cfg).unwrap();
        assert_eq!(hsm.name(), "aws-kms:k");
        for blob in [&[][..], &[2, 0, 0][..], &[1; 17][..]] {
            assert!(matches!(hsm.unseal(blob), Err(HsmError::WrongKey)));
        }
        // Nothing listens on port 9: the device error names the endpoint.
        let err = hsm.unseal(&[1; 40]).unwrap_err().to_string();
        assert!(err.contains("127.0.0.1:9"), "{err}");
    }
}
