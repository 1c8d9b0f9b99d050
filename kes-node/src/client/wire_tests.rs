//! The client against a scripted TLS server: response framing (length, chunks, end of
//! connection), keep-alive reuse, the retry on a connection the server closed while idle, the
//! enclave header, a streamed log, a call's deadline against a server that drips its answer, and
//! the failover that stops at a write whose outcome is unknown.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};

use super::*;

/// What the scripted server does with one request.
struct Answer {
    bytes: Vec<u8>,
    /// Close the connection after answering.
    close: bool,
    /// Send the answer's TLS bytes one at a time, 20 ms apart.
    drip: bool,
}

fn answer(bytes: &str) -> Answer {
    Answer {
        bytes: bytes.as_bytes().to_vec(),
        close: false,
        drip: false,
    }
}

fn json_ok(body: &str) -> Answer {
    answer(&format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// A `503` with the KES error body.
fn unavailable(message: &str) -> Answer {
    let body = serde_json::json!({ "message": message }).to_string();
    answer(&format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// The script: request line and headers in, answer out.
fn script(method: &str, path: &str, head: &str, body: &[u8]) -> Answer {
    match (method, path) {
        ("GET", "/version") => json_ok("{\"version\":\"v1\",\"commit\":\"c\"}\n"),
        ("GET", "/v1/key/describe/chunked") => answer(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
             8\r\n{\"name\":\r\n\
             13;ext=1\r\n\"chunked\",\"algorith\r\n\
             d\r\nm\":\"AES256\"}\n\r\n\
             0\r\nX-Trailer: t\r\n\r\n",
        ),
        ("PUT", "/v1/key/create/lost") => unavailable(
            "cluster: the connection to the leader (node 2) broke before it answered; the \
             write may or may not have been made: check before retrying",
        ),
        // Cut off after the request arrived: no answer at all.
        ("PUT", "/v1/key/create/cut") | ("PUT", "/v1/key/generate/cut") => Answer {
            close: true,
            ..answer("")
        },
        ("PUT", "/v1/key/create/busy") => unavailable(
            "cluster: the leader (node 2) is unreachable; retry",
        ),
        ("GET", "/v1/key/describe/missing") => answer(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 33\r\n\r\n\
             {\"message\":\"key does not exist\"\n}",
        ),
        ("GET", "/v1/key/describe/moved") => answer(
            "HTTP/1.1 301 Moved Permanently\r\nLocation: /elsewhere/\r\nContent-Length: 0\r\n\r\n",
        ),
        ("GET", "/v1/status") => Answer {
            close: true,
            ..answer(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\n\r\n\
                 {\"version\":\"v1\",\"uptime\":42}\n",
            )
        },
        // About 450 bytes of TLS, a byte every 20 ms: complete after some 9 s.
        ("GET", "/v1/key/describe/drip") => Answer {
            drip: true,
            ..json_ok(&format!("{{\"name\":\"drip\",\"pad\":\"{}\"}}", "x".repeat(300)))
        },
        // Answers, then closes as a server does when a kept connection idles too long.
        ("GET", "/v1/metrics") => Answer {
            close: true,
            ..answer("HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nmetrics\n")
        },
        ("PUT", "/v1/key/hmac/k") => {
            // Echo the enclave header as the "MAC", and check the body.
            let body: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(body["message"], "bXNn");
            let enclave = head
                .lines()
                .find_map(|l| l.strip_prefix("Kes-Enclave: "))
                .unwrap_or("");
            json_ok(&format!("{{\"hmac\":\"{}\"}}\n", b64(enclave.as_bytes())))
        }
        ("GET", "/v1/log/audit") => answer(
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n\
             c\r\n{\"a\":1}\n{\"a\"\r\n\
             4\r\n:2}\n\r\n\
             9\r\n\n{\"a\":3}\n\r\n\
             0\r\n\r\n",
        ),
        // A paging server: the second page repeats the last name of the first.
        ("GET", "/v1/key/list/p") => json_ok("{\"names\":[\"p1\",\"p2\"],\"continue_at\":\"p3\"}"),
        ("GET", "/v1/key/list/p3") => json_ok("{\"names\":[\"p2\",\"p3\",\"p4\"],\"continue_at\":\"\"}"),
        // A server that keeps saying "more" without bringing anything new.
        ("GET", "/v1/key/list/loop") => json_ok("{\"names\":[\"loop1\"],\"continue_at\":\"loop2\"}"),
        ("GET", "/v1/key/list/loop2") => json_ok("{\"names\":[\"loop1\"],\"continue_at\":\"loop3\"}"),
        // Servers before v0.23 listed as ndjson.
        ("GET", "/v1/policy/list/*") => {
            let body = "{\"name\":\"b\"}\n{\"name\":\"a\"}\n";
            answer(&format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ))
        }
        ("GET", "/v1/identity/list/*") => {
            let body = "{\"identity\":\"i1\"}\n{\"error\":\"failed to list identities\"}\n";
            answer(&format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ))
        }
        _ => answer("HTTP/1.1 404 Not Found\r\nContent-Length: 19\r\n\r\n404 page not found\n"),
    }
}

struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    roots: Arc<RootCertStore>,
}

fn start() -> Scripted {
    let (cert_pem, key_pem) =
        crate::identity::self_signed_server_pem(&["127.0.0.1".to_owned()]).unwrap();
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let config = Arc::new(
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            let config = config.clone();
            std::thread::spawn(move || serve(config, tcp));
        }
    });
    Scripted {
        addr,
        accepted,
        roots: Arc::new(roots),
    }
}

fn serve(config: Arc<ServerConfig>, tcp: TcpStream) {
    let conn = ServerConnection::new(config).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut tmp = [0u8; 4096];
            match tls.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut tmp = [0u8; 4096];
            match tls.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        let mut words = head.split_whitespace();
        let (method, path) = (words.next().unwrap(), words.next().unwrap());
        let reply = script(method, path, &head, &body);
        if reply.drip {
            // Encrypted first, then written to the socket a byte at a time: the client's
            // rustls never has a whole record, and keeps reading inside one read call.
            let mut raw = Vec::new();
            if tls.conn.writer().write_all(&reply.bytes).is_err() {
                return;
            }
            while tls.conn.wants_write() {
                if tls.conn.write_tls(&mut raw).is_err() {
                    return;
                }
            }
            for byte in raw {
                std::thread::sleep(std::time::Duration::from_millis(20));
                if tls.sock.write_all(&[byte]).is_err() {
                    return;
                }
            }
            continue;
        }
        if tls
            .write_all(&reply.bytes)
            .and_then(|()| tls.flush())
            .is_err()
        {
            return;
        }
        if reply.close {
            tls.conn.send_close_notify();
            let _ = tls.flush();
            return;
        }
    }
}

/// A client of two servers, `first` asked first.
fn client_of_both(first: &Scripted, second: &Scripted) -> Client {
    let key = crate::identity::ApiKey::generate();
    Client::with_endpoints(
        &[first.addr.to_string(), second.addr.to_string()],
        Credentials::from_api_key(&key.encode()).unwrap(),
        ServerTrust::Insecure,
    )
    .unwrap()
}

fn client(server: &Scripted) -> Client {
    let key = crate::identity::ApiKey::generate();
    let credentials = Credentials::from_api_key(&key.encode()).unwrap();
    Client::new(
        &server.addr.to_string(),
        credentials,
        ServerTrust::Roots(server.roots.clone()),
    )
    .unwrap()
}

#[test]
fn framing_keep_alive_and_retry() {
    let server = start();
    let client = client(&server);
    let accepted = || server.accepted.load(Ordering::SeqCst);

    assert_eq!(client.version().unwrap().version, "v1");
    let info = client.describe_key("chunked").unwrap();
    assert_eq!(info.name, "chunked");
    assert_eq!(info.algorithm.as_deref(), Some("AES256"));
    assert_eq!(
        info.body(),
        b"{\"name\":\"chunked\",\"algorithm\":\"AES256\"}\n"
    );
    assert_eq!(
        client.describe_key("missing").unwrap_err(),
        ClientError::NotFound(ApiError::KEY_NOT_FOUND)
    );
    assert_eq!(
        client.describe_key("nowhere").unwrap_err().to_string(),
        "404 page not found"
    );
    assert_eq!(
        client.describe_key("moved").unwrap_err().to_string(),
        "unexpected server response: GET /v1/key/describe/moved was redirected (301) to '/elsewhere/'"
    );
    assert_eq!(accepted(), 1, "one kept-alive connection so far");

    // A body that ends with the connection: the next call needs a new one.
    assert_eq!(client.status().unwrap().uptime, 42.0);
    assert_eq!(client.version().unwrap().version, "v1");
    assert_eq!(accepted(), 2);

    // The server closes a kept connection after this answer; the next call notices
    // before any answer arrived and goes again on a fresh connection.
    assert_eq!(client.metrics().unwrap().text(), "metrics\n");
    assert_eq!(client.version().unwrap().version, "v1");
    assert_eq!(accepted(), 3);

    let client = client.with_enclave(Some("tenant-1".into()));
    assert_eq!(*client.hmac("k", b"msg").unwrap(), b"tenant-1");

    let lines: Vec<String> = client.audit_log().unwrap().map(Result::unwrap).collect();
    assert_eq!(lines, ["{\"a\":1}", "{\"a\":2}", "{\"a\":3}"]);
}

#[test]
fn unverifiable_server_certificate() {
    let server = start();
    let key = crate::identity::ApiKey::generate();
    // Trust some other certificate: the handshake fails with advice.
    let (other, _) = crate::identity::self_signed_server_pem(&["127.0.0.1".to_owned()]).unwrap();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(other.as_bytes()).unwrap())
        .unwrap();
    let strict = Client::new(
        &server.addr.to_string(),
        Credentials::from_api_key(&key.encode()).unwrap(),
        ServerTrust::Roots(Arc::new(roots)),
    )
    .unwrap();
    let err = strict.version().unwrap_err().to_string();
    assert!(
        err.contains("cannot verify the server's certificate") && err.contains("-k/--insecure"),
        "{err}"
    );
    // Insecure: any certificate.
    let insecure = Client::new(
        &server.addr.to_string(),
        Credentials::from_api_key(&key.encode()).unwrap(),
        ServerTrust::Insecure,
    )
    .unwrap();
    assert_eq!(insecure.version().unwrap().version, "v1");
}

#[test]
fn listings_follow_pages_and_read_ndjson() {
    let server = start();
    let client = client(&server);
    let names: Vec<String> = client.keys("p").collect::<Result<_, _>>().unwrap();
    assert_eq!(names, ["p1", "p2", "p3", "p4"]);
    let names: Vec<String> = client.keys("loop").collect::<Result<_, _>>().unwrap();
    assert_eq!(names, ["loop1"]);
    let names: Vec<String> = client.policies("*").collect::<Result<_, _>>().unwrap();
    assert_eq!(names, ["a", "b"]);
    let err = client.list_identities("*").unwrap_err();
    assert_eq!(err.to_string(), "failed to list identities");
    assert!(matches!(err, ClientError::Server(_)), "{err:?}");
}

/// A server that drips its answer (the bytes of its TLS records one by one, every read well
/// within the per-read timeout) holds a call no longer than the call's time: it fails when the
/// time is up, saying so, instead of after the whole answer (some 9 s). The next call starts
/// at the other server, not at the one that ran the time out.
#[test]
fn a_dripping_server_runs_out_of_the_calls_time() {
    let (slow, fast) = (start(), start());
    let client = client_of_both(&slow, &fast).with_timeout(std::time::Duration::from_secs(1));
    let started = std::time::Instant::now();
    let err = client.describe_key("drip").unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(&err, ClientError::Transport(why) if why.contains("no complete answer within 1s")),
        "{err:?}"
    );
    assert!(
        took >= std::time::Duration::from_millis(900) && took < std::time::Duration::from_secs(3),
        "failed after {took:?}"
    );
    // The time was up at the first server: the second was not asked in this call.
    assert_eq!(fast.accepted.load(Ordering::SeqCst), 0);
    assert_eq!(client.version().unwrap().version, "v1");
    assert_eq!(fast.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(slow.accepted.load(Ordering::SeqCst), 1);
}

/// A `503` that says the write may have been made ends the call there: sent to the next
/// server, a create would answer that the key exists and the caller would think it failed.
/// Any other `503` goes on to the next server.
#[test]
fn a_write_whose_outcome_is_unknown_is_not_sent_again() {
    let (first, second) = (start(), start());
    let client = client_of_both(&first, &second);
    let err = client.create_key("lost").unwrap_err();
    assert!(err.to_string().contains("may or may not"), "{err}");
    assert_eq!(first.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(second.accepted.load(Ordering::SeqCst), 0, "sent again");
    let err = client.create_key("busy").unwrap_err();
    assert!(err.to_string().contains("unreachable; retry"), "{err}");
    assert_eq!(second.accepted.load(Ordering::SeqCst), 1, "not failed over");
}

/// A write cut off after it was sent may have been made: it is not sent to the next server.
/// A key operation that changes nothing (generate) is.
#[test]
fn a_write_cut_off_after_it_was_sent_is_not_sent_again() {
    let (first, second) = (start(), start());
    let client = client_of_both(&first, &second);
    let err = client.create_key("cut").unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)), "{err:?}");
    assert_eq!(second.accepted.load(Ordering::SeqCst), 0, "sent again");
    let err = client.generate_key("cut", b"").unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)), "{err:?}");
    assert_eq!(second.accepted.load(Ordering::SeqCst), 1, "not failed over");
}
