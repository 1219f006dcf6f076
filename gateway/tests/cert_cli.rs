//! `gbgate cert` as a user meets it: init-ca, issue (with addresses from the
//! topology), inspect printing the node ID and expiry, renew; keys 0600.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const CITY: &str = "35010000002000000001";
const COUNTY: &str = "35010200002000000002";

fn gbgate(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gbgate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn write_topology(dir: &Path) -> std::path::PathBuf {
    std::fs::write(dir.join("c.toml"), "uplink_password = \"x\"\n").unwrap();
    let path = dir.join("topology.toml");
    std::fs::write(
        &path,
        format!(
            "[[node]]\nid = \"{CITY}\"\nname = \"City\"\nlevel = \"city\"\nsip = \"127.0.0.1:5060\"\nhttp = \"10.9.8.7:18080\"\ncredentials = \"c.toml\"\n\n[[node]]\nid = \"{COUNTY}\"\nname = \"County\"\nlevel = \"county\"\nparent = \"{CITY}\"\nsip = \"127.0.0.2:5061\"\ncredentials = \"c.toml\"\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn init_ca_issue_inspect_renew() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let pki_s = pki.to_str().unwrap();
    let topology = write_topology(tmp.path());

    let (code, text) = gbgate(&["cert", "init-ca", "--dir", pki_s, "--name", "Fuzhou CA"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(mode(&pki.join("ca.key")), 0o600);
    let (code, text) = gbgate(&["cert", "init-ca", "--dir", pki_s]);
    assert_ne!(code, 0, "a second CA must be refused: {text}");
    assert!(text.contains("already exists"), "{text}");

    let (code, text) = gbgate(&[
        "cert",
        "issue",
        "--dir",
        pki_s,
        "--node",
        CITY,
        "--topology",
        topology.to_str().unwrap(),
        "--dns",
        "city.example",
        "--days",
        "90",
    ]);
    assert_eq!(code, 0, "{text}");
    let crt = pki.join(format!("{CITY}.crt"));
    assert_eq!(mode(&pki.join(format!("{CITY}.key"))), 0o600);

    let (code, text) = gbgate(&["cert", "inspect", crt.to_str().unwrap(), "--ca", pki_s]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&format!("node:       {CITY}")), "{text}");
    assert!(
        text.contains(&format!("uri:        urn:gb28181:{CITY}")),
        "{text}"
    );
    assert!(text.contains("dns:        city.example"), "{text}");
    assert!(text.contains("ip:         127.0.0.1"), "{text}");
    assert!(text.contains("ip:         10.9.8.7"), "{text}");
    assert!(text.contains("issuer:     CN=Fuzhou CA"), "{text}");
    assert!(
        text.contains("(expires in 89 days)") || text.contains("(expires in 90 days)"),
        "{text}"
    );
    assert!(text.contains("chain:      signed by"), "{text}");

    // Renew: new key, same SANs, still 0600.
    let key_before = std::fs::read(pki.join(format!("{CITY}.key"))).unwrap();
    let (code, text) = gbgate(&["cert", "renew", "--dir", pki_s, "--node", CITY]);
    assert_eq!(code, 0, "{text}");
    assert_ne!(
        std::fs::read(pki.join(format!("{CITY}.key"))).unwrap(),
        key_before
    );
    assert_eq!(mode(&pki.join(format!("{CITY}.key"))), 0o600);
    let (code, text) = gbgate(&["cert", "inspect", crt.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("ip:         10.9.8.7"), "{text}");

    // Another CA's view: the chain check fails and says so.
    let other = tmp.path().join("other");
    let (code, _) = gbgate(&["cert", "init-ca", "--dir", other.to_str().unwrap()]);
    assert_eq!(code, 0);
    let (code, text) = gbgate(&[
        "cert",
        "inspect",
        crt.to_str().unwrap(),
        "--ca",
        other.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("NOT signed by"), "{text}");

    // A node the topology does not have, and a bad ID.
    let (code, text) = gbgate(&[
        "cert",
        "issue",
        "--dir",
        pki_s,
        "--node",
        "35010300002000000003",
        "--topology",
        topology.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(text.contains("has no node"), "{text}");
    let (code, text) = gbgate(&["cert", "issue", "--dir", pki_s, "--node", "123"]);
    assert_ne!(code, 0);
    assert!(text.contains("not a GB/T 28181 ID"), "{text}");
}
