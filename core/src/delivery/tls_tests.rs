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
    Client::new(&HttpConfig {
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        user_agent: "webhook_outbox-test/1".into(),
        ca_file: ca_file.map(|f| f.0.to_string_lossy().into_owned()),
        allowed_cidrs: parse_cidrs("127.0.0.0/8").expect("CIDR"),
        allow_http: false,
        max_connections: 4,
    })
    .expect("client")
}

fn send(client: &Client, url: String) -> Outcome {
    client.send_blocking(&Request {
        url,
        webhook_id: "msg_tls".into(),
        timestamp: 1_700_000_000,
        body: "{}".into(),
        headers: vec![],
        signing_key: vec![1; 24],
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
