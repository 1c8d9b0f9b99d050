//! A PKCS#11 token as the [`Hsm`]: the root key is sealed by a non-extractable, sensitive
//! AES-256 key that never leaves the token.
//!
//! # Naming
//!
//! The sealed copy in `kes.db` is stored under `pkcs11:<token label>/<key label>` (the token's
//! label as the token reports it, even when the config selects it by `slot`, because slot ids
//! may change between boots while labels do not). The SoftHSM's copy keeps its name
//! `kes:v1:hsm:soft`.
//!
//! # Sealed format
//!
//! One tag byte names the mechanism, so either can unseal whatever the other sealed:
//!
//! ```text
//! 0x01 || IV (12 bytes) || CKM_AES_GCM(key, IV, aad = "kes:v1:pkcs11:root_key", root key) || tag (16)
//! 0x02 || CKM_AES_KEY_WRAP(key, root key)                      (RFC 3394, 40 bytes for 32)
//! ```
//!
//! `mechanism: auto` seals with AES-GCM when the token lists CKM_AES_GCM, else with AES key
//! wrap (through C_WrapKey/C_UnwrapKey on a short-lived, non-token session object holding the
//! root key, the functions PKCS#11 defines the mechanism for).
//!
//! # Key
//!
//! The key is found by its label (class secret key, type AES). A new `kes.db` (and `hsm add`)
//! creates it when missing: a token object, private, sensitive, never extractable, allowed to
//! encrypt/decrypt, wrap/unwrap and sign (AES-CMAC, which derives the cluster's inter-node
//! key). Opening an existing `kes.db` never creates one: a missing key is an error.
//!
//! # Health
//!
//! [`Pkcs11Hsm::probe`] (session info, token info and one attribute of the key: no crypto) runs
//! on the health thread (`health.rs`). A failure drops the session; the next probe (or seal)
//! finds the token again (listing the slots), opens a new session and logs in again, so a
//! token that comes back is used again where the module rescans its slots (SoftHSMv2 does not
//! within one process: there the state stays `unavailable` until a restart).
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::{Zeroize, Zeroizing};

use super::{Hsm, HsmError};
use crate::config::{PinSource, Pkcs11Config, SealMechanism, TokenSelector};

const TAG_GCM: u8 = 1;
const TAG_WRAP: u8 = 2;
const GCM_IV_LEN: usize = 12;
const GCM_TAG_BITS: u64 = 128;
const GCM_AAD: &[u8] = b"kes:v1:pkcs11:root_key";

/// Why a token could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The token has no key with the configured label (and creating one was not allowed).
    MissingKey { name: String },
    /// Anything else; the message names the problem and the config field to check.
    Other(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::MissingKey { name } => {
                let (token, label) = split_name(name);
                write!(
                    f,
                    "PKCS#11 token '{token}' has no AES key labeled '{label}' (HSM '{name}')"
                )
            }
            OpenError::Other(msg) => f.write_str(msg),
        }
    }
}

/// `pkcs11:<token>/<key>` → (`<token>`, `<key>`); labels may contain `/`, the token's rarely.
fn split_name(name: &str) -> (&str, &str) {
    let rest = name.strip_prefix("pkcs11:").unwrap_or(name);
    rest.split_once('/').unwrap_or((rest, ""))
}

