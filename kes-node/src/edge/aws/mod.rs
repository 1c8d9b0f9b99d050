//! The `aws.secretsmanager` key store: each key is a secret of AWS Secrets Manager, named like
//! the key, whose `SecretString` is the key's stored form (upstream's layout). With `kmskey`,
//! Secrets Manager encrypts the secrets with that AWS KMS key instead of the account's default.
//!
//! It speaks Secrets Manager's JSON API (`X-Amz-Target: secretsmanager.<Action>`) signed with
//! SigV4 (`crate::aws::sigv4`) over a blocking HTTP client (ureq on rustls). The endpoint may be
//! `http://` for a local emulator.
use crate::aws::sigv4;

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::keystore::{KeyStore, KeyStoreError};
pub(crate) use sigv4::Credentials;

const SERVICE: &str = "secretsmanager";
const TIMEOUT: Duration = Duration::from_secs(15);

pub(crate) struct SecretsManager {
    agent: ureq::Agent,
    /// `https://host[:port]/`
    url: String,
    /// `host[:port]`, as the `Host` header carries it.
    host: String,
    region: String,
    kms_key: Option<String>,
    creds: Credentials,
}

/// Why a call failed.
enum AwsError {
    /// No HTTP answer.
    Transport(String),
    /// An error answer: status, the exception's name, its message.
    Api(u16, String, String),
}

