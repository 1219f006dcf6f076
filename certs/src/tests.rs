//! Unit tests: the CA directory, issue, renew, inspect and `gb_id_of`.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rcgen::SanType;
use time::{Duration, OffsetDateTime};
use topology::GbId;

use crate::{gb_id_of, inspect, Ca, Error, San, Validity};

const CITY: &str = "35010000002000000001";
const COUNTY: &str = "35010200002000000002";

fn id(s: &str) -> GbId {
    s.parse().unwrap()
}

fn ca(dir: &Path) -> Ca {
    Ca::init(dir, "test federation CA", Validity::days(30).unwrap()).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

/// A leaf with exactly `sans`, DER.
fn leaf_with(ca: &Ca, sans: Vec<SanType>) -> Vec<u8> {
    let (_, cert) = ca
        .sign_leaf("odd", sans, &Validity::days(1).unwrap())
        .unwrap();
    cert.der().to_vec()
}

#[test]
fn issue_then_gb_id_of_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(dir.path());
    let ip: IpAddr = "10.1.2.3".parse().unwrap();
    let issued = ca
        .issue(
            id(CITY),
            &[San::Dns("city.example".into()), San::Ip(ip)],
            Validity::days(365).unwrap(),
        )
        .unwrap();
    assert_eq!(issued.cert, dir.path().join(format!("{CITY}.crt")));
    let der = crate::load_cert(&issued.cert).unwrap();
    assert_eq!(gb_id_of(&der).unwrap(), id(CITY));
    let info = &issued.info;
    assert_eq!(info.gb_id, Some(id(CITY)));
    assert_eq!(info.uris, vec![format!("urn:gb28181:{CITY}")]);
    assert_eq!(
        info.dns,
        vec![format!("{CITY}.gbgate"), "city.example".to_owned()]
    );
    assert_eq!(info.ips, vec![ip]);
    assert_eq!(info.subject, format!("CN={CITY}"));
    assert_eq!(info.issuer, "CN=test federation CA");
    assert_eq!(info.chains_to_ca, Some(true));
    assert!(!info.is_ca);
}

#[test]
fn gb_id_of_wants_exactly_one_well_formed_uri() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(dir.path());
    let two = leaf_with(
        &ca,
        vec![
            uri(&format!("urn:gb28181:{CITY}")),
            uri(&format!("urn:gb28181:{COUNTY}")),
        ],
    );
    match gb_id_of(&two) {
        Err(Error::SeveralGbIds(uris)) => assert_eq!(uris.len(), 2),
        other => panic!("two URI SANs: {other:?}"),
    }
    let none = leaf_with(&ca, vec![SanType::DnsName("x.gbgate".try_into().unwrap())]);
    assert!(matches!(gb_id_of(&none), Err(Error::NoGbId)));
    let short = leaf_with(&ca, vec![uri("urn:gb28181:3501")]);
    assert!(
        matches!(
            gb_id_of(&short),
            Err(Error::BadGbId {
                source: topology::IdError::Length { len: 4 },
                ..
            })
        ),
        "{:?}",
        gb_id_of(&short)
    );
    let letter = leaf_with(&ca, vec![uri("urn:gb28181:3501X000002000000001")]);
    assert!(matches!(
        gb_id_of(&letter),
        Err(Error::BadGbId {
            source: topology::IdError::NotDigit { position: 5, .. },
            ..
        })
    ));
    // Other URIs do not count.
    let mixed = leaf_with(
        &ca,
        vec![
            uri("https://city.example/"),
            uri(&format!("urn:gb28181:{CITY}")),
        ],
    );
    assert_eq!(gb_id_of(&mixed).unwrap(), id(CITY));
    assert!(matches!(gb_id_of(b"not DER"), Err(Error::Parse(_))));
}

#[test]
fn private_keys_are_0600_certificates_0644() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(dir.path());
    let issued = ca.issue(id(CITY), &[], Validity::days(1).unwrap()).unwrap();
    assert_eq!(mode(&dir.path().join("ca.key")), 0o600);
    assert_eq!(mode(&issued.key), 0o600);
    assert_eq!(mode(&dir.path().join("ca.crt")), 0o644);
    assert_eq!(mode(&issued.cert), 0o644);
    let renewed = ca.renew(id(CITY), None).unwrap();
    assert_eq!(mode(&renewed.key), 0o600);
    assert_eq!(mode(&renewed.cert), 0o644);
    // No staging files left behind.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "35010000002000000001.crt",
            "35010000002000000001.key",
            "ca.crt",
            "ca.key"
        ]
    );
}

