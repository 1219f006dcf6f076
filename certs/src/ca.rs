//! The federation CA: create it, load it, issue and renew node certificates.
//!
//! A CA directory holds `ca.crt` and `ca.key` and, next to them, the node
//! certificates it issued as `<id>.crt` and `<id>.key`. Private keys are
//! written with mode 0600. Nothing is ever overwritten except by [`Ca::renew`],
//! which replaces a node's key and certificate in one rename each.

use std::fmt;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};
use topology::GbId;

use crate::files::{self, CERT_MODE, KEY_MODE};
use crate::inspect::{self, CertInfo};
use crate::{Error, Result, DNS_SUFFIX, URI_PREFIX};

/// When a certificate is valid: `[not_before, not_after]`, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl Validity {
    /// How far before "now" a new certificate starts, so that a node whose
    /// clock runs a little behind the issuer's accepts it at once.
    pub const BACKDATE: Duration = Duration::hours(1);

    /// From [`Validity::BACKDATE`] ago until `days` days from now.
    pub fn days(days: u32) -> Result<Validity> {
        if days == 0 {
            return Err(Error::Validity(
                "the number of days must be at least 1".into(),
            ));
        }
        let now = OffsetDateTime::now_utc();
        let end = now
            .checked_add(Duration::days(i64::from(days)))
            .ok_or_else(|| Error::Validity(format!("{days} days is too long")))?;
        Validity::between(now - Validity::BACKDATE, end)
    }

    /// Exactly `[not_before, not_after]`; `not_after` must be later.
    /// Sub-second parts are dropped (certificates hold whole seconds).
    pub fn between(not_before: OffsetDateTime, not_after: OffsetDateTime) -> Result<Validity> {
        let whole = |t: OffsetDateTime| {
            t.replace_nanosecond(0)
                .ok()
                .and_then(|t| t.checked_to_offset(time::UtcOffset::UTC))
        };
        let (Some(not_before), Some(not_after)) = (whole(not_before), whole(not_after)) else {
            return Err(Error::Validity("time out of range".into()));
        };
        if not_after <= not_before {
            return Err(Error::Validity(format!(
                "it ends ({not_after}) before it starts ({not_before})"
            )));
        }
        if not_after.year() > 9999 || not_before.year() < 1950 {
            return Err(Error::Validity("years must lie in 1950..=9999".into()));
        }
        Ok(Validity {
            not_before,
            not_after,
        })
    }

    /// The same length as this one, starting [`Validity::BACKDATE`] ago.
    pub fn same_length_from_now(&self) -> Result<Validity> {
        let start = OffsetDateTime::now_utc() - Validity::BACKDATE;
        let end = start
            .checked_add(self.not_after - self.not_before)
            .ok_or_else(|| Error::Validity("the period reaches past 9999".into()))?;
        Validity::between(start, end)
    }

    /// The first instant of validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// The last instant of validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }
}

/// An extra subject alternative name of a node certificate, beside the
/// `urn:gb28181:<id>` URI and the `<id>.gbgate` DNS name every one carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum San {
    /// A DNS name.
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(name) => write!(f, "DNS:{name}"),
            San::Ip(ip) => write!(f, "IP:{ip}"),
        }
    }
}

/// A node certificate just written.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The node.
    pub id: GbId,
    /// `<dir>/<id>.crt`.
    pub cert: PathBuf,
    /// `<dir>/<id>.key` (mode 0600).
    pub key: PathBuf,
    /// What the new certificate says.
    pub info: CertInfo,
}

/// The federation's certificate authority, loaded with its private key.
#[derive(Debug)]
pub struct Ca {
    dir: PathBuf,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// The CA certificate's file name in a CA directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// The CA private key's file name in a CA directory.
pub const CA_KEY_FILE: &str = "ca.key";

impl Ca {
    /// Creates a CA named `name` in `dir` (made if missing): a self-signed
    /// certificate `ca.crt` and its key `ca.key` (mode 0600). Refuses with
    /// [`Error::Exists`] if either file exists: one CA per federation.
    pub fn init(dir: &Path, name: &str, validity: Validity) -> Result<Ca> {
        fs::create_dir_all(dir).map_err(files::io_err(dir))?;
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        const HINT: &str = "; a federation has one CA, keep using it";
        for path in [&cert_path, &key_path] {
            if path.symlink_metadata().is_ok() {
                return Err(Error::Exists {
                    path: path.clone(),
                    hint: HINT,
                });
            }
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key)?;
        files::write_new(&key_path, key.serialize_pem().as_bytes(), KEY_MODE, HINT)?;
        files::write_new(&cert_path, cert.pem().as_bytes(), CERT_MODE, HINT)?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads the CA of `dir` (`ca.crt` and `ca.key`).
    pub fn load(dir: &Path) -> Result<Ca> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_der = files::load_cert(&cert_path)?;
        let key_pem = fs::read_to_string(&key_path).map_err(files::io_err(&key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| Error::Pem {
            path: key_path.clone(),
            what: "private key",
            reason: e.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            cert_der,
            issuer,
        })
    }

    /// The CA directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/ca.crt`, the file every node trusts.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT_FILE)
    }

