//! rustls configs for gbgate links: TLS 1.3 only, mutual authentication
//! against the federation CA, ALPN [`ALPN`].
//!
//! The server (a parent) requires a client certificate signed by the CA; the
//! client (a child) verifies the parent's certificate against the same CA
//! and the server name [`server_name`]`(parent)`. After the handshake, the
//! server reads the child's ID with [`crate::gb_id_of`] on the first of
//! `peer_certificates()`, and checks it against the topology.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use topology::GbId;

use crate::ca::own_dns_name;
use crate::files;
use crate::{Error, Result};

/// The ALPN protocol of a gbgate link (GB/T 28181 SIP and media over QUIC).
pub const ALPN: &[u8] = b"gbgate/1";

/// The only protocol version offered and accepted.
static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// ring, the provider quinn 0.11 uses by default.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: CertificateDer<'static>) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    roots.add(ca)?;
    Ok(Arc::new(roots))
}

/// The TLS server name a child uses for its parent `id`: `<id>.gbgate`, the
/// DNS SAN every node certificate carries. (A bare 20-digit ID is not a
/// valid server name.)
pub fn server_name(id: &GbId) -> Result<ServerName<'static>> {
    ServerName::try_from(own_dns_name(id)).map_err(|e| Error::BadSan(e.to_string()))
}

/// A server config from the CA certificate and this node's certificate
/// chain and key (DER): TLS 1.3 only, a client certificate signed by the CA
/// required, ALPN [`ALPN`].
pub fn server_config_der(
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider.clone()).build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// A client config from the CA certificate and this node's certificate
/// chain and key (DER): TLS 1.3 only, the server verified against the CA,
/// this node's certificate presented, ALPN [`ALPN`].
pub fn client_config_der(
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// [`server_config_der`] from PEM files: the CA certificate (`ca.crt`),
/// this node's certificate (`<id>.crt`) and key (`<id>.key`).
pub fn server_config(ca: &Path, cert: &Path, key: &Path) -> Result<ServerConfig> {
    server_config_der(
        files::load_cert(ca)?,
        files::load_certs(cert)?,
        files::load_key(key)?,
    )
}

/// [`client_config_der`] from PEM files: the CA certificate (`ca.crt`),
/// this node's certificate (`<id>.crt`) and key (`<id>.key`).
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<ClientConfig> {
    client_config_der(
        files::load_cert(ca)?,
        files::load_certs(cert)?,
        files::load_key(key)?,
    )
}
