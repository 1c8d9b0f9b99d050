//! Identity names that can match a client: an identity is the lower-case hex SHA-256 of a
//! certificate's public key (spec §2.1), so anything else named as an identity (in the config
//! or the API) could never authenticate anyone. Upper-case hex is the same identity written
//! differently and is normalized to lower case; anything else is refused.

/// Why a string is not an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotAnIdentity(pub String);

impl std::fmt::Display for NotAnIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "'{}' is not an identity: an identity is 64 hex characters (the SHA-256 of a \
             certificate's public key, as `kes-node identity of` prints it)",
            self.0
        )
    }
}

impl std::error::Error for NotAnIdentity {}

/// The identity `s` names, in lower case, if it is 64 hex characters (either case).
pub(crate) fn normalize_identity(s: &str) -> Result<String, NotAnIdentity> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(NotAnIdentity(s.to_owned()))
    }
}

/// `s` in lower case if it is an identity written in upper or mixed case, else `s` unchanged
/// (for lookups that answer "does not exist" for anything that is not an identity).
pub(crate) fn lookup_form(s: &str) -> std::borrow::Cow<'_, str> {
    match normalize_identity(s) {
        Ok(id) if id != s => std::borrow::Cow::Owned(id),
        _ => std::borrow::Cow::Borrowed(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_64_hex_characters_normalized_to_lower_case() {
        let lower = "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22";
        assert_eq!(normalize_identity(lower).as_deref(), Ok(lower));
        assert_eq!(
            normalize_identity(&lower.to_ascii_uppercase()).as_deref(),
            Ok(lower)
        );
        for bad in [
            "",
            "disabled",
            &lower[..63],
            &format!("{lower}0"),
            &lower.replace('3', "g"),
        ] {
            let err = normalize_identity(bad).unwrap_err();
            assert!(err.to_string().contains("64 hex characters"), "{err}");
        }
        assert_eq!(lookup_form("not-an-identity"), "not-an-identity");
        assert_eq!(lookup_form(&lower.to_ascii_uppercase()), lower);
    }
}
