//! Parsing of the ciphertext framings accepted on decrypt (spec §8.3).
