//! A private test CA (its PEM written where `webhook_outbox.ca_file` can
//! point) and server certificates for [`crate::Receiver::https`].

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::TempDir;

/// The names receivers' certificates are valid for.
const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: TempDir,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, new_key()).expect("CA certificate");
        let dir = TempDir::new("ca");
        std::fs::write(dir.path().join("ca.pem"), issuer.pem()).expect("write CA PEM");
        TestCa { issuer, dir }
    }

    /// The CA certificate in PEM, readable by the `postgres` user.
    pub fn pem_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `localhost` and 127.0.0.1 issued by this CA, and its
    /// key, written as PEM files into `dir` (for nginx): (certificate, key).
    pub fn server_cert_files(&self, dir: &std::path::Path) -> (PathBuf, PathBuf) {
        let key = new_key();
        let cert = server_params().signed_by(&key, &self.issuer).expect("server certificate");
        let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write server certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("write server key");
        (cert_path, key_path)
    }

    /// A certificate for `localhost` and 127.0.0.1 issued by this CA.
    pub fn server_cert(&self) -> ServerCert {
        let key = new_key();
        let cert = server_params().signed_by(&key, &self.issuer).expect("server certificate");
        ServerCert::new(cert.der().clone(), key)
    }
}

/// A certificate chain and its key, for a TLS receiver.
pub struct ServerCert {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

impl ServerCert {
    /// Valid names and dates, but signed by nobody a client trusts.
    pub fn self_signed() -> ServerCert {
        let key = new_key();
        let cert = server_params().self_signed(&key).expect("self-signed certificate");
        ServerCert::new(cert.der().clone(), key)
    }

    fn new(cert: CertificateDer<'static>, key: KeyPair) -> ServerCert {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        ServerCert { chain: vec![cert], key }
    }
}

fn server_params() -> CertificateParams {
    let names = SERVER_NAMES.map(String::from).to_vec();
    let mut params = CertificateParams::new(names).expect("server names");
    params.distinguished_name.push(DnType::CommonName, SERVER_NAMES[0]);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params
}

fn new_key() -> KeyPair {
    KeyPair::generate().expect("generate key pair")
}