/// The open token: its context, slot, the PIN (kept, zeroized on drop, to log in again after
/// the token comes back) and the live session.
pub(crate) struct Pkcs11Hsm {
    name: String,
    ctx: Pkcs11,
    module: PathBuf,
    token_label: String,
    key_label: String,
    pin: AuthPin,
    mechanism: Mech,
    live: Mutex<Option<Live>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mech {
    Gcm,
    Wrap,
}

/// A logged-in session on the token's slot and the key's handle in it.
struct Live {
    slot: Slot,
    session: Session,
    key: ObjectHandle,
}

impl Pkcs11Hsm {
    /// Loads the module, finds the token, logs in and finds the key, creating it if `create`.
    pub(crate) fn open(cfg: &Pkcs11Config, create: bool) -> Result<Pkcs11Hsm, OpenError> {
        let ctx = module(&cfg.module).map_err(OpenError::Other)?;
        let slot = find_slot(&ctx, cfg).map_err(OpenError::Other)?;
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| OpenError::Other(format!("PKCS#11 token: {}", ck(&e))))?;
        let token_label = info.label().trim().to_string();
        let name = format!("pkcs11:{token_label}/{}", cfg.key_label);
        let pin = read_pin(&cfg.pin).map_err(OpenError::Other)?;
        let mechanisms = ctx.get_mechanism_list(slot).map_err(|e| {
            OpenError::Other(format!(
                "PKCS#11 token '{token_label}': cannot list its mechanisms: {}",
                ck(&e)
            ))
        })?;
        let has = |m: MechanismType| mechanisms.contains(&m);
        let mechanism = match cfg.mechanism {
            SealMechanism::Auto if has(MechanismType::AES_GCM) => Mech::Gcm,
            SealMechanism::Auto if has(MechanismType::AES_KEY_WRAP) => Mech::Wrap,
            SealMechanism::Auto => {
                return Err(OpenError::Other(format!(
                    "PKCS#11 token '{token_label}' offers neither CKM_AES_GCM nor \
                     CKM_AES_KEY_WRAP: kes-node needs one of them to seal the root key"
                )))
            }
            SealMechanism::AesGcm => Mech::Gcm,
            SealMechanism::AesKeyWrap => Mech::Wrap,
        };
        let hsm = Pkcs11Hsm {
            name,
            ctx,
            module: cfg.module.clone(),
            token_label,
            key_label: cfg.key_label.clone(),
            pin,
            mechanism,
            live: Mutex::new(None),
        };
        let live = hsm.connect(slot, create)?;
        *hsm.lock() = Some(live);
        Ok(hsm)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Finds the token again (listing the slots makes a module rescan them, so a token that
    /// was removed and put back is found) and connects to it.
    fn reconnect(&self) -> Result<Live, String> {
        let cfg = |token| Pkcs11Config {
            module: self.module.clone(),
            token,
            pin: PinSource::Env(String::new()),
            key_label: self.key_label.clone(),
            mechanism: SealMechanism::Auto,
            health_check: crate::config::DEFAULT_HEALTH_CHECK,
        };
        let slot = find_slot(
            &self.ctx,
            &cfg(TokenSelector::Label(self.token_label.clone())),
        )?;
        self.connect(slot, false).map_err(|e| e.to_string())
    }

    /// Opens a session, logs in and finds (or creates) the key.
    fn connect(&self, slot: Slot, create: bool) -> Result<Live, OpenError> {
        let token = &self.token_label;
        let session = self.ctx.open_rw_session(slot).map_err(|e| {
            OpenError::Other(format!(
                "PKCS#11 token '{token}': cannot open a session: {}",
                ck(&e)
            ))
        })?;
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(OpenError::Other(format!(
                    "wrong PIN for PKCS#11 token '{token}': check hsm.pkcs11.pin_env / pin_file"
                )))
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(OpenError::Other(format!(
                    "the user PIN of PKCS#11 token '{token}' is locked: reset it with the \
                     token's SO PIN"
                )))
            }
            Err(e) => {
                return Err(OpenError::Other(format!(
                    "cannot log in to PKCS#11 token '{token}': {}",
                    ck(&e)
                )))
            }
        }
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(self.key_label.as_bytes().to_vec()),
        ];
        let found = session.find_objects(&template).map_err(|e| {
            OpenError::Other(format!(
                "PKCS#11 token '{token}': cannot search for key '{}': {}",
                self.key_label,
                ck(&e)
            ))
        })?;
        let key = match found[..] {
            [key] => key,
            [] if create => self.generate(&session)?,
            [] => {
                return Err(OpenError::MissingKey {
                    name: self.name.clone(),
                })
            }
            _ => {
                return Err(OpenError::Other(format!(
                    "PKCS#11 token '{token}' holds {} AES keys labeled '{}': give the root key's \
                     key a label of its own",
                    found.len(),
                    self.key_label
                )))
            }
        };
        Ok(Live { slot, session, key })
    }

    /// Creates the sealing key: AES-256, on the token, sensitive and never extractable.
    fn generate(&self, session: &Session) -> Result<ObjectHandle, OpenError> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Label(self.key_label.as_bytes().to_vec()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Sign(true),
            Attribute::Verify(true),
        ];
        session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(|e| {
                OpenError::Other(format!(
                    "PKCS#11 token '{}': cannot create the AES-256 key '{}': {}",
                    self.token_label,
                    self.key_label,
                    ck(&e)
                ))
            })
    }

    /// Runs `op` on the live session, connecting first if the last probe dropped it. A failure
    /// drops the session so that the next use starts over.
    fn with_live<T>(&self, op: impl FnOnce(&Live) -> Result<T, String>) -> Result<T, String> {
        let mut live = self.lock();
        if live.is_none() {
            *live = Some(self.reconnect()?);
        }
        let result = op(live.as_ref().expect("connected above"));
        if result.is_err() {
            *live = None;
        }
        result
    }
}