impl SecretsManager {
    /// `endpoint`: `host`, `host:port`, `https://…` or `http://…`.
    pub(crate) fn new(
        endpoint: &str,
        region: &str,
        kms_key: Option<String>,
        creds: Credentials,
    ) -> Result<SecretsManager, String> {
        let (scheme, rest) = match endpoint.split_once("://") {
            Some((s @ ("http" | "https"), rest)) => (s, rest),
            Some((s, _)) => {
                return Err(format!(
                    "keystore.aws.secretsmanager.endpoint: unknown scheme '{s}'"
                ))
            }
            None => ("https", endpoint),
        };
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(format!(
                "keystore.aws.secretsmanager.endpoint: '{endpoint}' is not HOST[:PORT]"
            ));
        }
        let default_port = if scheme == "https" { ":443" } else { ":80" };
        let host = host.strip_suffix(default_port).unwrap_or(host).to_owned();
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(TIMEOUT)
            .build();
        Ok(SecretsManager {
            agent,
            url: format!("{scheme}://{host}/"),
            host,
            region: region.to_owned(),
            kms_key,
            creds,
        })
    }

    /// One signed call of `action` with a JSON body; the JSON answer.
    fn call(&self, action: &str, body: &Value) -> Result<Zeroizing<String>, AwsError> {
        let body = Zeroizing::new(serde_json::to_vec(body).expect("JSON"));
        let date = sigv4::amz_date(crate::timefmt::now());
        let target = format!("secretsmanager.{action}");
        let content_type = "application/x-amz-json-1.1";
        let mut headers = vec![
            ("content-type", content_type),
            ("host", self.host.as_str()),
            ("x-amz-date", date.as_str()),
            ("x-amz-target", target.as_str()),
        ];
        if let Some(token) = &self.creds.token {
            headers.push(("x-amz-security-token", token.as_str()));
        }
        let req = sigv4::Request {
            method: "POST",
            path: "/",
            headers: &headers,
            body: &body,
        };
        let auth = sigv4::authorization(&self.creds, &self.region, SERVICE, &date, &req);
        let mut request = self.agent.post(&self.url).set("Authorization", &auth);
        for (name, value) in &headers {
            request = request.set(name, value);
        }
        match request.send_bytes(&body) {
            Ok(resp) => resp
                .into_string()
                .map(Zeroizing::new)
                .map_err(|e| AwsError::Transport(format!("reading the answer: {e}"))),
            Err(ureq::Error::Status(status, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let kind = v["__type"].as_str().unwrap_or_default();
                // `com.amazonaws.secretsmanager#ResourceNotFoundException` or the bare name.
                let kind = kind.rsplit('#').next().unwrap_or(kind).to_owned();
                let message = v["message"]
                    .as_str()
                    .or(v["Message"].as_str())
                    .unwrap_or(text.trim())
                    .to_owned();
                Err(AwsError::Api(status, kind, message))
            }
            Err(ureq::Error::Transport(t)) => Err(AwsError::Transport(t.to_string())),
        }
    }

    fn error(&self, action: &str, err: AwsError) -> KeyStoreError {
        match err {
            AwsError::Transport(why) => KeyStoreError::Unreachable(format!("{}: {why}", self.url)),
            AwsError::Api(_, kind, _) if kind == "ResourceNotFoundException" => {
                KeyStoreError::NotFound
            }
            AwsError::Api(_, kind, _) if kind == "ResourceExistsException" => KeyStoreError::Exists,
            AwsError::Api(status, kind, message) => {
                KeyStoreError::Failed(format!("{action}: {status} {kind}: {message}"))
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SecretValue {
    secret_string: Option<String>,
    secret_binary: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SecretList {
    #[serde(default)]
    secret_list: Vec<SecretEntry>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SecretEntry {
    name: String,
}

impl KeyStore for SecretsManager {
    fn describe(&self) -> String {
        format!("aws secretsmanager: {} ({})", self.url, self.region)
    }

    fn status(&self) -> Result<Duration, KeyStoreError> {
        // A one-item listing proves the endpoint answers and the credentials are good.
        let start = Instant::now();
        self.call("ListSecrets", &json!({"MaxResults": 1}))
            .map_err(|e| self.error("ListSecrets", e))?;
        Ok(start.elapsed())
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), KeyStoreError> {
        let value = std::str::from_utf8(value)
            .map_err(|_| KeyStoreError::Failed("a key's stored form is text".into()))?;
        let mut body = json!({"Name": name, "SecretString": value});
        if let Some(kms) = &self.kms_key {
            body["KmsKeyId"] = kms.as_str().into();
        }
        let result = self.call("CreateSecret", &body);
        if let Value::Object(mut map) = body {
            // The JSON held the key: wipe its string before it is freed.
            if let Some(Value::String(s)) = map.get_mut("SecretString") {
                zeroize::Zeroize::zeroize(s);
            }
        }
        result.map(drop).map_err(|e| self.error("CreateSecret", e))
    }

    fn get(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, KeyStoreError> {
        let text = self
            .call("GetSecretValue", &json!({"SecretId": name}))
            .map_err(|e| self.error("GetSecretValue", e))?;
        let value: SecretValue = serde_json::from_str(&text).map_err(|e| {
            KeyStoreError::Failed(format!("GetSecretValue: unexpected answer: {e}"))
        })?;
        match (value.secret_string, value.secret_binary) {
            (Some(s), _) => Ok(Zeroizing::new(s.into_bytes())),
            (None, Some(b)) => {
                use base64::Engine as _;
                let b = Zeroizing::new(b);
                base64::engine::general_purpose::STANDARD
                    .decode(b.as_bytes())
                    .map(Zeroizing::new)
                    .map_err(|_| KeyStoreError::Failed("SecretBinary is not base64".into()))
            }
            (None, None) => Err(KeyStoreError::Failed(format!(
                "secret '{name}' has no value"
            ))),
        }
    }

    fn delete(&self, name: &str) -> Result<(), KeyStoreError> {
        let body = json!({"SecretId": name, "ForceDeleteWithoutRecovery": true});
        self.call("DeleteSecret", &body)
            .map(drop)
            .map_err(|e| self.error("DeleteSecret", e))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, KeyStoreError> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut body = json!({"MaxResults": 100});
            if let Some(t) = &token {
                body["NextToken"] = t.as_str().into();
            }
            let text = self
                .call("ListSecrets", &body)
                .map_err(|e| self.error("ListSecrets", e))?;
            let page: SecretList = serde_json::from_str(&text).map_err(|e| {
                KeyStoreError::Failed(format!("ListSecrets: unexpected answer: {e}"))
            })?;
            names.extend(
                page.secret_list
                    .into_iter()
                    .map(|s| s.name)
                    .filter(|n| n.starts_with(prefix) && kes_core::name::valid_name(n)),
            );
            match page.next_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }
}
