//! Test vectors for the crypto, SoftHSM and name modules, from `shared/vectors/kes-vectors.md`.
//!
//! - §A1: upstream's decryption table, including every case that must fail.
//! - §A2: intermediate values (subkeys) and the HChaCha20 self-check.
//! - §A3: the PR #394 example ciphertext.
//! - §A4: round trips for upstream's encryption inputs.
//! - §F:  deterministic ciphertexts (decrypted, and reproduced byte for byte), the HMAC vector
//!   and the SoftHSM derivations.
//! - §G:  the name and pattern tables.
//!
//! Only `SecretKey::encrypt`/`decrypt` need the `alloc` feature; everything else goes through
//! the buffer-based API, so this file runs with and without `--features alloc`.
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kes_core::crypto::{hchacha20, Cipher, DecryptError, HmacKey, SecretKey, OVERHEAD, RANDOM_LEN};
use kes_core::hsm::{derive_key, SoftHsm};
use kes_core::name::{valid_name, valid_pattern};

fn hex(s: &str) -> Vec<u8> {
    assert_eq!(s.len() % 2, 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn hex32(s: &str) -> [u8; 32] {
    hex(s).try_into().expect("32 bytes")
}

// kes-core's base64 dependency is built without `alloc`, so decode into slices.
fn b64(s: &str) -> Vec<u8> {
    let mut out = vec![0u8; s.len()];
    let n = B64.decode_slice(s, &mut out).expect("valid base64");
    out.truncate(n);
    out
}

fn b64_encode(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len().div_ceil(3) * 4];
    let n = B64.encode_slice(bytes, &mut out).unwrap();
    out.truncate(n);
    String::from_utf8(out).unwrap()
}

const Z32: [u8; 32] = [0; 32];
const K2: &str = "7431db4d6828f98877bbcd384980793b254ccba4622de258050b61d5fe8a9445";
const P16: [u8; 16] = [0; 16];
const P28: &str = "08b709a3290509664390422252af5b251ab00b05bd643bdd82ef0430";
const AD16: [u8; 16] = [0; 16];

fn k2() -> [u8; 32] {
    hex32(K2)
}

/// Decrypts through the buffer API with a buffer of exactly `ciphertext.len()` bytes.
fn dec(key: &SecretKey, ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>, DecryptError> {
    let mut buf = vec![0u8; ciphertext.len()];
    key.decrypt_into(ciphertext, aad, &mut buf)
        .map(<[u8]>::to_vec)
}

/// Encrypts through the buffer API.
fn enc(key: &SecretKey, random: &[u8; RANDOM_LEN], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; plaintext.len() + OVERHEAD];
    let n = key.encrypt_into(random, plaintext, aad, &mut out).unwrap();
    assert_eq!(n, out.len());
    out
}

/// A deterministic stand-in for the CSPRNG: 28 bytes from a counter.
fn random_from(seed: u64) -> [u8; RANDOM_LEN] {
    let mut r = [0u8; RANDOM_LEN];
    derive_key(&seed.to_le_bytes(), b"test random", &[], &mut r);
    r
}

// ---------------------------------------------------------------------------------------------
// §A1
// ---------------------------------------------------------------------------------------------

enum Ct {
    Text(&'static str),
    B64(&'static str),
}

struct A1 {
    cipher: Cipher,
    key: [u8; 32],
    ad: &'static [u8],
    ciphertext: Ct,
    plaintext: Option<Vec<u8>>,
}

fn a1_table() -> Vec<A1> {
    use Cipher::{Aes256 as A, ChaCha20 as C};
    use Ct::{Text, B64 as Raw};
    let p16 = || Some(P16.to_vec());
    let row = |cipher, key, ad, ciphertext, plaintext| A1 {
        cipher,
        key,
        ad,
        ciphertext,
        plaintext,
    };
    vec![
        // 0
        row(A, Z32, &[], Text(r#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#), p16()),
        // 1
        row(C, Z32, &[], Text(r#"{"aead":"ChaCha20Poly1305","iv":"s3fSZ6vk5m+DfQA8yZWeUg==","nonce":"8/kHMnCMs3h9NZ2a","bytes":"cw22HjLq/4cx8507SW4hhSrYbDiMuRao4b5+GE+XfbE="}"#), p16()),
        // 2
        row(C, Z32, &[], Text(r#"{"aead":"ChaCha20Poly1305","id":"66687aadf862bd776c8fc18b8e9f8e20","iv":"EC0eZp7Pqt+LnkOae5xaAg==","nonce":"X1ejXKmH/ugFZPkk","bytes":"wIGBTDs6aOvsqJfekZ0PYRT/OHyFX2TXqeNwl1SLXOI="}"#), p16()),
        // 3
        row(A, Z32, &[], Raw("lbFBRVMyNTYtR0NNX1NIQTI1NtkgNjY2ODdhYWRmODYyYmQ3NzZjOGZjMThiOGU5ZjhlMjDEEExv7LAd4oz0SaHZrX5LBufEDEKME1ow1CDfUFrqv8QgJuy7Sw+jVqz99TK1HV851LT3K4mwwDv46TB2ngWkAJQ="), p16()),
        // 4
        row(C, Z32, &[], Raw("lbJYQ0hBQ0hBMjAtUE9MWTEzMDXZIDY2Njg3YWFkZjg2MmJkNzc2YzhmYzE4YjhlOWY4ZTIwxBBAr+aptD4x2+qfOhiErbnkxAxYs8RmNC1JJXD1hiHEIJ2KqM0jjkME7ndx8nyVseesN83Np0rM5ejVUun+fNFu"), p16()),
        // 5
        row(A, Z32, &[], Raw("zwdDgHeRlIFRnJ7+DIhs/ka7GFK2CFSfDELqg1VCyTQzZ58o7MAdupMLk3ZjlMo2ZUDwldL2o41nAWDc"), p16()),
        // 6
        row(A, k2(), &AD16, Raw("s2gmfQHeGdlyL8x1yEWSACUV3GrSoz3t160hugMgzKWgyqesXDVUJ5Dw5Mt076rR1PNiU9X4YjLH14D8a81t2r2xsz4gVZac"), Some(hex(P28))),
        // 7
        row(C, k2(), &AD16, Raw("gO4woRIswAJdjUjW7z2ApsSQxJlwB24yjLrmH4eI7sB0uh5nfEJfk9ybTPFft5FRFaZCVBmzhx7OJs9n0WWtxH3sySIxecIK"), Some(hex(P28))),
        // 8: invalid algorithm
        row(A, Z32, &[], Text(r#"{"aead":"AES-256-GCM","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#), None),
        // 9: invalid IV length
        row(A, Z32, &[], Text(r#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"EjOY4JKqjIrPmQ5z1KSR8zlhggY=","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#), None),
        // 10: invalid nonce length
        row(C, Z32, &[], Text(r#"{"aead":"ChaCha20Poly1305","iv":"s3fSZ6vk5m+DfQA8yZWeUg==","nonce":"SXAbms731/c=","bytes":"cw22HjLq/4cx8507SW4hhSrYbDiMuRao4b5+GE+XfbE="}"#), None),
        // 11: invalid nonce length
        row(A, Z32, &[], Text(r#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"efY+4kYF9n8=","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#), None),
        // 12: not authentic
        row(A, Z32, &[], Text(r#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"QTza1g5oX3f9cGJMbY1xJwWPj1F7R2VnNl6XpFKYQy0="}"#), None),
        // 13: not authentic
        row(C, Z32, &[], Text(r#"{"aead":"ChaCha20Poly1305","iv":"s3fSZ6vk5m+DfQA8yZWeUg==","nonce":"8/kHMnCMs3h9NZ2a","bytes":"TTi8pkO+Jh1JWAHvPxZeUk/iVoBPUCE4ZSVGBy3fW2s="}"#), None),
        // 14: invalid JSON (missing comma)
        row(A, Z32, &[], Text(r#"{"aead":"AES-256-GCM-HMAC-SHA-256" "iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#), None),
    ]
}

fn ciphertext_bytes(ct: &Ct) -> Vec<u8> {
    match ct {
        Ct::Text(s) => s.as_bytes().to_vec(),
        Ct::B64(s) => b64(s),
    }
}

#[test]
fn a1_decrypt_table() {
    let table = a1_table();
    assert_eq!(table.len(), 15);
    for (i, v) in table.iter().enumerate() {
        let key = SecretKey::new(v.cipher, v.key);
        let got = dec(&key, &ciphertext_bytes(&v.ciphertext), v.ad);
        match &v.plaintext {
            Some(pt) => assert_eq!(got.as_ref(), Ok(pt), "A1 #{i} must decrypt"),
            None => assert!(got.is_err(), "A1 #{i} must fail, got {got:?}"),
        }
    }
}

#[test]
fn a1_successes_fail_with_wrong_key_ad_or_cipher() {
    for (i, v) in a1_table().iter().enumerate() {
        if v.plaintext.is_none() {
            continue;
        }
        let ct = ciphertext_bytes(&v.ciphertext);
        let other = match v.cipher {
            Cipher::Aes256 => Cipher::ChaCha20,
            Cipher::ChaCha20 => Cipher::Aes256,
        };
        let mut wrong = v.key;
        wrong[31] ^= 1;
        assert_eq!(
            dec(&SecretKey::new(v.cipher, wrong), &ct, v.ad),
            Err(DecryptError::NotAuthentic),
            "#{i} wrong key"
        );
        assert_eq!(
            dec(&SecretKey::new(other, v.key), &ct, v.ad),
            Err(DecryptError::NotAuthentic),
            "#{i} wrong cipher"
        );
        assert_eq!(
            dec(&SecretKey::new(v.cipher, v.key), &ct, b"other context"),
            Err(DecryptError::NotAuthentic),
            "#{i} wrong AD"
        );
    }
}

/// v0.22.3 checked the `id` against the key; master ignores it, and so do we.
#[test]
fn a1_json_id_is_ignored() {
    let ct = r#"{"aead":"AES-256-GCM-HMAC-SHA-256", "id":"00010203040506070809101112131415", "iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#;
    let key = SecretKey::new(Cipher::Aes256, Z32);
    assert_eq!(dec(&key, ct.as_bytes(), &[]).unwrap(), P16);
}

/// The key's cipher decides; the algorithm named in a legacy framing only has to be valid.
#[test]
fn legacy_algorithm_name_is_not_used() {
    let ct = r#"{"aead":"ChaCha20Poly1305","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#;
    let key = SecretKey::new(Cipher::Aes256, Z32);
    assert_eq!(dec(&key, ct.as_bytes(), &[]).unwrap(), P16);
}

/// Whitespace, field order and unknown fields do not matter to the JSON framing.
#[test]
fn legacy_json_layout_variants() {
    let key = SecretKey::new(Cipher::Aes256, Z32);
    let ct = "{ \"bytes\" : \"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc=\",\n \"extra\": [1, {\"x\": null}], \"nonce\":\"gu0mGwUkwcvMEoi5\", \"iv\":\"xLxIN3tSCkg2xMafuvwUwg==\", \"aead\":\"AES-256-GCM-HMAC-SHA-256\" }\n";
    assert_eq!(dec(&key, ct.as_bytes(), &[]).unwrap(), P16);
    // Trailing garbage makes it invalid JSON: raw fallback, which then fails.
    let bad = r#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}x"#;
    assert!(dec(&key, bad.as_bytes(), &[]).is_err());
    // Missing field.
    let missing = r#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#;
    assert!(dec(&key, missing.as_bytes(), &[]).is_err());
}

/// Builds a legacy msgpack ciphertext with the given algorithm text and element encodings.
fn msgpack(algorithm: &str, wide: bool, iv: &[u8], nonce: &[u8], sealed: &[u8]) -> Vec<u8> {
    let mut out = vec![0x95];
    let str_ = |out: &mut Vec<u8>, s: &[u8]| {
        if wide {
            out.push(0xda);
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        } else {
            out.push(0xd9);
            out.push(s.len() as u8);
        }
        out.extend_from_slice(s);
    };
    str_(&mut out, algorithm.as_bytes());
    str_(&mut out, b"66687aadf862bd776c8fc18b8e9f8e20");
    for b in [iv, nonce, sealed] {
        if wide {
            out.push(0xc6);
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        } else {
            out.push(0xc4);
            out.push(b.len() as u8);
        }
        out.extend_from_slice(b);
    }
    out
}

#[test]
fn legacy_msgpack_variants() {
    // A2 #3, decoded: AES256 under Z32.
    let iv = hex("4c6fecb01de28cf449a1d9ad7e4b06e7");
    let nonce = hex("428c135a30d420df505aeabf");
    let sealed = hex("26ecbb4b0fa356acfdf532b51d5f39d4b4f72b89b0c03bf8e930769e05a40094");
    let key = SecretKey::new(Cipher::Aes256, Z32);
    for alg in [
        "AES256-GCM_SHA256",
        "AES256",
        "ChaCha20",
        "XCHACHA20-POLY1305",
    ] {
        for wide in [false, true] {
            let ct = msgpack(alg, wide, &iv, &nonce, &sealed);
            assert_eq!(dec(&key, &ct, &[]).unwrap(), P16, "{alg} wide={wide}");
        }
    }
    // Unknown algorithm, trailing byte, wrong iv size: not the msgpack framing, and as raw
    // bytes they do not authenticate.
    assert!(dec(
        &key,
        &msgpack("AES-256-GCM", false, &iv, &nonce, &sealed),
        &[]
    )
    .is_err());
    let mut trailing = msgpack("AES256", false, &iv, &nonce, &sealed);
    trailing.push(0);
    assert!(dec(&key, &trailing, &[]).is_err());
    assert!(dec(
        &key,
        &msgpack("AES256", false, &iv[..15], &nonce, &sealed),
        &[]
    )
    .is_err());
}

// ---------------------------------------------------------------------------------------------
// §A2
// ---------------------------------------------------------------------------------------------

#[test]
fn a2_subkeys() {
    let cases: [(Cipher, [u8; 32], Vec<u8>, &str); 6] = [
        (
            Cipher::Aes256,
            Z32,
            b64("xLxIN3tSCkg2xMafuvwUwg=="),
            "488d8bec90916337c3d44f68ff24dd3abd21e36c52905e8a5d6a54d14949def8",
        ),
        (
            Cipher::ChaCha20,
            Z32,
            b64("s3fSZ6vk5m+DfQA8yZWeUg=="),
            "e25c22e98dd69b98b2dced7aa861f5625958730e0411adcc7f38b24dcdfd8fed",
        ),
        (
            Cipher::Aes256,
            Z32,
            hex("33679f28ecc01dba930b93766394ca36"),
            "80ebfc99a687d9377850d80a16b2b1d185beb953349212d44638bba321661f6a",
        ),
        (
            Cipher::Aes256,
            k2(),
            hex("74efaad1d4f36253d5f86232c7d780fc"),
            "b02a332a8bca69686dba3a983c0334944f380951281ea3a222373996a5a0a97f",
        ),
        (
            Cipher::ChaCha20,
            k2(),
            hex("5fb7915115a6425419b3871ece26cf67"),
            "33c9d554900c9205af5c734019603b89206079233ff7c8acef7b5ea7a0e9e461",
        ),
        // §A3
        (
            Cipher::Aes256,
            hex32("8612a2d23764284e0da438de559a3d8162983ab574ec69f95c1aeed6a4e1077d"),
            hex("84f9d2c1433028a59231e26f9ec0c1cd"),
            "c862f06c671e11c44b54f7c710c1dd0c3376f1d9808904b6470533895c6fba50",
        ),
    ];
    for (cipher, key, iv, want) in cases {
        let key = SecretKey::new(cipher, key);
        let iv: [u8; 16] = iv.try_into().unwrap();
        assert_eq!(*key.subkey(&iv), hex32(want), "{cipher:?} iv {iv:02x?}");
    }
}

#[test]
fn a2_hchacha20_self_check() {
    let key: [u8; 32] = core::array::from_fn(|i| i as u8);
    let input: [u8; 16] = hex("000000090000004a0000000031415927").try_into().unwrap();
    assert_eq!(
        *hchacha20(&key, &input),
        hex32("82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc")
    );
}

#[test]
fn a2_hex_dumps_match_a1() {
    // The msgpack and raw hex dumps are the same bytes as the base64 in A1.
    let table = a1_table();
    let dumps = [
        (3, "95b14145533235362d47434d5f534841323536d9203636363837616164663836326264373736633866633138623865396638653230c4104c6fecb01de28cf449a1d9ad7e4b06e7c40c428c135a30d420df505aeabfc42026ecbb4b0fa356acfdf532b51d5f39d4b4f72b89b0c03bf8e930769e05a40094"),
        (4, "95b25843484143484132302d504f4c5931333035d9203636363837616164663836326264373736633866633138623865396638653230c41040afe6a9b43e31dbea9f3a1884adb9e4c40c58b3c466342d492570f58621c4209d8aa8cd238e4304ee7771f27c95b1e7ac37cdcda74acce5e8d552e9fe7cd16e"),
        (5, "cf07438077919481519c9efe0c886cfe46bb1852b608549f0c42ea835542c93433679f28ecc01dba930b93766394ca366540f095d2f6a38d670160dc"),
        (6, "b368267d01de19d9722fcc75c84592002515dc6ad2a33dedd7ad21ba0320cca5a0caa7ac5c35542790f0e4cb74efaad1d4f36253d5f86232c7d780fc6bcd6ddabdb1b33e2055969c"),
        (7, "80ee30a1122cc0025d8d48d6ef3d80a6c490c49970076e328cbae61f8788eec074ba1e677c425f93dc9b4cf15fb7915115a6425419b3871ece26cf67d165adc47decc9223179c20a"),
    ];
    for (i, dump) in dumps {
        assert_eq!(ciphertext_bytes(&table[i].ciphertext), hex(dump), "A1 #{i}");
    }
}

// ---------------------------------------------------------------------------------------------
// §A3
// ---------------------------------------------------------------------------------------------

#[test]
fn a3_pr394_example() {
    let key = SecretKey::new(
        Cipher::Aes256,
        hex32("8612a2d23764284e0da438de559a3d8162983ab574ec69f95c1aeed6a4e1077d"),
    );
    let ct = hex("6a3912cfee99ca51c12004f8fb3ea912b45966f3e5e33cd886993084f9d2c1433028a59231e26f9ec0c1cd2426a97d4cc9988ba968b9b0");
    assert_eq!(dec(&key, &ct, &[]).unwrap(), b"Hello World");
}

// ---------------------------------------------------------------------------------------------
// §A4
// ---------------------------------------------------------------------------------------------

/// (cipher, key, plaintext, associated data)
type A4Input = (Cipher, [u8; 32], Vec<u8>, Vec<u8>);

/// Every §A4 input; the v0.22.3 ones under both ciphers.
fn a4_inputs() -> Vec<A4Input> {
    let mut v = vec![
        (Cipher::Aes256, Z32, P16.to_vec(), vec![]),
        (Cipher::Aes256, k2(), P16.to_vec(), vec![]),
        (Cipher::Aes256, k2(), hex(P28), AD16.to_vec()),
        (Cipher::ChaCha20, k2(), hex(P28), AD16.to_vec()),
    ];
    let wrap: [(usize, Vec<u8>); 7] = [
        (0, vec![]),
        (1, vec![]),
        (16, vec![]),
        (32, vec![0xff]),
        (128, vec![0; 1024]),
        (1024, hex("a2e31cb681f3")),
        (63, hex("cb653b4c5426e0d41f5ae673ffa0f659")),
    ];
    for cipher in [Cipher::Aes256, Cipher::ChaCha20] {
        for (len, ad) in &wrap {
            v.push((cipher, Z32, vec![0; *len], ad.clone()));
        }
    }
    v
}

#[test]
fn a4_round_trips() {
    for (i, (cipher, key, pt, ad)) in a4_inputs().into_iter().enumerate() {
        let key = SecretKey::new(cipher, key);
        let ct = enc(&key, &random_from(i as u64), &pt, &ad);
        assert_eq!(ct.len(), pt.len() + OVERHEAD);
        assert_eq!(dec(&key, &ct, &ad).unwrap(), pt, "input {i}");
        // Every single-bit flip is detected.
        for pos in [0, ct.len() / 2, ct.len() - 1] {
            let mut bad = ct.clone();
            bad[pos] ^= 0x80;
            assert!(dec(&key, &bad, &ad).is_err(), "input {i} flip at {pos}");
        }
    }
}

#[cfg(feature = "alloc")]
#[test]
fn a4_round_trips_alloc() {
    for (i, (cipher, key, pt, ad)) in a4_inputs().into_iter().enumerate() {
        let key = SecretKey::new(cipher, key);
        let random = random_from(1000 + i as u64);
        let ct = key.encrypt(&random, &pt, &ad);
        assert_eq!(ct, enc(&key, &random, &pt, &ad));
        assert_eq!(key.decrypt(&ct, &ad).unwrap(), pt, "input {i}");
        assert_eq!(key.decrypt(&ct, b"x"), Err(DecryptError::NotAuthentic));
    }
}

#[test]
fn nil_and_empty_ad_are_equal() {
    // Upstream treats a nil and an empty context alike; here both are `&[]`, and a context of
    // one zero byte is different.
    let key = SecretKey::new(Cipher::ChaCha20, k2());
    let ct = enc(&key, &random_from(7), b"data", &[]);
    assert_eq!(dec(&key, &ct, b"").unwrap(), b"data");
    assert!(dec(&key, &ct, &[0]).is_err());
}

// ---------------------------------------------------------------------------------------------
// Buffer handling and malformed inputs
// ---------------------------------------------------------------------------------------------

#[test]
fn buffer_sizes() {
    let key = SecretKey::new(Cipher::Aes256, Z32);
    let random = random_from(1);
    let mut small = [0u8; 16 + OVERHEAD - 1];
    assert_eq!(
        key.encrypt_into(&random, &P16, &[], &mut small),
        Err(DecryptError::BufferTooSmall)
    );
    // A larger output buffer is fine; only the first bytes are written.
    let mut big = [0u8; 128];
    let n = key.encrypt_into(&random, &P16, &[], &mut big).unwrap();
    assert_eq!(n, 16 + OVERHEAD);
    let ct = &big[..n];
    let mut buf = [0u8; 16 + OVERHEAD - 1];
    assert_eq!(
        key.decrypt_into(ct, &[], &mut buf),
        Err(DecryptError::BufferTooSmall)
    );
    let mut buf = [0u8; 200];
    assert_eq!(key.decrypt_into(ct, &[], &mut buf).unwrap(), P16);
}

#[test]
fn empty_plaintext() {
    for cipher in [Cipher::Aes256, Cipher::ChaCha20] {
        let key = SecretKey::new(cipher, k2());
        let ct = enc(&key, &random_from(3), &[], b"ctx");
        assert_eq!(ct.len(), OVERHEAD);
        assert_eq!(dec(&key, &ct, b"ctx").unwrap(), b"");
    }
}

#[test]
fn too_short_is_malformed() {
    let key = SecretKey::new(Cipher::Aes256, Z32);
    for len in [0, 1, 28, 29, 43] {
        assert_eq!(
            dec(&key, &vec![0u8; len], &[]),
            Err(DecryptError::Malformed),
            "len {len}"
        );
    }
    // Legacy framings that parse but whose `bytes` is shorter than a tag.
    let json = r#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"AAAA"}"#;
    assert_eq!(
        dec(&key, json.as_bytes(), &[]),
        Err(DecryptError::Malformed)
    );
    let mp = msgpack("AES256", false, &[0; 16], &[0; 12], &[]);
    assert_eq!(dec(&key, &mp, &[]), Err(DecryptError::Malformed));
}

/// About 2/256 of raw ciphertexts start with `{` or 0x95; they must not be mistaken for a
/// legacy framing.
#[test]
fn raw_ciphertext_starting_like_a_legacy_framing() {
    for cipher in [Cipher::Aes256, Cipher::ChaCha20] {
        let key = SecretKey::new(cipher, k2());
        for first in [0x7b, 0x95] {
            let plaintext = b"{\"aead\": not really JSON";
            let (seed, ct) = (0u64..100_000)
                .map(|seed| (seed, enc(&key, &random_from(seed), plaintext, b"ad")))
                .find(|(_, ct)| ct[0] == first)
                .expect("a matching first byte within 100000 tries");
            assert_eq!(
                dec(&key, &ct, b"ad").unwrap(),
                plaintext,
                "{cipher:?} first byte {first:#x} (seed {seed})"
            );
        }
        // Also with an empty plaintext, where the first byte is a tag byte.
        let (_, ct) = (0u64..100_000)
            .map(|seed| (seed, enc(&key, &random_from(seed), &[], &[])))
            .find(|(_, ct)| ct[0] == 0x95)
            .unwrap();
        assert_eq!(dec(&key, &ct, &[]).unwrap(), b"");
    }
}

// ---------------------------------------------------------------------------------------------
// §F
// ---------------------------------------------------------------------------------------------

fn f_random() -> [u8; RANDOM_LEN] {
    let mut r = [0u8; RANDOM_LEN];
    r[..16].copy_from_slice(&hex("000102030405060708090a0b0c0d0e0f"));
    r[16..].copy_from_slice(&hex("101112131415161718191a1b"));
    r
}

#[test]
fn f_deterministic_ciphertexts() {
    let cases = [
        (
            Cipher::Aes256,
            "06cb247ac322e5b5d42bf332f3d1c6b29c74d0282849531babf2c4000102030405060708090a0b0c0d0e0f101112131415161718191a1b",
            "BsskesMi5bXUK/My89HGspx00CgoSVMbq/LEAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==",
        ),
        (
            Cipher::ChaCha20,
            "893a78eef74e5ec1903fa7ce8b51b5bb55fd13b195c18f7f7e289c000102030405060708090a0b0c0d0e0f101112131415161718191a1b",
            "iTp47vdOXsGQP6fOi1G1u1X9E7GVwY9/fiicAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==",
        ),
    ];
    for (cipher, want_hex, want_b64) in cases {
        let key = SecretKey::new(cipher, Z32);
        let want = hex(want_hex);
        assert_eq!(b64(want_b64), want);
        assert_eq!(dec(&key, &want, b"my-context").unwrap(), b"Hello World");
        assert_eq!(
            enc(&key, &f_random(), b"Hello World", b"my-context"),
            want,
            "{cipher:?}"
        );
        assert!(dec(&key, &want, b"").is_err());
    }
}

#[cfg(feature = "alloc")]
#[test]
fn f_deterministic_ciphertexts_alloc() {
    let key = SecretKey::new(Cipher::ChaCha20, Z32);
    let want = hex("893a78eef74e5ec1903fa7ce8b51b5bb55fd13b195c18f7f7e289c000102030405060708090a0b0c0d0e0f101112131415161718191a1b");
    assert_eq!(
        key.encrypt(&f_random(), b"Hello World", b"my-context"),
        want
    );
    assert_eq!(key.decrypt(&want, b"my-context").unwrap(), b"Hello World");
}

#[test]
fn f_hmac() {
    let key = HmacKey::new(hex32(
        "9cb5e5e32a9ae1c8d94dc49bb14eac36737c90ff40456917c1adb461065af478",
    ));
    let mac = key.sign(b"Hello World");
    assert_eq!(
        mac,
        hex32("ca30097dd549ceb5cb4748739af12c8a0df309d0dbc74d6792e90a56d06ee8e0")
    );
    assert_eq!(
        b64_encode(&mac),
        "yjAJfdVJzrXLR0hzmvEsig3zCdDbx01nkukKVtBu6OA="
    );
}

/// (HSM key string, root-seal subkey, API-key seed)
const SOFT_HSM: [(&str, &str, &str); 3] = [
    (
        "kes:v1:aes256:H2BFEgK48Mr4KfuBkxUFJJJNn8f+J0ugpn43ZYJfw30=",
        "78b8aaf133074e49c8cd9d0118c0ddec440021c0e73f4167dd1c9731ff226d01",
        "25b929e7f66681b9cb2a8e9b70449889c599917b00075663ffe252a125034422",
    ),
    (
        "kes:v1:chacha20:OYmWIhY6iZAMOqNt610dqit5j/NuZNZc71+XreVdwug=",
        "3073b14ddaf5d55ea10ce2c6484596279263ce3d2e1eb1415c6f88300fe83748",
        "7a1d9c4b27890fdcc594e65b9adb45a89c72526ac225ad781df72ea25c4c6dc3",
    ),
    (
        "kes:v1:aes256:OBwNvb9qloQi235KindURBuSqArJzWN6JaYKUZHIyPY=",
        "16e7d57a092e68c2670228b882d68b0acda92686d00c673f26828c91d1316f16",
        "5fd57be87c37f67d2a313904dca5e0a99001ef1c02f0e7710e47cbcb471b0790",
    ),
];

#[test]
fn f_soft_hsm_derivations() {
    for (s, seal, seed) in SOFT_HSM {
        let hsm = SoftHsm::parse(s).unwrap();
        let want_cipher = if s.contains("chacha20") {
            Cipher::ChaCha20
        } else {
            Cipher::Aes256
        };
        assert_eq!(hsm.cipher(), want_cipher);
        let seal_key = hsm.seal_key();
        assert_eq!(seal_key.cipher(), want_cipher);
        assert_eq!(*seal_key.as_bytes(), hex32(seal), "{s}");
        assert_eq!(hsm.api_key_seed(&[]), hex32(seed), "{s}");
        assert_ne!(hsm.api_key_seed(b"other"), hex32(seed));
        assert_eq!(hsm.encode().as_str(), s);
        // Whitespace around the key is ignored.
        let padded = format!("  {s}\n");
        assert_eq!(SoftHsm::parse(&padded).unwrap().encode().as_str(), s);
    }
}

/// The cluster API keys of the §F table are `kes:v1:` + base64(0x00 || seed); the leading
/// zero byte marks an Ed25519 key. (The identities need Ed25519 and are kes-node's to check.)
#[test]
fn f_soft_hsm_api_key_encoding() {
    let api_keys = [
        "kes:v1:ACW5Kef2ZoG5yyqOm3BEmInFmZF7AAdWY//iUqElA0Qi",
        "kes:v1:AHodnEsniQ/cxZTmW5rbRaicclJqwiWteB33LqJcTG3D",
        "kes:v1:AF/Ve+h8N/Z9KjE5BNyl4KmQAe8cAvDncQ5Hy8tHGweQ",
    ];
    for ((hsm, _, _), api_key) in SOFT_HSM.iter().zip(api_keys) {
        let seed = SoftHsm::parse(hsm).unwrap().api_key_seed(&[]);
        let decoded = b64(api_key.strip_prefix("kes:v1:").unwrap());
        assert_eq!(decoded[0], 0);
        assert_eq!(decoded[1..], seed, "{hsm}");
    }
}

#[test]
fn f_derive_key_single_block() {
    // Row 1 of the table: one HMAC block over 01000000 || label || 00 || context || 20000000.
    let k = hex("1f60451202b8f0caf829fb8193150524924d9fc7fe274ba0a67e3765825fc37d");
    let mut out = [0u8; 32];
    derive_key(&k, b"kes:v1:root_key", &[], &mut out);
    assert_eq!(out, hex32(SOFT_HSM[0].1));
    derive_key(&k, b"kes:v1:api_key", &[], &mut out);
    assert_eq!(out, hex32(SOFT_HSM[0].2));
    // A shorter output is not a prefix: the length is part of the input.
    let mut short = [0u8; 16];
    derive_key(&k, b"kes:v1:api_key", &[], &mut short);
    assert_ne!(short[..], out[..16]);
}

#[test]
fn soft_hsm_seal_unseal() {
    let root_key = hex(K2);
    for (i, (s, _, _)) in SOFT_HSM.iter().enumerate() {
        let hsm = SoftHsm::parse(s).unwrap();
        let mut sealed = [0u8; 32 + OVERHEAD];
        let n = hsm
            .seal(&random_from(i as u64), &root_key, &mut sealed)
            .unwrap();
        assert_eq!(n, sealed.len());
        // The sealed bytes are an ordinary ciphertext under the seal key, without AD.
        assert_eq!(dec(&hsm.seal_key(), &sealed, &[]).unwrap(), root_key);
        let mut buf = [0u8; 32 + OVERHEAD];
        assert_eq!(hsm.unseal(&sealed, &mut buf).unwrap(), &root_key[..]);

        // Every other HSM key fails to unseal.
        for (j, (other, _, _)) in SOFT_HSM.iter().enumerate() {
            if i != j {
                let other = SoftHsm::parse(other).unwrap();
                assert_eq!(
                    other.unseal(&sealed, &mut buf),
                    Err(DecryptError::NotAuthentic)
                );
            }
        }
        // So does the same key bytes with the other cipher, and a tampered ciphertext.
        let flipped = if s.contains("aes256") {
            s.replace("aes256", "chacha20")
        } else {
            s.replace("chacha20", "aes256")
        };
        let other = SoftHsm::parse(&flipped).unwrap();
        assert!(other.unseal(&sealed, &mut buf).is_err());
        let mut bad = sealed;
        bad[0] ^= 1;
        assert!(hsm.unseal(&bad, &mut buf).is_err());
    }
}

#[test]
fn soft_hsm_from_key_round_trip() {
    let hsm = SoftHsm::from_key(SecretKey::new(Cipher::ChaCha20, k2()));
    let text = hsm.encode();
    assert!(text.starts_with("kes:v1:chacha20:"));
    let again = SoftHsm::parse(&text).unwrap();
    assert_eq!(*again.seal_key().as_bytes(), *hsm.seal_key().as_bytes());
    assert_eq!(again.api_key_seed(b"x"), hsm.api_key_seed(b"x"));
}

// ---------------------------------------------------------------------------------------------
// §G
// ---------------------------------------------------------------------------------------------

#[test]
fn g1_valid_name() {
    let long = "a".repeat(81);
    for s in [
        "my-key",
        "abc123",
        "0",
        "123ABC321",
        "_-___---_",
        "_0",
        "0-Z",
        "my_key-0",
    ] {
        assert!(valid_name(s), "{s:?} must be a valid name");
    }
    for s in [
        "",
        "my.key",
        "key/",
        "",
        "☰",
        "hel<lo",
        "Εmacs",
        long.as_str(),
    ] {
        assert!(!valid_name(s), "{s:?} must be an invalid name");
    }
    // Beyond the table: spec §4.1.
    for s in ["_", "-", "-a", "a-", "*", "a*", &"a".repeat(80)] {
        assert_eq!(valid_name(s), s.len() == 80, "{s:?}");
    }
}

#[test]
fn g2_valid_pattern() {
    let long = "a".repeat(81);
    for s in [
        "my-key",
        "abc123",
        "0",
        "123ABC321",
        "_-___---_",
        "_0",
        "0-Z",
        "*",
        "my*",
        "_-*",
        "",
    ] {
        assert!(valid_pattern(s), "{s:?} must be a valid pattern");
    }
    for s in [
        "*-*",
        "my.key",
        "key/",
        "☰",
        "hel<lo",
        "Εmacs",
        long.as_str(),
    ] {
        assert!(!valid_pattern(s), "{s:?} must be an invalid pattern");
    }
    // Beyond the table: spec §4.1 and §0.1 (`app-` observed on a real server).
    for s in ["_", "app-", "-", "-*", "**", "a*b", "my key"] {
        assert!(!valid_pattern(s), "{s:?} must be an invalid pattern");
    }
    for s in [
        "a-*",
        "_*",
        "__",
        &"a".repeat(80),
        &format!("{}*", "a".repeat(79)),
    ] {
        assert!(valid_pattern(s), "{s:?} must be a valid pattern");
    }
    assert!(!valid_pattern(&format!("{}*", "a".repeat(80))));
}