    /// The CA certificate.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Where the certificate of `node` is written: `<dir>/<id>.crt`.
    pub fn node_cert_path(&self, node: &GbId) -> PathBuf {
        self.dir.join(format!("{node}.crt"))
    }

    /// Where the private key of `node` is written: `<dir>/<id>.key`.
    pub fn node_key_path(&self, node: &GbId) -> PathBuf {
        self.dir.join(format!("{node}.key"))
    }

    /// Issues a certificate for `node`: a new key, the URI SAN
    /// `urn:gb28181:<id>`, the DNS SAN `<id>.gbgate`, then `sans`; both
    /// server and client authentication. Writes `<id>.crt` and `<id>.key`
    /// (mode 0600); refuses with [`Error::Exists`] if either exists.
    pub fn issue(&self, node: GbId, sans: &[San], validity: Validity) -> Result<Issued> {
        let cert_path = self.node_cert_path(&node);
        let key_path = self.node_key_path(&node);
        const HINT: &str = "; use `renew` to replace a node's certificate";
        for path in [&cert_path, &key_path] {
            if path.symlink_metadata().is_ok() {
                return Err(Error::Exists {
                    path: path.clone(),
                    hint: HINT,
                });
            }
        }
        let (key, cert) = self.sign_leaf(node.as_str(), node_sans(&node, sans)?, &validity)?;
        files::write_new(&key_path, key.serialize_pem().as_bytes(), KEY_MODE, HINT)?;
        files::write_new(&cert_path, cert.pem().as_bytes(), CERT_MODE, HINT)?;
        self.issued(node, cert_path, key_path, cert.der())
    }

    /// Renews the certificate of `node`: a new key and certificate with the
    /// same DNS and IP SANs as the current `<id>.crt`, valid for `validity`
    /// or, without one, as long as the current one was, from now. Each file
    /// is replaced in one rename, the key first.
    pub fn renew(&self, node: GbId, validity: Option<Validity>) -> Result<Issued> {
        let cert_path = self.node_cert_path(&node);
        let key_path = self.node_key_path(&node);
        let old_der = files::load_cert(&cert_path)?;
        let old = inspect::inspect_der(&old_der, None)?;
        match old.gb_id {
            Some(found) if found == node => {}
            Some(found) => {
                return Err(Error::WrongNode {
                    path: cert_path,
                    wanted: node,
                    found,
                })
            }
            None => return Err(inspect::gb_id_of(&old_der).err().unwrap_or(Error::NoGbId)),
        }
        let validity = match validity {
            Some(v) => v,
            None => Validity::between(old.not_before, old.not_after)?.same_length_from_now()?,
        };
        let own_dns = own_dns_name(&node);
        let sans: Vec<San> = old
            .dns
            .iter()
            .filter(|d| **d != own_dns)
            .map(|d| San::Dns(d.clone()))
            .chain(old.ips.iter().map(|ip| San::Ip(*ip)))
            .collect();
        let (key, cert) = self.sign_leaf(node.as_str(), node_sans(&node, &sans)?, &validity)?;
        let staged_key = files::stage(&key_path, key.serialize_pem().as_bytes(), KEY_MODE)?;
        let staged_cert = files::stage(&cert_path, cert.pem().as_bytes(), CERT_MODE)?;
        files::commit(staged_key)?;
        files::commit(staged_cert)?;
        self.issued(node, cert_path, key_path, cert.der())
    }

    fn issued(
        &self,
        id: GbId,
        cert: PathBuf,
        key: PathBuf,
        der: &CertificateDer<'_>,
    ) -> Result<Issued> {
        Ok(Issued {
            id,
            cert,
            key,
            info: inspect::inspect_der(der, Some(self.cert_der.as_ref()))?,
        })
    }

    /// A new key and a leaf certificate for it, signed by this CA, with
    /// exactly the SANs given (tests use it for malformed certificates).
    pub(crate) fn sign_leaf(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        validity: &Validity,
    ) -> Result<(KeyPair, Certificate)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.serial_number = Some(random_serial()?);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((key, cert))
    }
}

/// `<id>.gbgate`, the DNS SAN every node certificate carries.
pub(crate) fn own_dns_name(node: &GbId) -> String {
    format!("{node}.{DNS_SUFFIX}")
}

/// The SANs of a node certificate: URI, own DNS name, then `extra` without
/// repeats.
fn node_sans(node: &GbId, extra: &[San]) -> Result<Vec<SanType>> {
    let ia5 = |s: String| {
        rcgen::string::Ia5String::try_from(s.as_str())
            .map_err(|e| Error::BadSan(format!("{s:?}: {e}")))
    };
    let mut out = vec![
        SanType::URI(ia5(format!("{URI_PREFIX}{node}"))?),
        SanType::DnsName(ia5(own_dns_name(node))?),
    ];
    for san in extra {
        let s = match san {
            San::Dns(name) => SanType::DnsName(ia5(name.clone())?),
            San::Ip(ip) => SanType::IpAddress(*ip),
        };
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// A random positive 16-byte serial number (rcgen's default repeats for a
/// re-issue with the same key).
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| Error::Random)?;
    // Positive, and no leading zero byte for DER to strip.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}
