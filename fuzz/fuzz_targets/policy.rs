//! Policy matching against a deliberately naive reference: the fuzzer builds a policy and a
//! path from its input; `kes_core::policy::verify` must agree with the reference, and
//! `is_subset` must be sound: if policy A is a subset of B, every path A allows B allows; and
//! it must agree with `is_subset_pairwise`, the subset rule applied as it reads.
#![no_main]
use libfuzzer_sys::fuzz_target;

/// The reference: a pattern ending in `*` matches by prefix, anything else exactly, the empty
/// pattern never; deny beats allow; nothing allowed means refused.
fn reference(allow: &[String], deny: &[String], path: &str) -> bool {
    let m = |p: &String| -> bool {
        if p.is_empty() {
            return false;
        }
        if let Some(prefix) = p.strip_suffix('*') {
            path.len() >= prefix.len() && &path.as_bytes()[..prefix.len()] == prefix.as_bytes()
        } else {
            p.as_str() == path
        }
    };
    !deny.iter().any(m) && allow.iter().any(m)
}

/// Splits fuzz input into small strings over a tiny alphabet, so collisions are likely.
fn strings(data: &[u8]) -> Vec<String> {
    const ALPHABET: &[u8] = b"/ab*";
    data.split(|b| *b == 0xff)
        .map(|chunk| {
            chunk
                .iter()
                .take(6)
                .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
                .collect()
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let parts = strings(data);
    if parts.len() < 2 {
        return;
    }
    let path = &parts[0];
    let rest = &parts[1..];
    let (a, b) = rest.split_at(rest.len() / 2);
    let (a_allow, a_deny) = a.split_at(a.len() / 2 + a.len() % 2);
    let (b_allow, b_deny) = b.split_at(b.len() / 2 + b.len() % 2);
    let verify = |allow: &[String], deny: &[String], p: &str| {
        kes_core::policy::verify(
            allow.iter().map(String::as_str),
            deny.iter().map(String::as_str),
            p,
        )
    };
    assert_eq!(
        verify(a_allow, a_deny, path),
        reference(a_allow, a_deny, path)
    );
    assert_eq!(
        verify(b_allow, b_deny, path),
        reference(b_allow, b_deny, path)
    );
    let subset = kes_core::policy::is_subset(
        a_allow.iter().map(String::as_str),
        a_deny.iter().map(String::as_str),
        b_allow.iter().map(String::as_str),
        b_deny.iter().map(String::as_str),
    );
    let pairwise = kes_core::policy::is_subset_pairwise(
        a_allow.iter().map(String::as_str),
        a_deny.iter().map(String::as_str),
        b_allow.iter().map(String::as_str),
        b_deny.iter().map(String::as_str),
    );
    assert_eq!(subset, pairwise, "A={a_allow:?}/{a_deny:?} B={b_allow:?}/{b_deny:?}");
    if subset && reference(a_allow, a_deny, path) {
        assert!(reference(b_allow, b_deny, path), "A ⊆ B but B refuses {path:?} that A allows: A={a_allow:?}/{a_deny:?} B={b_allow:?}/{b_deny:?}");
    }
});
