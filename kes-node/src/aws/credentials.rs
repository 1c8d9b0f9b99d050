//! Where AWS credentials come from, in the order AWS's own tools look:
//!
//! 1. the config's static keys;
//! 2. the environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and, for temporary
//!    credentials, `AWS_SESSION_TOKEN` (a hardened server has the secret ones handed over, out
//!    of its environment: `crate::harden`);
//! 3. the instance role, through the instance metadata service (IMDSv2: a session token is
//!    asked for with a `PUT`, then the role's name and its temporary credentials with it).
//!    They are fetched when first needed and again shortly before they expire.
//!    `AWS_EC2_METADATA_SERVICE_ENDPOINT` moves the service (as the AWS SDKs allow);
//!    `AWS_EC2_METADATA_DISABLED=true` turns this source off.
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::sigv4::Credentials;

const ACCESS_KEY_VAR: &str = "AWS_ACCESS_KEY_ID";
const SECRET_KEY_VAR: &str = crate::config::AWS_SECRET_KEY_VAR;
const TOKEN_VAR: &str = crate::config::AWS_TOKEN_VAR;
const IMDS_ENDPOINT_VAR: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
const IMDS_DISABLED_VAR: &str = "AWS_EC2_METADATA_DISABLED";
const IMDS_ENDPOINT: &str = "http://169.254.169.254";
const ROLE_PATH: &str = "/latest/meta-data/iam/security-credentials/";
/// Temporary credentials are renewed this long before they expire.
const RENEW_BEFORE: time::Duration = time::Duration::minutes(5);

/// Where a client's credentials come from (see the module docs).
pub(crate) enum CredentialSource {
    /// The config's, or the environment's (read once).
    Fixed {
        creds: Credentials,
        from: &'static str,
    },
    /// The instance role's temporary credentials, cached until shortly before they expire.
    InstanceRole {
        agent: ureq::Agent,
        endpoint: String,
        cached: Mutex<Option<(Credentials, OffsetDateTime)>>,
    },
}

impl CredentialSource {
    /// The configured credentials if any, else the environment's, else the instance role.
    pub(crate) fn new(configured: Option<Credentials>) -> Result<CredentialSource, String> {
        if let Some(creds) = configured {
            return Ok(CredentialSource::Fixed {
                creds,
                from: "the config",
            });
        }
        let var = |name| {
            crate::harden::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
        };
        match (var(ACCESS_KEY_VAR), var(SECRET_KEY_VAR)) {
            (Some(access_key), Some(secret_key)) => {
                return Ok(CredentialSource::Fixed {
                    creds: Credentials {
                        access_key: access_key.trim().to_owned(),
                        secret_key: Zeroizing::new(secret_key.trim().to_owned()),
                        token: var(TOKEN_VAR).map(|t| t.trim().to_owned()),
                    },
                    from: "the environment",
                })
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(format!(
                    "AWS credentials in the environment need both {ACCESS_KEY_VAR} and \
                     {SECRET_KEY_VAR}"
                ))
            }
            (None, None) => {}
        }
        if var(IMDS_DISABLED_VAR).is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Err(format!(
                "no AWS credentials: none in the config, none in the environment \
                 ({ACCESS_KEY_VAR}, {SECRET_KEY_VAR}), and the instance role is off \
                 ({IMDS_DISABLED_VAR})"
            ));
        }
        let endpoint = var(IMDS_ENDPOINT_VAR).unwrap_or_else(|| IMDS_ENDPOINT.into());
        Ok(CredentialSource::InstanceRole {
            // Off EC2 the address does not answer: fail fast.
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(2))
                .timeout(Duration::from_secs(5))
                .build(),
            endpoint: endpoint.trim().trim_end_matches('/').to_owned(),
            cached: Mutex::new(None),
        })
    }

    /// Where the credentials come from, for messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            CredentialSource::Fixed { from, .. } => (*from).to_owned(),
            CredentialSource::InstanceRole { endpoint, .. } => {
                format!("the instance role (metadata service {endpoint})")
            }
        }
    }

    /// Credentials to sign with now.
    pub(crate) fn get(&self) -> Result<Credentials, String> {
        let (agent, endpoint, cached) = match self {
            CredentialSource::Fixed { creds, .. } => return Ok(creds.clone()),
            CredentialSource::InstanceRole {
                agent,
                endpoint,
                cached,
            } => (agent, endpoint, cached),
        };
        let mut cached = cached.lock().unwrap_or_else(|e| e.into_inner());
        let now = crate::timefmt::now();
        match &*cached {
            Some((creds, expires)) if *expires - RENEW_BEFORE > now => Ok(creds.clone()),
            _ => {
                let fresh = instance_role(agent, endpoint).map_err(|why| {
                    format!(
                        "no AWS credentials: none in the config, none in the environment \
                         ({ACCESS_KEY_VAR}, {SECRET_KEY_VAR}), and the instance role's could \
                         not be had from {endpoint}: {why}"
                    )
                })?;
                *cached = Some(fresh.clone());
                Ok(fresh.0)
            }
        }
    }
}

/// The role's credentials as the metadata service gives them.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoleCredentials {
    access_key_id: String,
    secret_access_key: String,
    token: Option<String>,
    expiration: String,
}

/// IMDSv2: a session token, the role's name, then its credentials and their expiry.
fn instance_role(
    agent: &ureq::Agent,
    endpoint: &str,
) -> Result<(Credentials, OffsetDateTime), String> {
    let fail = |what: &str, e: ureq::Error| format!("{what}: {e}");
    let token = agent
        .put(&format!("{endpoint}/latest/api/token"))
        .set("X-aws-ec2-metadata-token-ttl-seconds", "300")
        .call()
        .map_err(|e| fail("session token", e))?
        .into_string()
        .map_err(|e| format!("session token: {e}"))?;
    let get = |path: &str| -> Result<String, String> {
        agent
            .get(&format!("{endpoint}{path}"))
            .set("X-aws-ec2-metadata-token", token.trim())
            .call()
            .map_err(|e| fail(path, e))?
            .into_string()
            .map_err(|e| format!("{path}: {e}"))
    };
    let roles = get(ROLE_PATH)?;
    let role = roles
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or("the instance has no IAM role")?;
    let text = Zeroizing::new(get(&format!("{ROLE_PATH}{role}"))?);
    let c: RoleCredentials = serde_json::from_str(&text)
        .map_err(|e| format!("role '{role}': unexpected answer: {e}"))?;
    let secret_key = Zeroizing::new(c.secret_access_key);
    let expires = OffsetDateTime::parse(
        &c.expiration,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|e| format!("role '{role}': Expiration '{}': {e}", c.expiration))?;
    Ok((
        Credentials {
            access_key: c.access_key_id,
            secret_key,
            token: c.token.filter(|t| !t.is_empty()),
        },
        expires,
    ))
}