impl Pkcs11Hsm {
    /// Whether the session and token still answer. Tokens differ in what they return for a
    /// ciphertext that does not authenticate (SoftHSM: CKR_GENERAL_ERROR); when the token is
    /// fine otherwise, the blob is what is wrong.
    fn healthy(&self, live: &Live) -> bool {
        live.session.get_session_info().is_ok() && self.ctx.get_token_info(live.slot).is_ok()
    }
}

impl Hsm for Pkcs11Hsm {
    fn name(&self) -> &str {
        &self.name
    }

    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, HsmError> {
        let token = &self.token_label;
        self.with_live(|live| match self.mechanism {
            Mech::Gcm => {
                let mut iv: [u8; GCM_IV_LEN] = crate::random::bytes();
                let params = GcmParams::new(&mut iv, GCM_AAD, GCM_TAG_BITS.into())
                    .map_err(|e| e.to_string())?;
                let sealed = live
                    .session
                    .encrypt(&Mechanism::AesGcm(params), live.key, plaintext)
                    .map_err(|e| format!("PKCS#11 token '{token}': AES-GCM: {}", ck(&e)))?;
                let mut out = Vec::with_capacity(1 + GCM_IV_LEN + sealed.len());
                out.push(TAG_GCM);
                out.extend_from_slice(&iv);
                out.extend_from_slice(&sealed);
                Ok(out)
            }
            Mech::Wrap => {
                let wrapped = wrap(&live.session, live.key, plaintext)
                    .map_err(|e| format!("PKCS#11 token '{token}': AES key wrap: {e}"))?;
                let mut out = Vec::with_capacity(1 + wrapped.len());
                out.push(TAG_WRAP);
                out.extend_from_slice(&wrapped);
                Ok(out)
            }
        })
        .map_err(HsmError::Device)
    }

