//! The platform's TPM 2.0 as the [`Hsm`] (`hsm.tpm`, cargo feature `tpm`, through tpm2-tss's
//! ESAPI via the `tss-esapi` crate): the root key is a sealed data object under a primary key
//! of the storage (owner) hierarchy, optionally bound to PCRs of the sha256 bank.
//!
//! # Keys
//!
//! The primary key is an ECC P-256 storage key (restricted decryption, AES-128-CFB) made from
//! the standard template, re-derived from the TPM's storage seed at every use (so nothing
//! needs to live in the TPM's NV memory, and the same TPM makes the same key after a reboot).
//! Sealing creates a keyed-hash object under it whose sensitive data is the root key: fixed to
//! this TPM and parent, outside dictionary-attack lockout. Without `pcrs` its authorization is
//! the empty password; with them it is a PolicyPCR policy over the PCRs' current values, so it
//! unseals only while those PCRs hold the same values (the same firmware, boot chain and
//! settings, as measured). The root key crosses the TPM's bus only in salted sessions (keyed
//! with the primary key) with parameter encryption.
//!
//! Anyone who can use this TPM (and read `kes.db`) can unseal an unbound copy: the TPM binds
//! the data to the machine; PCRs bind it to the machine's measured state.
//!
//! # Name and sealed format
//!
//! The name is `tpm2` without PCRs, `tpm2:sha256:0,7` with them: binding to other PCRs is
//! another HSM (`kes-node hsm add`). The sealed copy:
//!
//! ```text
//! 0x01 || PCR mask (u32 LE, bit i = PCR i of sha256) || u16 LE len || TPM2B_PRIVATE bytes
//!      || u16 LE len || marshalled TPMT_PUBLIC
//! ```
//!
//! # Errors
//!
//! A copy that does not load under this TPM's primary key (another TPM, or altered) is
//! [`HsmError::WrongKey`]; PCRs that no longer hold the sealed values are
//! [`HsmError::Refused`] naming them; a TPM that cannot be reached is [`HsmError::Device`].
//!
//! # Health
//!
//! [`TpmHsm::probe`] opens the TCTI and reads a fixed property (the vendor), no cryptography.
//! Every operation opens its own connection and flushes what it loaded, so a TPM without a
//! resource manager (swtpm, `/dev/tpm0`) never fills up and a restarted TPM is found again.
use std::str::FromStr;

