//! What kes-node's AWS clients share (cargo feature `aws`): SigV4 signing ([`sigv4`]), one
//! signed call of a JSON API over the blocking HTTP client ([`json`]), and where credentials
//! come from ([`credentials`]: the config, the environment, or the instance role).
//! The edge server's Secrets Manager key store (`edge/aws`) and the AWS KMS HSM
//! (`hsm/aws_kms.rs`) are their users.
pub(crate) mod credentials;
pub(crate) mod json;
pub(crate) mod sigv4;

pub(crate) use credentials::CredentialSource;
pub(crate) use json::{AwsError, JsonApi};
pub(crate) use sigv4::Credentials;
