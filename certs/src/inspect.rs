//! Reading certificates: what a certificate file says, and a peer's GB ID.

use std::net::IpAddr;
use std::path::Path;

use time::OffsetDateTime;
use topology::GbId;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::files;
use crate::{Error, Result, URI_PREFIX};

/// What a certificate says, as `gbgate cert inspect` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject distinguished name, e.g. `CN=35010000002000000001`.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number, hex bytes separated by colons.
    pub serial: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// True for a CA certificate.
    pub is_ca: bool,
    /// The node ID of the one `urn:gb28181:` URI SAN; `None` when there is
    /// none, several or a malformed one ([`gb_id_of`] says which).
    pub gb_id: Option<GbId>,
    /// URI SANs, in certificate order.
    pub uris: Vec<String>,
    /// DNS SANs, in certificate order.
    pub dns: Vec<String>,
    /// IP SANs, in certificate order.
    pub ips: Vec<IpAddr>,
    /// With a CA given: whether this certificate's issuer is that CA's
    /// subject and the CA's key signed it. `None` without a CA.
    pub chains_to_ca: Option<bool>,
}

impl CertInfo {
    /// True if `now` is after the end of validity.
    pub fn expired_at(&self, now: OffsetDateTime) -> bool {
        now > self.not_after
    }

    /// True if `now` is before the start of validity.
    pub fn not_yet_valid_at(&self, now: OffsetDateTime) -> bool {
        now < self.not_before
    }

    /// Whole days from `now` until the end of validity; negative once expired.
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_days()
    }
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| Error::Parse(e.to_string()))?;
    if !rest.is_empty() {
        return Err(Error::Parse(format!(
            "{} bytes after the certificate",
            rest.len()
        )));
    }
    Ok(cert)
}

fn general_names<'a>(cert: &'a X509Certificate<'_>) -> Result<Vec<&'a GeneralName<'a>>> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| Error::Parse(format!("subject alternative names: {e}")))?;
    Ok(san
        .map(|ext| ext.value.general_names.iter().collect())
        .unwrap_or_default())
}

/// The GB ID of a certificate (DER): the 20 digits of its one
/// `urn:gb28181:<id>` URI SAN. No such SAN, several, or one whose digits are
/// not an ID give [`Error::NoGbId`], [`Error::SeveralGbIds`] and
/// [`Error::BadGbId`]. Other URI SANs are ignored.
///
/// This reads the certificate only; it trusts that the TLS handshake
/// verified it against the CA (use it on `peer_certificates()[0]`).
pub fn gb_id_of(cert_der: &[u8]) -> Result<GbId> {
    let cert = parse(cert_der)?;
    let ours: Vec<&str> = general_names(&cert)?
        .into_iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with(URI_PREFIX) => Some(*uri),
            _ => None,
        })
        .collect();
    match ours.as_slice() {
        [] => Err(Error::NoGbId),
        [uri] => {
            let digits = uri.get(URI_PREFIX.len()..).unwrap_or_default();
            GbId::parse(digits).map_err(|source| Error::BadGbId {
                uri: (*uri).to_owned(),
                source,
            })
        }
        several => Err(Error::SeveralGbIds(
            several.iter().map(|s| (*s).to_owned()).collect(),
        )),
    }
}

/// What the certificate `cert_der` says; with `ca_der`, whether it chains to
/// that CA certificate.
pub fn inspect_der(cert_der: &[u8], ca_der: Option<&[u8]>) -> Result<CertInfo> {
    let cert = parse(cert_der)?;
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for name in general_names(&cert)? {
        match name {
            GeneralName::URI(u) => uris.push((*u).to_owned()),
            GeneralName::DNSName(d) => dns.push((*d).to_owned()),
            GeneralName::IPAddress(bytes) => {
                if let Ok(b) = <[u8; 4]>::try_from(*bytes) {
                    ips.push(IpAddr::from(b));
                } else if let Ok(b) = <[u8; 16]>::try_from(*bytes) {
                    ips.push(IpAddr::from(b));
                }
            }
            _ => {}
        }
    }
    let chains_to_ca = match ca_der {
        None => None,
        Some(ca_der) => {
            let ca = parse(ca_der)?;
            Some(
                cert.issuer().as_raw() == ca.subject().as_raw()
                    && cert.verify_signature(Some(ca.public_key())).is_ok(),
            )
        }
    };
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string(),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        is_ca: cert.is_ca(),
        gb_id: gb_id_of(cert_der).ok(),
        uris,
        dns,
        ips,
        chains_to_ca,
    })
}

/// What the first certificate of the PEM file `path` says; with `ca_cert`
/// (a PEM file, e.g. `ca.crt`), whether it chains to that CA.
pub fn inspect(path: &Path, ca_cert: Option<&Path>) -> Result<CertInfo> {
    let cert = files::load_cert(path)?;
    let ca = match ca_cert {
        Some(p) => Some(files::load_cert(p)?),
        None => None,
    };
    inspect_der(&cert, ca.as_deref())
}