use tss_esapi::attributes::{ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{KeyHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Digest, EccPoint, KeyedHashScheme, PcrSelectionList, PcrSelectionListBuilder, PcrSlot, Private,
    Public, PublicBuilder, PublicEccParametersBuilder, PublicKeyedHashParameters, SensitiveData,
    SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::Context;
use zeroize::Zeroizing;

use super::{one_line, Hsm, HsmError};
use crate::config::TpmConfig;

const TAG_V1: u8 = 1;

/// A TPM 2.0 reached through a TCTI, and the PCRs new copies are bound to.
pub(crate) struct TpmHsm {
    name: String,
    tcti: String,
    /// Bit i: PCR i of the sha256 bank.
    pcrs: u32,
}

impl TpmHsm {
    /// Checks that the TPM answers (a wrong `tcti` is a start-up error naming it).
    pub(crate) fn open(cfg: &TpmConfig) -> Result<TpmHsm, String> {
        // tpm2-tss logs its errors to standard error itself; ours say the same in one line
        // that names the fix. Its log stays on when the operator asks for it.
        if std::env::var_os("TSS2_LOG").is_none() {
            std::env::set_var("TSS2_LOG", "all+NONE");
        }
        let pcrs = cfg.pcrs.iter().fold(0u32, |mask, &i| mask | 1 << i);
        let hsm = TpmHsm {
            name: name_of(pcrs),
            tcti: cfg.tcti.clone(),
            pcrs,
        };
        hsm.probe()?;
        Ok(hsm)
    }

    /// A new connection to the TPM.
    fn connect(&self) -> Result<Context, String> {
        let conf = TctiNameConf::from_str(&self.tcti).map_err(|e| {
            format!(
                "hsm.tpm.tcti: '{}' is not a TCTI (device:/dev/tpmrm0, swtpm:host=..,port=.., \
                 tabrmd:): {e}",
                self.tcti
            )
        })?;
        Context::new(conf).map_err(|e| {
            format!(
                "cannot reach the TPM at '{}': {}: check hsm.tpm.tcti and that the TPM (or \
                 its resource manager) is there and this user may use it",
                self.tcti,
                one_line(&e.to_string())
            )
        })
    }

    /// Runs `op` with the primary key loaded, then flushes everything the operation loaded.
    fn with_primary<T>(
        &self,
        op: impl FnOnce(&mut Context, KeyHandle, &mut Vec<ObjectHandle>) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        let mut ctx = self.connect().map_err(HsmError::Device)?;
        let primary = ctx
            .execute_with_nullauth_session(|ctx| {
                ctx.create_primary(Hierarchy::Owner, storage_key()?, None, None, None, None)
            })
            .map_err(|e| self.device("cannot create the primary storage key", &e))?
            .key_handle;
        let mut loaded = vec![ObjectHandle::from(primary)];
        let result = op(&mut ctx, primary, &mut loaded);
        for handle in loaded.into_iter().rev() {
            // Already gone (a session the TPM closed after its command) is fine.
            let _ = ctx.flush_context(handle);
        }
        result
    }

    /// A session salted with the primary key, with parameter encryption both ways.
    fn session(
        &self,
        ctx: &mut Context,
        primary: KeyHandle,
        kind: SessionType,
        loaded: &mut Vec<ObjectHandle>,
    ) -> Result<AuthSession, HsmError> {
        let session = ctx
            .start_auth_session(
                Some(primary),
                None,
                None,
                kind,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(|e| self.device("cannot start a session", &e))?
            .ok_or_else(|| HsmError::Device("the TPM returned no session".into()))?;
        loaded.push(SessionHandle::from(session).into());
        let (attributes, mask) = SessionAttributesBuilder::new()
            .with_decrypt(true)
            .with_encrypt(true)
            .build();
        ctx.tr_sess_set_attributes(session, attributes, mask)
            .map_err(|e| self.device("cannot set the session's attributes", &e))?;
        Ok(session)
    }

    /// A policy session that has run PolicyPCR over `pcrs` at their current values.
    fn pcr_policy(
        &self,
        ctx: &mut Context,
        primary: KeyHandle,
        pcrs: u32,
        loaded: &mut Vec<ObjectHandle>,
    ) -> Result<AuthSession, HsmError> {
        let session = self.session(ctx, primary, SessionType::Policy, loaded)?;
        let policy = PolicySession::try_from(session)
            .map_err(|e| self.device("not a policy session", &e))?;
        // An empty digest: the TPM digests the PCRs' current values itself.
        ctx.execute_without_session(|ctx| {
            ctx.policy_pcr(policy, Digest::default(), selection(pcrs)?)
        })
        .map_err(|e| {
            self.device(
                &format!("cannot read PCRs {} of the sha256 bank", list(pcrs)),
                &e,
            )
        })?;
        Ok(session)
    }

    fn device(&self, what: &str, err: &tss_esapi::Error) -> HsmError {
        HsmError::Device(format!(
            "TPM at '{}': {what}: {}",
            self.tcti,
            one_line(&err.to_string())
        ))
    }
}

/// `tpm2`, or `tpm2:sha256:<pcrs>`.
fn name_of(pcrs: u32) -> String {
    if pcrs == 0 {
        "tpm2".into()
    } else {
        format!("tpm2:sha256:{}", list(pcrs))
    }
}

/// `0,7` for a mask with bits 0 and 7.
fn list(pcrs: u32) -> String {
    (0..24)
        .filter(|i| pcrs & (1 << i) != 0)
        .map(|i: u32| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn selection(pcrs: u32) -> tss_esapi::Result<PcrSelectionList> {
    let slots = (0..24)
        .filter(|i| pcrs & (1 << i) != 0)
        .map(|i| PcrSlot::try_from(1u32 << i))
        .collect::<tss_esapi::Result<Vec<_>>>()?;
    PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
}

/// The standard ECC P-256 storage key template (restricted decryption, AES-128-CFB).
fn storage_key() -> tss_esapi::Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
}

/// The sealed data object's public part: authorized by `policy` if given, else by the empty
/// password.
fn sealed_object(policy: Option<Digest>) -> tss_esapi::Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_no_da(true)
        .with_user_with_auth(policy.is_none())
        .with_admin_with_policy(policy.is_some())
        .build()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_auth_policy(policy.unwrap_or_default())
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Digest::default())
        .build()
}

fn kind(err: &tss_esapi::Error) -> Option<Tss2ResponseCodeKind> {
    match err {
        tss_esapi::Error::Tss2Error(rc) => rc.kind(),
        tss_esapi::Error::WrapperError(_) => None,
    }
}

/// Appends `bytes` with a u16 LE length.
fn put(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), HsmError> {
    let len = u16::try_from(bytes.len())
        .map_err(|_| HsmError::Device("a TPM structure over 64 KiB".into()))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// The next u16-length-prefixed part of `input`.
fn take<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, rest) = input.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_le_bytes(*len));
    if rest.len() < len {
        return None;
    }
    let (part, rest) = rest.split_at(len);
    *input = rest;
    Some(part)
}

