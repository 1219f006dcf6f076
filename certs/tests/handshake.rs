//! Real TLS handshakes in memory (rustls only, no sockets): a parent's
//! server config and a child's client config from the same CA agree on TLS
//! 1.3 and the parent reads the child's GB ID from its certificate; a child
//! certificate from another CA, an expired one, none at all, a wrong server
//! name and TLS 1.2 are all refused.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use certs::{Ca, Validity};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use time::{Duration, OffsetDateTime};
use topology::GbId;

const PARENT: &str = "35010000002000000001";
const CHILD: &str = "35010200002000000002";

fn id(s: &str) -> GbId {
    s.parse().unwrap()
}

/// A CA in `dir` with certificates for PARENT and CHILD.
fn federation(dir: &Path) -> Ca {
    Ca::init(dir, "federation CA", Validity::days(30).unwrap()).unwrap();
    // Issue through a loaded CA, as `gbgate cert issue` does.
    let ca = Ca::load(dir).unwrap();
    for node in [PARENT, CHILD] {
        ca.issue(id(node), &[], Validity::days(30).unwrap())
            .unwrap();
    }
    ca
}

fn server(ca: &Ca) -> ServerConfig {
    let p = id(PARENT);
    certs::server_config(
        &ca.cert_path(),
        &ca.node_cert_path(&p),
        &ca.node_key_path(&p),
    )
    .unwrap()
}

fn client(ca: &Ca) -> ClientConfig {
    let c = id(CHILD);
    certs::client_config(
        &ca.cert_path(),
        &ca.node_cert_path(&c),
        &ca.node_key_path(&c),
    )
    .unwrap()
}

/// Moves bytes between the two ends until both finished the handshake or
/// one of them failed.
fn handshake(
    client: ClientConfig,
    server: ServerConfig,
    name: ServerName<'static>,
) -> (
    Result<(), rustls::Error>,
    ClientConnection,
    ServerConnection,
) {
    let mut c = ClientConnection::new(Arc::new(client), name).unwrap();
    let mut s = ServerConnection::new(Arc::new(server)).unwrap();
    let result = pump(&mut c, &mut s);
    (result, c, s)
}

fn pump(c: &mut ClientConnection, s: &mut ServerConnection) -> Result<(), rustls::Error> {
    for _ in 0..10 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
        }
        s.process_new_packets()?;
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
        }
        c.process_new_packets()?;
        if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() && !s.wants_write() {
            return Ok(());
        }
    }
    panic!("the handshake did not finish in 10 rounds");
}

fn parent_name() -> ServerName<'static> {
    certs::server_name(&id(PARENT)).unwrap()
}

#[test]
fn same_ca_completes_tls13_and_the_parent_reads_the_child_id() {
    let dir = tempfile::tempdir().unwrap();
    let ca = federation(dir.path());
    let (result, mut c, mut s) = handshake(client(&ca), server(&ca), parent_name());
    result.unwrap();
    assert_eq!(s.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(s.alpn_protocol(), Some(certs::ALPN));
    assert_eq!(c.alpn_protocol(), Some(certs::ALPN));
    let child_cert = &s.peer_certificates().unwrap()[0];
    assert_eq!(certs::gb_id_of(child_cert).unwrap(), id(CHILD));
    let parent_cert = &c.peer_certificates().unwrap()[0];
    assert_eq!(certs::gb_id_of(parent_cert).unwrap(), id(PARENT));
    // And the link carries data.
    c.writer()
        .write_all(b"REGISTER sip:3501000000 SIP/2.0\r\n")
        .unwrap();
    pump(&mut c, &mut s).unwrap();
    let mut got = vec![0u8; 64];
    let n = s.reader().read(&mut got).unwrap();
    assert_eq!(&got[..n], b"REGISTER sip:3501000000 SIP/2.0\r\n");
}

#[test]
fn a_child_certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = federation(dir.path());
    let elsewhere = tempfile::tempdir().unwrap();
    // Same name, same child ID, another key: only the signature differs.
    let rogue = Ca::init(
        elsewhere.path(),
        "federation CA",
        Validity::days(30).unwrap(),
    )
    .unwrap();
    let forged = rogue
        .issue(id(CHILD), &[], Validity::days(30).unwrap())
        .unwrap();
    // The child trusts the real CA (so it gets as far as sending its
    // certificate) but presents the rogue one.
    let cfg = certs::client_config(&ca.cert_path(), &forged.cert, &forged.key).unwrap();
    let (result, _, _) = handshake(cfg, server(&ca), parent_name());
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature
            )
        ),
        "{err:?}"
    );
}

