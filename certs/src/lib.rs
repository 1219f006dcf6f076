//! Certificates for QUIC links between gbgate nodes.
//!
//! One CA per federation signs one certificate per node. A node certificate
//! carries the node's 20-digit ID as the URI SAN `urn:gb28181:<id>` (read back
//! with [`gb_id_of`]), the DNS SAN `<id>.gbgate` (the TLS server name a child
//! dials its parent by, see [`server_name`]), and any DNS and IP SANs given at
//! issue time. Both extended key usages are set, since every node is a TLS
//! server to its children and a TLS client to its parent.
//!
//! ```no_run
//! use certs::{Ca, Validity};
//! use topology::GbId;
//!
//! let ca = Ca::init("pki".as_ref(), "Fuzhou federation CA", Validity::days(3650)?)?;
//! let id: GbId = "35010000002000000001".parse()?;
//! let issued = ca.issue(id, &[], Validity::days(365)?)?;
//! let server = certs::server_config(&ca.cert_path(), &issued.cert, &issued.key)?;
//! # let _ = server;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! - [`ca`](mod@ca): [`Ca`]: create the federation CA, load it, issue and
//!   renew node certificates; key files are written with mode 0600.
//! - [`inspect`](mod@inspect): [`CertInfo`] of a certificate file, and
//!   [`gb_id_of`], the peer's GB ID from its certificate.
//! - [`tls`]: rustls server and client configs (TLS 1.3 only, client
//!   certificates verified against the CA, ALPN [`ALPN`]).
//!
//! The crypto provider is ring throughout (quinn 0.11's default), passed
//! explicitly, so no process-wide rustls provider has to be installed.

#![forbid(unsafe_code)]
// Tests may unwrap: a panic there is a failed test. The library itself is
// still linted without cfg(test) by `clippy --all-targets`.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod ca;
mod files;
pub mod inspect;
#[cfg(test)]
mod tests;
pub mod tls;

use std::path::PathBuf;

pub use ca::{Ca, Issued, San, Validity, CA_CERT_FILE, CA_KEY_FILE};
pub use files::{load_cert, load_certs, load_key};
pub use inspect::{gb_id_of, inspect, inspect_der, CertInfo};
pub use tls::{
    client_config, client_config_der, server_config, server_config_der, server_name, ALPN,
};

/// The URI SAN prefix before a node's 20-digit ID.
pub const URI_PREFIX: &str = "urn:gb28181:";

/// The DNS suffix of a node's server name: `<id>.gbgate`.
pub const DNS_SUFFIX: &str = "gbgate";

/// Everything that can go wrong making, reading or loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A file that would be written already exists; nothing was overwritten.
    #[error("{} already exists; not overwriting it{hint}", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
        /// What to do instead, e.g. "; use `renew`".
        hint: &'static str,
    },
    /// A PEM file could not be read.
    #[error("{}: not a PEM {what}: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// "certificate" or "private key".
        what: &'static str,
        /// The parser's complaint.
        reason: String,
    },
    /// DER bytes are not an X.509 certificate.
    #[error("not an X.509 certificate: {0}")]
    Parse(String),
    /// rcgen refused to make a key or certificate.
    #[error("making the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The validity period is empty, reversed or out of range.
    #[error("bad validity: {0}")]
    Validity(String),
    /// A subject alternative name cannot be encoded (e.g. a non-ASCII DNS name).
    #[error("bad subject alternative name {0}")]
    BadSan(String),
    /// The certificate has no `urn:gb28181:` URI SAN.
    #[error("the certificate carries no {URI_PREFIX}<id> URI SAN")]
    NoGbId,
    /// The certificate has more than one `urn:gb28181:` URI SAN.
    #[error("the certificate carries {} {URI_PREFIX} URI SANs ({}); exactly one is allowed", .0.len(), .0.join(", "))]
    SeveralGbIds(Vec<String>),
    /// The `urn:gb28181:` URI SAN does not hold a valid 20-digit ID.
    #[error("URI SAN {uri:?} does not hold a GB/T 28181 ID: {source}")]
    BadGbId {
        /// The URI as found.
        uri: String,
        /// Why the part after the prefix is not an ID.
        source: topology::IdError,
    },
    /// The certificate on disk is for another node than the one asked for.
    #[error("{} is the certificate of {found}, not of {wanted}", path.display())]
    WrongNode {
        /// The file.
        path: PathBuf,
        /// The node asked for.
        wanted: topology::GbId,
        /// The node its URI SAN names.
        found: topology::GbId,
    },
    /// The system random source failed.
    #[error("no randomness for a serial number")]
    Random,
    /// rustls refused the configuration (e.g. key and certificate do not match).
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built from the CA.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Result of this crate's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