    fn unseal(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let token = &self.token_label;
        let Some((&tag, body)) = sealed.split_first() else {
            return Err(HsmError::WrongKey);
        };
        // A blob that does not authenticate is `WrongKey`; the token failing is `Device`.
        let mut wrong_key = false;
        let result = self.with_live(|live| match tag {
            TAG_GCM if body.len() >= GCM_IV_LEN + 16 => {
                let mut iv = [0u8; GCM_IV_LEN];
                iv.copy_from_slice(&body[..GCM_IV_LEN]);
                let params = GcmParams::new(&mut iv, GCM_AAD, GCM_TAG_BITS.into())
                    .map_err(|e| e.to_string())?;
                match live.session.decrypt(
                    &Mechanism::AesGcm(params),
                    live.key,
                    &body[GCM_IV_LEN..],
                ) {
                    Ok(plain) => Ok(Zeroizing::new(plain)),
                    Err(e) if not_authentic(&e) || self.healthy(live) => {
                        wrong_key = true;
                        Ok(Zeroizing::new(Vec::new()))
                    }
                    Err(e) => Err(format!("PKCS#11 token '{token}': AES-GCM: {}", ck(&e))),
                }
            }
            TAG_WRAP => match unwrap(&live.session, live.key, body) {
                Ok(plain) => Ok(plain),
                Err(Unwrap::NotAuthentic | Unwrap::Unknown) if self.healthy(live) => {
                    wrong_key = true;
                    Ok(Zeroizing::new(Vec::new()))
                }
                Err(Unwrap::NotAuthentic) => {
                    wrong_key = true;
                    Ok(Zeroizing::new(Vec::new()))
                }
                Err(Unwrap::Failed(e)) => {
                    Err(format!("PKCS#11 token '{token}': AES key wrap: {e}"))
                }
                Err(Unwrap::Unknown) => Err(format!(
                    "PKCS#11 token '{token}': AES key wrap failed and the token does not answer"
                )),
            },
            _ => {
                wrong_key = true;
                Ok(Zeroizing::new(Vec::new()))
            }
        });
        match result {
            Ok(_) if wrong_key => Err(HsmError::WrongKey),
            Ok(plain) => Ok(plain),
            Err(msg) => Err(HsmError::Device(msg)),
        }
    }

    fn probe(&self) -> Result<(), String> {
        let token = &self.token_label;
        self.with_live(|live| {
            let what = |e: CkError| format!("PKCS#11 token '{token}': {}", ck(&e));
            live.session.get_session_info().map_err(what)?;
            self.ctx.get_token_info(live.slot).map_err(what)?;
            live.session
                .get_attributes(live.key, &[AttributeType::Label])
                .map_err(what)?;
            Ok(())
        })
    }

    fn derive_seed(&self, context: &[u8]) -> Result<Zeroizing<[u8; 32]>, HsmError> {
        // Two AES-CMAC blocks over the label, the context and a counter: a PRF keyed by the
        // token's key, so every node whose token holds the same key derives the same seed.
        let token = &self.token_label;
        self.with_live(|live| {
            let mut seed = Zeroizing::new([0u8; 32]);
            for (i, half) in seed.chunks_mut(16).enumerate() {
                let mut data = b"kes:v1:api_key\0".to_vec();
                data.extend_from_slice(context);
                data.push(i as u8 + 1);
                let mut mac = live
                    .session
                    .sign(&Mechanism::AesCMac, live.key, &data)
                    .map_err(|e| format!("PKCS#11 token '{token}': AES-CMAC: {}", ck(&e)))?;
                if mac.len() != 16 {
                    return Err(format!("PKCS#11 token '{token}': AES-CMAC is not 16 bytes"));
                }
                half.copy_from_slice(&mac);
                mac.zeroize();
            }
            Ok(seed)
        })
        .map_err(HsmError::Device)
    }
}

/// The session object template for the root key while it is wrapped or unwrapped: a session
/// object (never stored), readable so that its value can be taken out.
fn transient_template(value: Option<&[u8]>) -> Vec<Attribute> {
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
    ];
    if let Some(value) = value {
        template.push(Attribute::Value(value.to_vec()));
    }
    template
}

/// CKM_AES_KEY_WRAP of `plaintext` (a multiple of 8 bytes, at least 16).
fn wrap(session: &Session, key: ObjectHandle, plaintext: &[u8]) -> Result<Vec<u8>, String> {
    if plaintext.len() < 16 || plaintext.len() & 7 != 0 {
        return Err("AES key wrap seals multiples of 8 bytes only".into());
    }
    let mut template = transient_template(Some(plaintext));
    let object = session.create_object(&template);
    // The template's copy of the value is ours to wipe.
    for attr in &mut template {
        if let Attribute::Value(v) = attr {
            v.zeroize();
        }
    }
    let object = object.map_err(|e| ck(&e))?;
    let wrapped = session.wrap_key(&Mechanism::AesKeyWrap, key, object);
    let _ = session.destroy_object(object);
    wrapped.map_err(|e| ck(&e))
}