#[test]
fn an_expired_child_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = federation(dir.path());
    let now = OffsetDateTime::now_utc();
    let other: GbId = id("35010300002000000003");
    let old = ca
        .issue(
            other,
            &[],
            Validity::between(now - Duration::days(9), now - Duration::days(2)).unwrap(),
        )
        .unwrap();
    let cfg = certs::client_config(&ca.cert_path(), &old.cert, &old.key).unwrap();
    let (result, _, _) = handshake(cfg, server(&ca), parent_name());
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. }
            )
        ),
        "{err:?}"
    );
}

#[test]
fn a_child_without_a_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = federation(dir.path());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(certs::load_cert(&ca.cert_path()).unwrap())
        .unwrap();
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    cfg.alpn_protocols = vec![certs::ALPN.to_vec()];
    let (result, _, _) = handshake(cfg, server(&ca), parent_name());
    let err = result.unwrap_err();
    assert!(
        matches!(err, rustls::Error::NoCertificatesPresented),
        "{err:?}"
    );
}

#[test]
fn the_child_refuses_a_parent_with_another_id() {
    let dir = tempfile::tempdir().unwrap();
    let ca = federation(dir.path());
    // The child expects node 3 but the parent's certificate is node 1's.
    let wrong = certs::server_name(&id("35010300002000000003")).unwrap();
    let (result, _, _) = handshake(client(&ca), server(&ca), wrong);
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{err:?}"
    );
}

fn tls12_only_client(ca: &Ca) -> ClientConfig {
    let c = id(CHILD);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(certs::load_cert(&ca.cert_path()).unwrap())
        .unwrap();
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                certs::load_certs(&ca.node_cert_path(&c)).unwrap(),
                certs::load_key(&ca.node_key_path(&c)).unwrap(),
            )
            .unwrap();
    cfg.alpn_protocols = vec![certs::ALPN.to_vec()];
    cfg
}

fn tls12_only_server(ca: &Ca) -> ServerConfig {
    let p = id(PARENT);
    let mut cfg =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                certs::load_certs(&ca.node_cert_path(&p)).unwrap(),
                certs::load_key(&ca.node_key_path(&p)).unwrap(),
            )
            .unwrap();
    cfg.alpn_protocols = vec![certs::ALPN.to_vec()];
    cfg
}

#[test]
fn tls12_is_neither_offered_nor_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = federation(dir.path());
    // The same TLS 1.2-only peers do handshake with each other, so what
    // fails below is the version and nothing else.
    let (result, c, _) = handshake(
        tls12_only_client(&ca),
        tls12_only_server(&ca),
        parent_name(),
    );
    result.unwrap();
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    // Our client offers TLS 1.3 only: a TLS 1.2 server finds nothing in common.
    let (result, _, _) = handshake(client(&ca), tls12_only_server(&ca), parent_name());
    let err = result.unwrap_err();
    assert!(matches!(err, rustls::Error::PeerIncompatible(_)), "{err:?}");
    // Our server accepts TLS 1.3 only: a TLS 1.2 client is refused.
    let (result, _, _) = handshake(tls12_only_client(&ca), server(&ca), parent_name());
    let err = result.unwrap_err();
    assert!(matches!(err, rustls::Error::PeerIncompatible(_)), "{err:?}");
}
