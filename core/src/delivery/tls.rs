//! TLS for https endpoints: rustls with webpki's roots plus `ca_file`.

use std::fs;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_rustls::TlsConnector;

/// The client side of every TLS connection: the roots of [`root_certs`], safe
/// default protocol versions, HTTP/2 (when `http2`) and HTTP/1.1 by ALPN.
pub(super) fn connector(ca_file: Option<&str>, http2: bool) -> Result<TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(root_certs(ca_file)?)
        .with_no_client_auth();
    tls.alpn_protocols = match http2 {
        true => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        false => vec![b"http/1.1".to_vec()],
    };
    Ok(TlsConnector::from(Arc::new(tls)))
}

/// Webpki's roots plus those of `ca_file`.
fn root_certs(ca_file: Option<&str>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    // Roots this rustls cannot parse are skipped, as browsers do.
    roots.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
    if let Some(path) = ca_file {
        let pem = fs::read(path)
            .map_err(|e| format!("webhook_outbox.ca_file: cannot read \"{path}\": {e}"))?;
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert
                .map_err(|e| format!("webhook_outbox.ca_file: \"{path}\" is not valid PEM: {e}"))?;
            roots.add(cert).map_err(|e| {
                format!("webhook_outbox.ca_file: \"{path}\" holds an invalid certificate: {e}")
            })?;
            found += 1;
        }
        if found == 0 {
            return Err(format!(
                "webhook_outbox.ca_file: \"{path}\" holds no \"BEGIN CERTIFICATE\" block"
            ));
        }
    }
    Ok(roots)
}
