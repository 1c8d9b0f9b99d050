//! Differential fuzzing of `valid_name` / `valid_pattern` against a deliberately different
//! reference: the rules of spec §4.1 written with `str` methods instead of an index scan.
//!
//! Arbitrary bytes rarely form an interesting name, so each input is checked twice: as UTF-8
//! text (if it is) and mapped byte by byte onto a small alphabet of the characters that matter
//! (letters, digits, `_`, `-`, `*`, and a few invalid ones).
#![no_main]
use kes_core::name::{valid_name, valid_pattern};
use libfuzzer_sys::fuzz_target;

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn reference_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 80
        && s != "_"
        && s.chars().all(allowed)
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn reference_pattern(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    // At most one `*`, and only at the very end; the empty pattern is valid.
    let body = s.strip_suffix('*').unwrap_or(s);
    s.len() <= 80
        && s != "_"
        && body.chars().all(allowed)
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn check(s: &str) {
    let name = valid_name(s);
    let pattern = valid_pattern(s);
    assert_eq!(name, reference_name(s), "valid_name({s:?})");
    assert_eq!(pattern, reference_pattern(s), "valid_pattern({s:?})");
    // Every name is also a pattern that lists exactly that name.
    assert!(!name || pattern, "name {s:?} is not a valid pattern");
}

const ALPHABET: &[char] = &['a', 'Z', '0', '9', '_', '-', '*', '.', '/', 'é'];

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = core::str::from_utf8(data) {
        check(s);
    }
    let mapped: String = data
        .iter()
        .map(|&b| ALPHABET[usize::from(b) % ALPHABET.len()])
        .collect();
    check(&mapped);
});
