//! Where the simulator's decisions come from: a seeded generator, or fuzz input bytes.

use alloc::vec::Vec;

/// SplitMix64: tiny, fast and good enough to drive a scheduler.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The scheduler's source of choices. With fuzz bytes, each choice consumes one byte; when the
/// bytes run out, `exhausted` turns true and choices come from a generator seeded by the input.
#[derive(Clone, Debug)]
pub struct Chooser {
    rng: Rng,
    bytes: Option<Vec<u8>>,
    pos: usize,
}

impl Chooser {
    /// Choices from a generator seeded with `seed`.
    pub fn seeded(seed: u64) -> Self {
        Chooser {
            rng: Rng::new(seed),
            bytes: None,
            pos: 0,
        }
    }
    /// Choices from `bytes` (fuzz input), then from a generator seeded by them.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let seed = bytes
            .iter()
            .fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(b as u64));
        Chooser {
            rng: Rng::new(seed),
            bytes: Some(bytes.to_vec()),
            pos: 0,
        }
    }
    /// Whether fuzz bytes were given and are used up.
    pub fn exhausted(&self) -> bool {
        self.bytes.as_ref().is_some_and(|b| self.pos >= b.len())
    }
    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if let Some(bytes) = &self.bytes {
            if let Some(&b) = bytes.get(self.pos) {
                self.pos += 1;
                return b as u64 % n;
            }
        }
        self.rng.next_u64() % n
    }
    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// Fresh randomness for a node (not from the fuzz bytes, which steer the schedule only).
    pub fn random(&mut self) -> u64 {
        self.rng.next_u64()
    }
}
