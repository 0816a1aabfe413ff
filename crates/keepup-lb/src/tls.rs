//! TLS termination: certificates from PEM files, SNI picks among several,
//! ALPN offers HTTP/2 and HTTP/1.1.

use crate::LbError;
use keepup_config::LbTlsCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;

#[derive(Debug)]
struct SniResolver {
    certs: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            if let Ok(sn) = ServerName::try_from(name) {
                for ck in &self.certs {
                    let Some(leaf) = ck.cert.first() else {
                        continue;
                    };
                    let ok = webpki::EndEntityCert::try_from(leaf)
                        .and_then(|c| c.verify_is_valid_for_subject_name(&sn))
                        .is_ok();
                    if ok {
                        return Some(ck.clone());
                    }
                }
            }
        }
        self.certs.first().cloned()
    }
}

fn load(c: &LbTlsCert) -> Result<Arc<CertifiedKey>, LbError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&c.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| LbError::Tls {
            path: c.cert.display().to_string(),
            reason: plain(e.to_string()),
        })?;
    if certs.is_empty() {
        return Err(LbError::Tls {
            path: c.cert.display().to_string(),
            reason: "no certificate in the file".to_string(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&c.key).map_err(|e| LbError::Tls {
        path: c.key.display().to_string(),
        reason: plain(e.to_string()),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| LbError::Tls {
            path: c.key.display().to_string(),
            reason: e.to_string(),
        })?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|_| LbError::Tls {
        path: c.key.display().to_string(),
        reason: format!(
            "this key does not belong to the certificate in {}: pair each cert with its own key",
            c.cert.display()
        ),
    })?;
    Ok(Arc::new(ck))
}

/// A PEM/IO error in words: "no such file", not "(os error 2)".
fn plain(reason: String) -> String {
    if reason.contains("os error 2") {
        return "no such file".to_string();
    }
    if reason.contains("os error 13") {
        return "permission denied (run as root, or make it readable by the agent)".to_string();
    }
    if reason.contains("no items found") || reason.contains("NoItemsFound") {
        return "no PEM item of the expected kind in the file".to_string();
    }
    match reason.find(" (os error") {
        Some(i) => reason[..i].to_string(),
        None => reason,
    }
}

/// Every TLS file problem in `section`, each with its place in the file:
/// a file that cannot be read, holds no certificate or key, or a key that
/// does not match its certificate. `keepup check-config` reports them.
pub fn tls_problems(section: &keepup_config::LbSection) -> Vec<keepup_config::LbProblem> {
    let mut out = Vec::new();
    for (fi, f) in section.frontend.iter().enumerate() {
        for (ti, t) in f.tls.iter().enumerate() {
            if let Some((field, message)) = pair_problem(t) {
                out.push(keepup_config::LbProblem {
                    at: keepup_config::path!["lb", "frontend", fi, "tls", ti, field],
                    message: format!("frontend {:?}: {message}", f.name),
                });
            }
        }
    }
    out
}

/// A TLS acceptor for these certificates (the first is the default).
pub(crate) fn acceptor(certs: &[LbTlsCert]) -> Result<tokio_rustls::TlsAcceptor, LbError> {
    acceptor_for(certs, &[b"h2", b"http/1.1"])
}

/// The agent API's TLS acceptor (`[api.tls]`): the load balancer's
/// certificate loading and checks, HTTP/1.1 only.
pub fn api_acceptor(cert: &LbTlsCert) -> Result<tokio_rustls::TlsAcceptor, LbError> {
    acceptor_for(std::slice::from_ref(cert), &[b"http/1.1"])
}

/// What is wrong with one certificate and key pair, if anything: which of
/// the two files (`"cert"` or `"key"`) and why.
pub fn pair_problem(c: &LbTlsCert) -> Option<(&'static str, String)> {
    match load(c) {
        Ok(_) => None,
        Err(LbError::Tls { path, reason }) => {
            let field = if path == c.cert.display().to_string() {
                "cert"
            } else {
                "key"
            };
            Some((field, format!("TLS {field} {path}: {reason}")))
        }
        Err(e) => Some(("cert", e.to_string())),
    }
}

fn acceptor_for(certs: &[LbTlsCert], alpn: &[&[u8]]) -> Result<tokio_rustls::TlsAcceptor, LbError> {
    let certs = certs.iter().map(load).collect::<Result<Vec<_>, _>>()?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| LbError::Tls {
        path: String::new(),
        reason: e.to_string(),
    })?
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(SniResolver { certs }));
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}
