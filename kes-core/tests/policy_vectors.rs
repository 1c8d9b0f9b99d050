//! Policy vectors from upstream's Go client (`kes-vectors.md` §H1, §H2).
use kes_core::policy::{is_subset, verify};

struct P<'a> {
    allow: &'a [&'a str],
    deny: &'a [&'a str],
}

const EMPTY: P = P {
    allow: &[],
    deny: &[],
};

fn allowed(p: &P, path: &str) -> bool {
    verify(p.allow.iter().copied(), p.deny.iter().copied(), path)
}

fn subset(a: &P, b: &P) -> bool {
    is_subset(
        a.allow.iter().copied(),
        a.deny.iter().copied(),
        b.allow.iter().copied(),
        b.deny.iter().copied(),
    )
}

#[test]
fn h1_verify() {
    for path in ["/v1/status", "/v1/key/create/my-key", "/v1/identity/list/a"] {
        assert!(!allowed(&EMPTY, path), "{path}");
    }
    let status = P {
        allow: &["/v1/status"],
        deny: &[],
    };
    assert!(allowed(&status, "/v1/status"));
    assert!(!allowed(&status, "/v1/key/create/my-key"));
    assert!(!allowed(&status, "/v1/identity/list/a"));

    let two = P {
        allow: &["/v1/key/create/my*", "/v1/key/create/your*"],
        deny: &[],
    };
    assert!(allowed(&two, "/v1/key/create/my-key"));
    assert!(allowed(&two, "/v1/key/create/your-key"));
    assert!(!allowed(&two, "/v1/identity/list/somekey"));

    let deny = P {
        allow: two.allow,
        deny: &["/v1/key/create/my-key*"],
    };
    assert!(!allowed(&deny, "/v1/key/create/my-key"));
    assert!(!allowed(&deny, "/v1/key/create/my-key1"));
    assert!(allowed(&deny, "/v1/key/create/my-minio-key"));
    assert!(allowed(&deny, "/v1/key/create/your-minio-key"));
}

const OPS: [&str; 5] = [
    "/v1/key/create/*",
    "/v1/key/describe/*",
    "/v1/key/generate/*",
    "/v1/key/decrypt/*",
    "/v1/key/encrypt/*",
];

#[test]
fn h2_subset() {
    let create = P {
        allow: &["/v1/key/create/*"],
        deny: &[],
    };
    let create_deny_policy = P {
        allow: &["/v1/key/create/*"],
        deny: &["/v1/policy/create/*"],
    };
    let status = P {
        allow: &["/v1/status"],
        deny: &[],
    };
    // (A, B, A ⊆ B, A ≡ B) with ≡ meaning subset both ways.
    let cases: Vec<(P, P, bool, Option<bool>)> = vec![
        (EMPTY, EMPTY, true, Some(true)),
        (P { ..create }, P { ..create }, true, Some(true)),
        (P { ..create_deny_policy }, P { ..create_deny_policy }, true, Some(true)),
        (EMPTY, P { ..status }, true, Some(false)),
        (P { allow: &[], deny: &["/v1/status"] }, EMPTY, true, Some(true)),
        (P { allow: &["/v1/key/create/my-key", "/v1/key/create/foo*"], deny: &[] }, P { ..create }, true, Some(false)),
        (
            P { allow: &OPS, deny: &["/v1/key/create/internal*", "/v1/key/describe/internal*", "/v1/key/generate/internal*", "/v1/key/decrypt/internal*", "/v1/key/encrypt/internal*"] },
            P { allow: &OPS, deny: &["/v1/key/create/internal/*", "/v1/key/describe/internal/*", "/v1/key/generate/internal/*", "/v1/key/decrypt/internal/*", "/v1/key/encrypt/internal/*"] },
            true,
            Some(false),
        ),
        (
            P { allow: &["/v1/policy/describe/minio", "/v1/policy/show/minio", "/v1/policy/list/minio", "/v1/identity/delete/*"], deny: &["/v1/identity/delete/88*"] },
            P {
                allow: &["/v1/identity/create/*", "/v1/identity/describe/*", "/v1/identity/list/*", "/v1/identity/delete/*", "/v1/policy/describe/minio", "/v1/policy/show/minio", "/v1/policy/list/minio"],
                deny: &["/v1/identity/delete/88acf8c3220a69497f2fa1fc7f52f56b9ff2996402d9379a49fbaffe2b56fdfd"],
            },
            true,
            Some(false),
        ),
        (P { ..status }, EMPTY, false, None),
        (P { ..create }, P { allow: &["/v1/key/create/*"], deny: &["/v1/key/create/my-key"] }, false, None),
        (
            P { allow: &["/v1/key/create/*"], deny: &["/v1/key/create/internal*"] },
            P { allow: &["/v1/key/create/*"], deny: &["/v1/key/create/my-key"] },
            false,
            None,
        ),
        (
            P { allow: &["/v1/policy/describe/minio", "/v1/policy/show/minio", "/v1/policy/list/minio", "/v1/identity/delete/*"], deny: &["/v1/identity/delete/89*"] },
            P {
                allow: &["/v1/identity/create/*", "/v1/identity/describe/*", "/v1/identity/list/*", "/v1/identity/delete/*", "/v1/policy/describe/minio", "/v1/policy/show/minio", "/v1/policy/list/minio"],
                deny: &["/v1/identity/delete/88acf8c3220a69497f2fa1fc7f52f56b9ff2996402d9379a49fbaffe2b56fdfd"],
            },
            false,
            None,
        ),
    ];
    for (i, (a, b, sub, equal)) in cases.iter().enumerate() {
        assert_eq!(subset(a, b), *sub, "case {i}: A ⊆ B");
        if let Some(eq) = equal {
            assert_eq!(subset(a, b) && subset(b, a), *eq, "case {i}: A ≡ B");
        }
    }
    // kes@pr394 example: a child's allow set inside its parent's.
    let child = P {
        allow: &["/v1/key/describe/*", "/v1/key/generate/*"],
        deny: &[],
    };
    let parent = P {
        allow: &[
            "/v1/key/create/*",
            "/v1/key/describe/*",
            "/v1/key/generate/*",
            "/v1/key/decrypt/*",
            "/v1/policy/describe/minio",
            "/v1/policy/show/minio",
        ],
        deny: &[],
    };
    assert!(subset(&child, &parent));
}