enum Unwrap {
    NotAuthentic,
    /// C_UnwrapKey failed with a return value that may mean either (CKR_GENERAL_ERROR, say).
    Unknown,
    Failed(String),
}

/// Reverses [`wrap`]: unwraps into a session object, reads its value and destroys it.
fn unwrap(
    session: &Session,
    key: ObjectHandle,
    wrapped: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Unwrap> {
    let object = match session.unwrap_key(
        &Mechanism::AesKeyWrap,
        key,
        wrapped,
        &transient_template(None),
    ) {
        Ok(object) => object,
        Err(e) if not_authentic(&e) => return Err(Unwrap::NotAuthentic),
        Err(CkError::Pkcs11(RvError::GeneralError | RvError::FunctionFailed, _)) => {
            return Err(Unwrap::Unknown)
        }
        Err(e) => return Err(Unwrap::Failed(ck(&e))),
    };
    let attrs = session.get_attributes(object, &[AttributeType::Value]);
    let _ = session.destroy_object(object);
    let attrs = attrs.map_err(|e| Unwrap::Failed(ck(&e)))?;
    for attr in attrs {
        if let Attribute::Value(v) = attr {
            return Ok(Zeroizing::new(v));
        }
    }
    Err(Unwrap::Failed("the unwrapped key has no value".into()))
}

/// The return values by which tokens refuse a ciphertext that does not authenticate.
fn not_authentic(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::WrappedKeyInvalid
                | RvError::WrappedKeyLenRange,
            _
        )
    )
}

/// A short form of a cryptoki error: the function and the CKR_ name, not the spec's paragraph.
fn ck(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => {
            let what = match rv {
                RvError::DeviceRemoved | RvError::TokenNotPresent => {
                    "the token is not present (removed?)".to_string()
                }
                RvError::SessionHandleInvalid | RvError::SessionClosed => {
                    "the session is gone (token removed or reset?)".to_string()
                }
                RvError::DeviceError | RvError::GeneralError => {
                    format!("the token failed ({rv:?})")
                }
                other => format!("{other:?}"),
            };
            format!("{what} in {function:?}")
        }
        other => other.to_string(),
    }
}