#[test]
fn init_and_issue_refuse_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let first = ca(dir.path());
    let before = std::fs::read(dir.path().join("ca.key")).unwrap();
    let again = Ca::init(dir.path(), "second", Validity::days(1).unwrap());
    assert!(
        matches!(&again, Err(Error::Exists { path, .. }) if path.ends_with("ca.crt")),
        "{again:?}"
    );
    assert_eq!(std::fs::read(dir.path().join("ca.key")).unwrap(), before);
    // A key alone is enough to refuse.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("ca.key"), "x").unwrap();
    assert!(matches!(
        Ca::init(other.path(), "x", Validity::days(1).unwrap()),
        Err(Error::Exists { .. })
    ));
    first
        .issue(id(CITY), &[], Validity::days(1).unwrap())
        .unwrap();
    let twice = first.issue(id(CITY), &[], Validity::days(1).unwrap());
    match twice {
        Err(e @ Error::Exists { .. }) => assert!(e.to_string().contains("renew"), "{e}"),
        other => panic!("second issue: {other:?}"),
    }
}

#[test]
fn load_issues_certificates_that_chain_to_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    ca(dir.path());
    let loaded = Ca::load(dir.path()).unwrap();
    let issued = loaded
        .issue(id(COUNTY), &[], Validity::days(1).unwrap())
        .unwrap();
    assert_eq!(issued.info.chains_to_ca, Some(true));
    assert_eq!(issued.info.issuer, "CN=test federation CA");
    let missing = Ca::load(&dir.path().join("nowhere"));
    assert!(matches!(missing, Err(Error::Io { .. })), "{missing:?}");
}

#[test]
fn renew_keeps_the_sans_and_changes_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(dir.path());
    let ip: IpAddr = "192.168.7.1".parse().unwrap();
    let first = ca
        .issue(
            id(CITY),
            &[San::Dns("city.example".into()), San::Ip(ip)],
            Validity::days(10).unwrap(),
        )
        .unwrap();
    let key_before = std::fs::read(&first.key).unwrap();
    let renewed = ca.renew(id(CITY), None).unwrap();
    assert_ne!(std::fs::read(&renewed.key).unwrap(), key_before);
    assert_ne!(renewed.info.serial, first.info.serial);
    assert_eq!(renewed.info.uris, first.info.uris);
    assert_eq!(renewed.info.dns, first.info.dns);
    assert_eq!(renewed.info.ips, first.info.ips);
    assert_eq!(renewed.info.chains_to_ca, Some(true));
    let length = |i: &crate::CertInfo| i.not_after - i.not_before;
    assert_eq!(length(&renewed.info), length(&first.info));
    // The files on disk are the new pair: the key matches the certificate.
    crate::server_config(&ca.cert_path(), &renewed.cert, &renewed.key).unwrap();
    let on_disk = inspect(&renewed.cert, None).unwrap();
    assert_eq!(on_disk.serial, renewed.info.serial);
    // A new validity when asked for.
    let longer = ca
        .renew(id(CITY), Some(Validity::days(400).unwrap()))
        .unwrap();
    assert!(longer.info.days_left(OffsetDateTime::now_utc()) >= 399);
    // Renew needs an issued certificate, and one of that node.
    assert!(matches!(ca.renew(id(COUNTY), None), Err(Error::Io { .. })));
    std::fs::copy(&renewed.cert, dir.path().join(format!("{COUNTY}.crt"))).unwrap();
    assert!(matches!(
        ca.renew(id(COUNTY), None),
        Err(Error::WrongNode { .. })
    ));
}

#[test]
fn inspect_reports_expiry_and_chain() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(dir.path());
    let now = OffsetDateTime::now_utc();
    let expired = Validity::between(now - Duration::days(10), now - Duration::days(3)).unwrap();
    let issued = ca.issue(id(CITY), &[], expired).unwrap();
    let info = inspect(&issued.cert, Some(&ca.cert_path())).unwrap();
    assert!(info.expired_at(now));
    assert!(!info.not_yet_valid_at(now));
    assert_eq!(info.days_left(now), -3);
    assert_eq!(info.not_after, expired.not_after());
    assert_eq!(info.chains_to_ca, Some(true));
    assert_eq!(inspect(&issued.cert, None).unwrap().chains_to_ca, None);
    // Another federation's CA, even with the same name, is not its issuer.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = ca_named(elsewhere.path(), "test federation CA");
    let info = inspect(&issued.cert, Some(&other.cert_path())).unwrap();
    assert_eq!(info.chains_to_ca, Some(false));
    // The CA certificate itself.
    let ca_info = inspect(&ca.cert_path(), Some(&ca.cert_path())).unwrap();
    assert!(ca_info.is_ca);
    assert_eq!(ca_info.gb_id, None);
    assert_eq!(ca_info.chains_to_ca, Some(true));
    assert!(ca_info.days_left(now) >= 29);
}

fn ca_named(dir: &Path, name: &str) -> Ca {
    Ca::init(dir, name, Validity::days(30).unwrap()).unwrap()
}

#[test]
fn validity_rejects_empty_and_reversed_periods() {
    assert!(matches!(Validity::days(0), Err(Error::Validity(_))));
    let now = OffsetDateTime::now_utc();
    assert!(Validity::between(now, now).is_err());
    assert!(Validity::between(now, now - Duration::days(1)).is_err());
    let v = Validity::days(2).unwrap();
    assert_eq!(v.not_before().nanosecond(), 0);
    assert!(v.not_after() - v.not_before() > Duration::days(2));
}
