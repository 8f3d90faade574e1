//! HTTPS against a rustls server on 127.0.0.1, with the private CA and
//! certificates in `testdata/` (made by `testdata/regenerate.sh`). Needs the
//! `rustls` the client uses.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::policy::parse_cidrs;
use super::test_server::{response, serve_with, Server, Stream};
use super::{Client, HttpConfig, Outcome, Request};

const CA: &str = include_str!("testdata/ca.pem");
const SERVER_CERT: &str = include_str!("testdata/server.pem");
const SERVER_KEY: &str = include_str!("testdata/server.key");
const ROGUE_CERT: &str = include_str!("testdata/rogue.pem");
const ROGUE_KEY: &str = include_str!("testdata/rogue.key");

/// An HTTPS server presenting `cert_pem`, answering 200 "secure".
fn tls_server(cert_pem: &str, key_pem: &str) -> Server {
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("fixture certificate");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("fixture key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config"),
    );
    serve_with(
        Arc::new(move |tcp| {
            let conn = ServerConnection::new(config.clone()).ok()?;
            Some(Box::new(StreamOwned::new(conn, tcp)) as Box<dyn Stream>)
        }),
        Arc::new(|_| Some(response(200, &[], b"secure"))),
    )
}

/// The test CA written to a file of its own, as `webhook_outbox.ca_file`.
struct CaFile(PathBuf);

impl CaFile {
    fn new(name: &str) -> CaFile {
        let path = std::env::temp_dir().join(format!(
            "webhook_outbox-test-ca-{}-{name}.pem",
            std::process::id()
        ));
        fs::write(&path, CA).expect("write CA file");
        CaFile(path)
    }
}

impl Drop for CaFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn client(ca_file: Option<&CaFile>) -> Client {
    Client::new(&http_config(ca_file)).expect("client")
}

fn http_config(ca_file: Option<&CaFile>) -> HttpConfig {
    HttpConfig {
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        user_agent: "webhook_outbox-test/1".into(),
        ca_file: ca_file.map(|f| f.0.to_string_lossy().into_owned()),
        allowed_cidrs: parse_cidrs("127.0.0.0/8").expect("CIDR"),
        allow_http: false,
        http2: true,
        max_connections: 4,
    }
}

fn send(client: &Client, url: String) -> Outcome {
    client.send_blocking(&Request {
        url,
        webhook_id: "msg_tls".into(),
        timestamp: 1_700_000_000,
        body: "{}".into(),
        headers: vec![],
        signing_keys: vec![crate::delivery::SigningKey::Hmac(vec![1; 24].into())],
    })
}

fn assert_tls_refused(outcome: &Outcome, server: &Server, want: &str) {
    let error = outcome.error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("tls: ") && error.contains(want),
        "{error}"
    );
    assert_eq!(outcome.status, None);
    assert!(!outcome.permanent, "the receiver can fix its certificate");
    assert_eq!(outcome.failure, Some(crate::delivery::FailureClass::Tls));
    assert!(
        server.received().is_empty(),
        "no request may pass a failed handshake"
    );
}

#[test]
fn private_ca_from_ca_file_is_trusted_and_connections_are_reused() {
    let server = tls_server(SERVER_CERT, SERVER_KEY);
    let ca = CaFile::new("trusted");
    let client = client(Some(&ca));
    let port = server.addr.port();
    for _ in 0..20 {
        let outcome = send(&client, format!("https://localhost:{port}/hook"));
        assert_eq!(outcome.error, None);
        assert_eq!(outcome.status, Some(200));
        assert_eq!(outcome.response_prefix.as_deref(), Some("secure"));
    }
    assert_eq!(
        server.connections(),
        1,
        "one TLS handshake for all requests"
    );
    let outcome = send(&client, format!("https://127.0.0.1:{port}/hook"));
    assert_eq!(
        (outcome.status, outcome.error),
        (Some(200), None),
        "IP address SAN"
    );
}

#[test]
fn unknown_issuer_is_refused_without_ca_file() {
    let server = tls_server(SERVER_CERT, SERVER_KEY);
    let outcome = send(
        &client(None),
        format!("https://localhost:{}/", server.addr.port()),
    );
    assert_tls_refused(&outcome, &server, "UnknownIssuer");
}

#[test]
fn self_signed_certificate_is_refused_even_with_ca_file() {
    let server = tls_server(ROGUE_CERT, ROGUE_KEY);
    let ca = CaFile::new("rogue");
    let outcome = send(
        &client(Some(&ca)),
        format!("https://localhost:{}/", server.addr.port()),
    );
    assert_tls_refused(&outcome, &server, "UnknownIssuer");
}

#[test]
fn certificate_for_another_name_is_refused() {
    // Same socket, but the name asked for (an IPv6 address) is not in the
    // certificate, which names localhost and 127.0.0.1.
    let server = tls_server(SERVER_CERT, SERVER_KEY);
    let ca = CaFile::new("mismatch");
    let url = format!("https://[::ffff:127.0.0.1]:{}/", server.addr.port());
    let outcome = send(&client(Some(&ca)), url);
    assert_tls_refused(&outcome, &server, "not valid for name");
}

