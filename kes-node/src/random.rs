//! The node's source of randomness: the operating system's CSPRNG. kes-core never draws random
//! bytes itself; everything it needs comes from here.

/// Fills `buf` with random bytes from the OS. Aborts the process if the OS cannot provide them:
/// continuing without randomness would produce predictable keys.
pub(crate) fn fill(buf: &mut [u8]) {
    if let Err(err) = getrandom::getrandom(buf) {
        eprintln!("kes-node: the operating system's random number generator failed: {err}");
        std::process::abort();
    }
}

/// `N` random bytes.
pub(crate) fn bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    fill(&mut b);
    b
}