/// The process's context for a module, loaded and initialized once: C_Initialize may be called
/// only once per module and process, and two HSMs (`hsm add`) may share a module.
fn module(path: &Path) -> Result<Pkcs11, String> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut modules = MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(ctx) = modules.get(path) {
        return Ok(ctx.clone());
    }
    if !path.exists() {
        return Err(format!(
            "PKCS#11 module {} not found: check hsm.pkcs11.module (SoftHSMv2's is usually \
             /usr/lib/softhsm/libsofthsm2.so)",
            path.display()
        ));
    }
    let ctx = Pkcs11::new(path).map_err(|e| {
        format!(
            "cannot load PKCS#11 module {}: {}: check hsm.pkcs11.module",
            path.display(),
            super::one_line(&e.to_string())
        )
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(format!(
                "PKCS#11 module {} does not initialize: {}",
                path.display(),
                ck(&e)
            ))
        }
    }
    modules.insert(path.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// The slot of the configured token.
fn find_slot(ctx: &Pkcs11, cfg: &Pkcs11Config) -> Result<Slot, String> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| format!("PKCS#11 module: cannot list its slots: {}", ck(&e)))?;
    let labels: Vec<(Slot, String)> = slots
        .iter()
        .filter_map(|s| {
            let info = ctx.get_token_info(*s).ok()?;
            Some((*s, info.label().trim().to_string()))
        })
        .collect();
    let present = || {
        let names: Vec<String> = labels
            .iter()
            .map(|(s, l)| match l.as_str() {
                "" => format!("an uninitialized token (slot {})", s.id()),
                l => format!("'{l}' (slot {})", s.id()),
            })
            .collect();
        if names.is_empty() {
            "no token is present".to_string()
        } else {
            format!("tokens present: {}", names.join(", "))
        }
    };
    match &cfg.token {
        TokenSelector::Label(label) => {
            let matching: Vec<Slot> = labels
                .iter()
                .filter(|(_, l)| l == label)
                .map(|(s, _)| *s)
                .collect();
            match matching[..] {
                [slot] => Ok(slot),
                [] => Err(format!(
                    "no PKCS#11 token labeled '{label}' in {} ({}): check hsm.pkcs11.token",
                    cfg.module.display(),
                    present()
                )),
                _ => Err(format!(
                    "several PKCS#11 tokens are labeled '{label}': select one with \
                     hsm.pkcs11.slot"
                )),
            }
        }
        TokenSelector::Slot(id) => labels
            .iter()
            .find(|(s, _)| s.id() == *id)
            .map(|(s, _)| *s)
            .ok_or_else(|| {
                format!(
                    "no PKCS#11 token in slot {id} ({}): check hsm.pkcs11.slot",
                    present()
                )
            }),
    }
}

