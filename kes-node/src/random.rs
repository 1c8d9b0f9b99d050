//! The node's source of randomness. kes-core never draws random bytes itself; everything it
//! needs comes from here.
//!
//! - [`fill`] / [`bytes`]: the operating system's CSPRNG, one syscall per call. Long-lived
//!   secrets (keys, root keys, identities) and everything off the request path use it.
//! - [`fill_fast`] / [`fast_bytes`]: a per-thread ChaCha20 generator seeded from the OS, for
//!   the request path (a data key and its ciphertext's IV and nonce per `generate`, an IV and
//!   nonce per `encrypt`): the syscall cost ~1.3 µs of the ~14 µs a request takes (issue 16).
//!   It is the "fast key erasure" construction (D. J. Bernstein, 2017): each refill runs
//!   ChaCha20 under the current key, the first 32 bytes of the keystream replace the key and
//!   the rest is handed out, each byte wiped as it leaves. So the state never holds anything
//!   from which bytes already handed out could be recomputed. The key is replaced by fresh
//!   OS randomness after every [`RESEED_AFTER`] bytes, and all of the state is wiped when its
//!   thread ends.
//!
//! Fork: a child forked without exec would share its parent's state and repeat its output.
//! kes-node never forks but to exec at once (`std::process::Command`: the child runs no Rust
//! code before the exec), so no process ever continues with a copy of the state.
use std::cell::RefCell;

use chacha20::cipher::{KeyIvInit, StreamCipher};
use zeroize::Zeroize;

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

/// `N` random bytes from this thread's generator (see the module doc).
pub(crate) fn fast_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    fill_fast(&mut b);
    b
}

/// Fills `buf` from this thread's generator (see the module doc); a request larger than one
/// refill's output goes to the OS.
pub(crate) fn fill_fast(buf: &mut [u8]) {
    if buf.len() > OUTPUT {
        return fill(buf);
    }
    FAST.with(|fast| fast.borrow_mut().get_or_insert_with(Fast::seeded).fill(buf));
}

/// Keystream bytes per refill: 32 become the next key, [`OUTPUT`] are handed out.
const BLOCK: usize = 512;
const OUTPUT: usize = BLOCK - 32;
/// Bytes handed out before the key is replaced by fresh OS randomness.
const RESEED_AFTER: u64 = 1 << 20;

thread_local! {
    static FAST: RefCell<Option<Fast>> = const { RefCell::new(None) };
}

/// One thread's generator. Its key and unused output are wiped on drop.
struct Fast {
    key: [u8; 32],
    /// Output not handed out yet: `out[used..]` (what is before `used` is wiped).
    out: [u8; OUTPUT],
    used: usize,
    /// Bytes produced since the key last came from the OS.
    since_seed: u64,
}

impl Fast {
    fn seeded() -> Fast {
        Fast {
            key: bytes(),
            out: [0; OUTPUT],
            used: OUTPUT,
            since_seed: 0,
        }
    }

    fn fill(&mut self, buf: &mut [u8]) {
        if OUTPUT - self.used < buf.len() {
            self.refill();
        }
        let out = &mut self.out[self.used..self.used + buf.len()];
        buf.copy_from_slice(out);
        out.zeroize();
        self.used += buf.len();
    }

    fn refill(&mut self) {
        if self.since_seed >= RESEED_AFTER {
            fill(&mut self.key);
            self.since_seed = 0;
        }
        let mut block = [0u8; BLOCK];
        // A key is used for exactly one keystream (it is replaced right away): nonce 0 is fine.
        chacha20::ChaCha20::new(&self.key.into(), &[0u8; 12].into()).apply_keystream(&mut block);
        self.key.copy_from_slice(&block[..32]);
        self.out.copy_from_slice(&block[32..]);
        block.zeroize();
        self.used = 0;
        self.since_seed += OUTPUT as u64;
    }
}

impl Drop for Fast {
    fn drop(&mut self) {
        self.key.zeroize();
        self.out.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte handed out is wiped from the state, the key changes at every refill, and
    /// draws do not repeat.
    #[test]
    fn output_leaves_the_state_and_the_key_moves_on() {
        let mut g = Fast::seeded();
        let a: [u8; 60] = {
            let mut b = [0; 60];
            g.fill(&mut b);
            b
        };
        let key = g.key;
        assert!(
            g.out[..60].iter().all(|&b| b == 0),
            "handed-out bytes stay in the state"
        );
        let mut b = [0u8; 60];
        g.fill(&mut b);
        assert_ne!(a, b);
        assert_eq!(g.key, key, "no refill needed yet");
        for _ in 0..OUTPUT / 60 {
            g.fill(&mut b);
        }
        assert_ne!(g.key, key, "a refill replaces the key");
        assert!(g.out[..g.used].iter().all(|&b| b == 0));
    }

    /// The key comes from the OS again after RESEED_AFTER bytes: the generator's next key is
    /// then not the one its keystream would have given.
    #[test]
    fn reseeds_from_the_os() {
        let mut g = Fast::seeded();
        g.since_seed = RESEED_AFTER;
        let before = g.key;
        let mut expected = [0u8; BLOCK];
        chacha20::ChaCha20::new(&before.into(), &[0u8; 12].into()).apply_keystream(&mut expected);
        g.refill();
        assert_eq!(g.since_seed, OUTPUT as u64);
        assert_ne!(g.key, expected[..32], "refilled without a reseed");
    }

    /// Two threads draw different bytes (each is seeded on its own).
    #[test]
    fn threads_are_seeded_apart() {
        let a: [u8; 32] = fast_bytes();
        let b: [u8; 32] = std::thread::spawn(fast_bytes).join().unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0; 32]);
    }
}