/// One request as the HTTP/2 receiver saw it.
struct Seen {
    version: http::Version,
    connection: usize,
    authority: String,
    path: String,
    host: Option<String>,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

/// An HTTPS receiver that offers only `h2` by ALPN (hyper's HTTP/2 server on
/// its own thread), answering 200 "h2" after `delay`. Counts connections and
/// the most requests it had in flight at once.
struct H2Server {
    port: u16,
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    most_in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

fn h2_server(delay: Duration) -> H2Server {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    let certs = CertificateDer::pem_slice_iter(SERVER_CERT.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("fixture certificate");
    let key = PrivateKeyDer::from_pem_slice(SERVER_KEY.as_bytes()).expect("fixture key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let server = H2Server {
        port: listener.local_addr().expect("addr").port(),
        seen: Arc::default(),
        connections: Arc::default(),
        most_in_flight: Arc::default(),
    };
    let (seen, connections, most) = (
        server.seen.clone(),
        server.connections.clone(),
        server.most_in_flight.clone(),
    );
    let in_flight = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        let rt = super::client::test_runtime();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let connection = connections.fetch_add(1, SeqCst) + 1;
                let (acceptor, seen, most, in_flight) = (
                    acceptor.clone(),
                    seen.clone(),
                    most.clone(),
                    in_flight.clone(),
                );
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let (seen, most, in_flight) =
                                (seen.clone(), most.clone(), in_flight.clone());
                            async move {
                                most.fetch_max(in_flight.fetch_add(1, SeqCst) + 1, SeqCst);
                                let (parts, body) = req.into_parts();
                                let body = body.collect().await.map(|b| b.to_bytes().to_vec());
                                tokio::time::sleep(delay).await;
                                in_flight.fetch_sub(1, SeqCst);
                                seen.lock().expect("seen").push(Seen {
                                    version: parts.version,
                                    connection,
                                    authority: parts
                                        .uri
                                        .authority()
                                        .map(|a| a.to_string())
                                        .unwrap_or_default(),
                                    path: parts
                                        .uri
                                        .path_and_query()
                                        .map(|p| p.to_string())
                                        .unwrap_or_default(),
                                    host: parts
                                        .headers
                                        .get("host")
                                        .map(|h| h.to_str().unwrap_or("?").to_owned()),
                                    headers: parts.headers,
                                    body: body.unwrap_or_default(),
                                });
                                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                    bytes::Bytes::from_static(b"h2"),
                                )))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
    });
    server
}

/// Sends `n` requests at once from one client, as the delivery thread does,
/// on `rt`, which also drives the client's pooled connections.
fn send_concurrently(
    rt: &tokio::runtime::Runtime,
    client: &Arc<Client>,
    url: &str,
    n: usize,
) -> Vec<Outcome> {
    rt.block_on(async {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let (client, url) = (client.clone(), url.to_owned());
                tokio::spawn(async move {
                    client
                        .send(&Request {
                            url,
                            webhook_id: format!("msg_h2_{i}"),
                            timestamp: 1_700_000_000,
                            body: format!("{{\"n\":{i}}}"),
                            headers: vec![("x-tenant".into(), "acme".into())],
                            signing_keys: vec![crate::delivery::SigningKey::Hmac(
                                vec![3; 24].into(),
                            )],
                        })
                        .await
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.expect("send task"));
        }
        outcomes
    })
}

#[test]
fn http2_receiver_gets_concurrent_streams_on_one_connection() {
    let server = h2_server(Duration::from_millis(100));
    let ca = CaFile::new("h2");
    let client = Arc::new(client(Some(&ca)));
    let url = format!("https://localhost:{}/hooks/in?tenant=7", server.port);
    let rt = super::client::test_runtime();
    // The first request opens the connection; the next 16 start together.
    assert_eq!(
        send_concurrently(&rt, &client, &url, 1)[0].status,
        Some(200)
    );
    for outcome in send_concurrently(&rt, &client, &url, 16) {
        assert_eq!(
            (outcome.status, outcome.error.as_deref()),
            (Some(200), None)
        );
        assert_eq!(outcome.response_prefix.as_deref(), Some("h2"));
    }
    let seen = server.seen.lock().expect("seen");
    assert_eq!(seen.len(), 17);
    assert_eq!(
        server.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert!(
        server
            .most_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 8,
        "streams must run concurrently, saw at most {} at once",
        server
            .most_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    );
    for s in seen.iter() {
        assert_eq!(s.version, http::Version::HTTP_2);
        assert_eq!(s.connection, 1);
        assert_eq!(s.authority, format!("localhost:{}", server.port));
        assert_eq!(s.path, "/hooks/in?tenant=7");
        assert_eq!(s.host, None, ":authority replaces Host in HTTP/2");
        let header = |name: &str| {
            s.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        let id = header("webhook-id");
        assert!(id.starts_with("msg_h2_"), "{id}");
        assert_eq!(s.body, format!("{{\"n\":{}}}", &id[7..]).into_bytes());
        assert_eq!(header("content-type"), "application/json");
        assert_eq!(header("x-tenant"), "acme");
        assert_eq!(header("webhook-timestamp"), "1700000000");
        let expected =
            super::signature::tests::reference_signature(&[3; 24], id, "1700000000", &s.body);
        assert_eq!(header("webhook-signature"), expected);
    }
}

#[test]
fn http2_can_be_turned_off() {
    // The receiver speaks only h2: a client that offers only HTTP/1.1 cannot agree on a protocol.
    let server = h2_server(Duration::ZERO);
    let ca = CaFile::new("h2-off");
    let client = Client::new(&HttpConfig {
        http2: false,
        ..http_config(Some(&ca))
    })
    .expect("client");
    let outcome = send(&client, format!("https://localhost:{}/", server.port));
    let error = outcome.error.unwrap_or_default();
    assert!(error.starts_with("tls: "), "{error}");
    assert!(server.seen.lock().expect("seen").is_empty());
}