/// Reads the user PIN from its environment variable or file (one trailing newline dropped).
fn read_pin(source: &PinSource) -> Result<AuthPin, String> {
    let mut pin = match source {
        // Through `harden`: a running server no longer has the variable in its environment.
        PinSource::Env(var) => crate::harden::var(var).map_err(|_| {
            format!("the PKCS#11 PIN variable {var} (hsm.pkcs11.pin_env) is not set")
        })?,
        PinSource::File(path) => std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read the PKCS#11 PIN file {} (hsm.pkcs11.pin_file): {e}",
                path.display()
            )
        })?,
    };
    let trimmed = pin.trim_end_matches(['\r', '\n']).to_string();
    pin.zeroize();
    if trimmed.is_empty() {
        return Err("the PKCS#11 PIN is empty (hsm.pkcs11.pin_env / pin_file)".into());
    }
    Ok(AuthPin::from(trimmed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_token_and_key() {
        assert_eq!(split_name("pkcs11:kes/root"), ("kes", "root"));
        assert_eq!(split_name("pkcs11:kes/a/b"), ("kes", "a/b"));
    }

    #[test]
    fn a_missing_module_is_named() {
        let err = module(Path::new("/nonexistent/libpkcs11.so"))
            .err()
            .unwrap();
        assert!(err.contains("/nonexistent/libpkcs11.so not found"), "{err}");
    }

    #[test]
    fn a_non_library_does_not_load() {
        let dir = std::env::temp_dir().join(format!("kes-pkcs11-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("not-a-library.so");
        std::fs::write(&path, b"plain text").unwrap();
        let err = module(&path).err().unwrap();
        assert!(err.starts_with("cannot load PKCS#11 module"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_pin_comes_from_its_source_without_the_newline() {
        let dir = std::env::temp_dir().join(format!("kes-pin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pin");
        std::fs::write(&path, "1234\n").unwrap();
        assert!(read_pin(&PinSource::File(path.clone())).is_ok());
        std::fs::write(&path, "\n").unwrap();
        assert!(read_pin(&PinSource::File(path)).is_err());
        let err = read_pin(&PinSource::Env("KES_TEST_SURELY_UNSET_PIN".into()))
            .err()
            .unwrap();
        assert!(err.contains("KES_TEST_SURELY_UNSET_PIN"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// SoftHSMv2 (`softhsm2-util`, installed by `.ci/run`) with a fresh token in a temporary
    /// directory. The only test in this binary that loads a module: SOFTHSM2_CONF is read
    /// once, when the module initializes.
    #[test]
    fn a_softhsm_token_seals_unseals_and_derives() {
        let dir = std::env::temp_dir().join(format!("kes-softhsm-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tokens")).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.join("tokens").display()
            ),
        )
        .unwrap();
        std::env::set_var("SOFTHSM2_CONF", &conf);
        let init = std::process::Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", "unit", "--pin", "1234"])
            .args(["--so-pin", "5678"])
            .output()
            .expect("softhsm2-util must be installed (apt-get install softhsm2; .ci/run does)");
        assert!(init.status.success(), "{init:?}");
        std::fs::write(dir.join("pin"), "1234\n").unwrap();
        let cfg = |label: &str, mechanism| Pkcs11Config {
            module: PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
            token: TokenSelector::Label("unit".into()),
            pin: PinSource::File(dir.join("pin")),
            key_label: label.into(),
            mechanism,
            health_check: crate::config::DEFAULT_HEALTH_CHECK,
        };

        let missing = Pkcs11Hsm::open(&cfg("root", SealMechanism::Auto), false).err();
        assert!(
            matches!(&missing, Some(OpenError::MissingKey { name }) if name == "pkcs11:unit/root"),
            "{missing:?}"
        );
        let gcm = Pkcs11Hsm::open(&cfg("root", SealMechanism::Auto), true).unwrap();
        assert_eq!(gcm.name(), "pkcs11:unit/root");
        assert_eq!(gcm.mechanism, Mech::Gcm, "SoftHSM offers CKM_AES_GCM");
        let root = [7u8; 32];
        let sealed = gcm.seal(&root).unwrap();
        assert_eq!(sealed[0], TAG_GCM);
        assert_ne!(gcm.seal(&root).unwrap(), sealed, "a fresh IV each time");
        assert_eq!(&gcm.unseal(&sealed).unwrap()[..], &root);
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        let r = gcm.unseal(&tampered);
        assert!(matches!(r, Err(HsmError::WrongKey)), "{r:?}");
        gcm.probe().unwrap();

        // The fallback mechanism on the same key; either device opens the other's blobs.
        let wrap = Pkcs11Hsm::open(&cfg("root", SealMechanism::AesKeyWrap), false).unwrap();
        let wrapped = wrap.seal(&root).unwrap();
        assert_eq!((wrapped[0], wrapped.len()), (TAG_WRAP, 41));
        assert_eq!(&wrap.unseal(&wrapped).unwrap()[..], &root);
        assert_eq!(&gcm.unseal(&wrapped).unwrap()[..], &root);
        assert_eq!(&wrap.unseal(&sealed).unwrap()[..], &root);
        let mut tampered = wrapped.clone();
        tampered[5] ^= 1;
        assert!(matches!(wrap.unseal(&tampered), Err(HsmError::WrongKey)));

        // Another key on the same token does not open them.
        let other = Pkcs11Hsm::open(&cfg("other", SealMechanism::Auto), true).unwrap();
        assert!(matches!(other.unseal(&sealed), Err(HsmError::WrongKey)));
        assert!(matches!(other.unseal(&wrapped), Err(HsmError::WrongKey)));

        // The inter-node seed: deterministic per key and context.
        let a = gcm.derive_seed(b"x").unwrap();
        assert_eq!(*a, *wrap.derive_seed(b"x").unwrap());
        assert_ne!(*a, *gcm.derive_seed(b"y").unwrap());
        assert_ne!(*a, *other.derive_seed(b"x").unwrap());

        // A wrong PIN is named as such. (A login holds for all of a process's sessions, so
        // close them first.)
        drop((gcm, wrap, other));
        std::fs::write(dir.join("pin"), "0000").unwrap();
        let err = Pkcs11Hsm::open(&cfg("root", SealMechanism::Auto), false)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("wrong PIN for PKCS#11 token 'unit'"),
            "{err}"
        );
        assert!(!err.contains("0000"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