/// The parts of a sealed copy: PCR mask, private and public part.
fn parse(sealed: &[u8]) -> Option<(u32, Private, Public)> {
    let Some((&TAG_V1, rest)) = sealed.split_first() else {
        return None;
    };
    let (mask, mut rest) = rest.split_first_chunk::<4>()?;
    let private = Private::try_from(take(&mut rest)?.to_vec()).ok()?;
    let public = Public::unmarshall(take(&mut rest)?).ok()?;
    rest.is_empty()
        .then_some((u32::from_le_bytes(*mask), private, public))
}

impl Hsm for TpmHsm {
    fn name(&self) -> &str {
        &self.name
    }

    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, HsmError> {
        let data = SensitiveData::try_from(plaintext.to_vec())
            .map_err(|e| HsmError::Device(format!("the root key does not fit the TPM: {e}")))?;
        self.with_primary(|ctx, primary, loaded| {
            let policy = match self.pcrs {
                0 => None,
                pcrs => {
                    let session = self.pcr_policy(ctx, primary, pcrs, loaded)?;
                    let policy = PolicySession::try_from(session)
                        .map_err(|e| self.device("not a policy session", &e))?;
                    Some(
                        ctx.policy_get_digest(policy)
                            .map_err(|e| self.device("cannot read the PCR policy", &e))?,
                    )
                }
            };
            let public =
                sealed_object(policy).map_err(|e| self.device("the object template", &e))?;
            let session = self.session(ctx, primary, SessionType::Hmac, loaded)?;
            let created = ctx
                .execute_with_session(Some(session), |ctx| {
                    ctx.create(primary, public, None, Some(data), None, None)
                })
                .map_err(|e| self.device("cannot create the sealed object", &e))?;
            let public = created
                .out_public
                .marshall()
                .map_err(|e| self.device("cannot encode the sealed object", &e))?;
            let mut out = vec![TAG_V1];
            out.extend_from_slice(&self.pcrs.to_le_bytes());
            put(&mut out, created.out_private.value())?;
            put(&mut out, &public)?;
            Ok(out)
        })
    }

    fn unseal(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let (pcrs, private, public) = parse(sealed).ok_or(HsmError::WrongKey)?;
        self.with_primary(|ctx, primary, loaded| {
            let object = ctx
                .execute_with_nullauth_session(|ctx| ctx.load(primary, private, public))
                .map_err(|e| match kind(&e) {
                    // Not made under this TPM's primary key, or altered.
                    Some(Tss2ResponseCodeKind::Integrity | Tss2ResponseCodeKind::Binding) => {
                        HsmError::WrongKey
                    }
                    _ => self.device("cannot load the sealed object", &e),
                })?;
            loaded.push(object.into());
            let session = match pcrs {
                0 => self.session(ctx, primary, SessionType::Hmac, loaded)?,
                pcrs => self.pcr_policy(ctx, primary, pcrs, loaded)?,
            };
            let data = ctx
                .execute_with_session(Some(session), |ctx| ctx.unseal(object.into()))
                .map_err(|e| match kind(&e) {
                    Some(Tss2ResponseCodeKind::PolicyFail) => HsmError::Refused(format!(
                        "the TPM's PCRs {} (sha256) do not hold the values the root key was \
                         sealed to: the firmware, boot chain or their settings changed since. \
                         Boot into the measured state it was sealed in, or open kes.db with \
                         another HSM's copy (kes-node hsm ls)",
                        list(pcrs)
                    )),
                    _ => self.device("cannot unseal", &e),
                })?;
            Ok(Zeroizing::new(data.value().to_vec()))
        })
    }

    fn probe(&self) -> Result<(), String> {
        let mut ctx = self.connect()?;
        tss_esapi::utils::get_tpm_vendor(&mut ctx)
            .map(drop)
            .map_err(|e| self.device("it does not answer", &e).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_blobs() {
        assert_eq!(name_of(0), "tpm2");
        assert_eq!(name_of(1 | 1 << 7), "tpm2:sha256:0,7");
        assert_eq!(list(1 << 23), "23");
        for blob in [&[][..], &[2, 0, 0, 0, 0][..], &[1, 0, 0, 0, 0, 9, 0][..]] {
            assert!(parse(blob).is_none());
        }
        assert!(selection(1 | 1 << 7).is_ok());
    }
}
