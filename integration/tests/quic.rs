//! QUIC links between tiers, end to end: who may link (peers with a
//! certificate of another CA, of another node, expired, or none are refused,
//! logged and audited), and a parent that restarts (the child redials,
//! re-registers, and a viewer at the top gets video again).
//!
//! The rogue peers are quinn clients in this process, with certificates
//! made by the `certs` crate (what `gbgate cert` runs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use integration::demo::{TreeSpec, ALL_LINKS, QUIC_PORT_OFFSET};
use integration::flv_watch::{first_video, longest_gap, restart_until_video};
use integration::harness::{gbgate, test_clip as clip, Cluster, FleetSpec};
use topology::GbId;

/// city ← county ← town ← village, every link over QUIC, one camera;
/// every node keeps an audit.
fn quic_chain(dir: &Path, base: u16) -> Cluster {
    let spec = TreeSpec {
        quic_levels: ALL_LINKS,
        ..TreeSpec::media_chain(base, base + 3000)
    };
    let fleet = FleetSpec::one_camera(clip("h264.h264"));
    let audit_dir = dir.to_path_buf();
    let mut c = Cluster::start_nodes_with(
        dir,
        spec,
        fleet,
        move |n| {
            vec![
                "--audit".into(),
                audit_dir
                    .join(format!("audit-{}.db", n.id))
                    .display()
                    .to_string(),
            ]
        },
        None,
    )
    .expect("the chain starts");
    let village = c.tree.level("village")[0].id;
    c.start_fleet(&village).expect("the camera starts");
    let city = c.tree.root().id;
    c.wait_for("the camera at the city", Duration::from_secs(20), |c| {
        camera(c).is_some()
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log_digest()));
    let _ = city;
    c
}

fn camera(c: &Cluster) -> Option<String> {
    c.catalog(&c.tree.root().id)
        .ok()?
        .into_iter()
        .find(|e| e.device_id.get(10..13) == Some("131") && e.status == "ON")
        .map(|e| e.device_id)
}

/// What a rogue peer presents.
enum Rogue {
    /// A certificate of the right shape from a CA the federation does not use.
    OtherCa,
    /// A certificate of the federation's CA for a node that is not a child here.
    OtherNode,
    /// The real child's ID, from the right CA, expired yesterday.
    Expired,
    /// No client certificate at all.
    NoCertificate,
}

/// A client config for `rogue`, trusting the federation CA in `pki`.
fn rogue_config(rogue: &Rogue, pki: &Path, work: &Path, child: GbId) -> rustls::ClientConfig {
    let ca = pki.join("ca.crt");
    let issue = |ca_dir: &Path, id: GbId, validity: certs::Validity| {
        let ca = certs::Ca::load(ca_dir).unwrap();
        let issued = ca.issue(id, &[], validity).unwrap();
        (issued.cert, issued.key)
    };
    let copy_ca = |to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for f in ["ca.crt", "ca.key"] {
            std::fs::copy(pki.join(f), to.join(f)).unwrap();
        }
    };
    match rogue {
        Rogue::OtherCa => {
            let other = work.join("other-ca");
            certs::Ca::init(
                &other,
                "someone else's CA",
                certs::Validity::days(30).unwrap(),
            )
            .unwrap();
            let (cert, key) = issue(&other, child, certs::Validity::days(30).unwrap());
            certs::client_config(&ca, &cert, &key).unwrap()
        }
        Rogue::OtherNode => {
            let dir = work.join("other-node");
            copy_ca(&dir);
            let stranger = GbId::parse("35019900002000000001").unwrap();
            let (cert, key) = issue(&dir, stranger, certs::Validity::days(30).unwrap());
            certs::client_config(&ca, &cert, &key).unwrap()
        }
        Rogue::Expired => {
            let dir = work.join("expired");
            copy_ca(&dir);
            let now = time::OffsetDateTime::now_utc();
            let validity = certs::Validity::between(
                now - time::Duration::days(30),
                now - time::Duration::days(1),
            )
            .unwrap();
            let (cert, key) = issue(&dir, child, validity);
            certs::client_config(&ca, &cert, &key).unwrap()
        }
        Rogue::NoCertificate => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(certs::load_cert(&ca).unwrap()).unwrap();
            let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            c.alpn_protocols = vec![certs::ALPN.to_vec()];
            c
        }
    }
}

/// Dial the parent at `addr` as `rogue`: true when a SIP stream could be
/// opened and written and stayed open (the peer was admitted).
async fn try_link(config: rustls::ClientConfig, addr: SocketAddr, parent: GbId) -> bool {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(config)).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let name = format!("{parent}.gbgate");
    let attempt = async {
        let conn = endpoint.connect(addr, &name).ok()?.await.ok()?;
        let (mut send, _recv) = conn.open_bi().await.ok()?;
        send.write_all(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
            .await
            .ok()?;
        // Admitted peers stay up; refused ones are closed at once.
        tokio::time::sleep(Duration::from_millis(500)).await;
        conn.close_reason().is_none().then_some(())
    };
    let admitted = tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
        .is_some();
    endpoint.close(0u32.into(), b"");
    admitted
}

#[test]
fn only_the_topologys_child_with_a_valid_certificate_may_link_and_a_restarted_parent_is_rejoined() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = quic_chain(dir.path(), 22000);
    let city = c.tree.root().clone();
    let county = c.tree.level("county")[0].clone();
    let city_quic = SocketAddr::new(city.sip.ip(), city.sip.port() + QUIC_PORT_OFFSET);
    let pki = dir.path().join("pki");
    let work = dir.path().join("rogues");
    let rt = tokio::runtime::Runtime::new().unwrap();

    // 1. Refused: each rogue, against the city (whose one child is the county).
    let rogues = [
        ("another CA", Rogue::OtherCa),
        ("another node's ID", Rogue::OtherNode),
        ("an expired certificate", Rogue::Expired),
        ("no client certificate", Rogue::NoCertificate),
    ];
    for (what, rogue) in &rogues {
        let config = rogue_config(rogue, &pki, &work, county.id);
        let admitted = rt.block_on(try_link(config, city_quic, city.id));
        assert!(!admitted, "a peer with {what} was admitted");
    }
    // The real county is still linked.
    assert_eq!(
        c.metric(&city.id, "gbgate_quic_links", "").unwrap(),
        1.0,
        "the county's link survived the rogues"
    );
    // Each refusal has a clear log line ...
    c.wait_for("four refusals logged", Duration::from_secs(5), |c| {
        let log = std::fs::read_to_string(c.dir().join(format!("{}.log", city.id))).unwrap();
        log.matches("QUIC link refused").count() >= 4
    })
    .unwrap();
    let log = std::fs::read_to_string(dir.path().join(format!("{}.log", city.id))).unwrap();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("QUIC link refused"))
        .collect();
    eprintln!("{}", refusals.join("\n"));
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("35019900002000000001") && l.contains("not a child linked to")),
        "another node's ID is named: {refusals:#?}"
    );
    assert!(
        refusals
            .iter()
            .filter(|l| l.contains("TLS handshake failed"))
            .count()
            >= 3,
        "other CA, expired and missing certificates fail the handshake: {refusals:#?}"
    );
    // ... and an audit record.
    let db = dir.path().join(format!("audit-{}.db", city.id));
    let db = db.to_str().unwrap();
    let (code, out) = gbgate(&["audit", "query", "--audit", db]).unwrap();
    assert_eq!(code, 0, "{out}");
    let denied = out.lines().filter(|l| l.contains("\tlink\tdeny")).count();
    assert_eq!(denied, 4, "one audit record per refused link:\n{out}");
    assert!(
        out.contains("node:35019900002000000001"),
        "the ID a certificate claimed is the subject:\n{out}"
    );
    let (code, out) = gbgate(&["audit", "verify", "--audit", db]).unwrap();
    assert_eq!(code, 0, "the audit chain verifies: {out}");

    // 2. Rotation: the county's certificate is renewed on disk while the
    //    city's viewer watches. The county loads it for new connections,
    //    the topology API shows the new expiry, and the link and the
    //    viewer's stream stay up.
    let before = c
        .topology(&county.id)
        .unwrap()
        .certificate
        .expect("a certificate");
    assert!(!before.expires_soon && before.days_left >= 89, "{before:?}");
    assert_eq!(before.node.as_deref(), Some(county.id.as_str()));
    assert!(c.metric(&county.id, "gbgate_cert_days_left", "").unwrap() >= 89.0);
    let cam = camera(&c).expect("the camera is at the city");
    let url = format!("http://{}/live/{cam}.flv", city.http);
    let watcher = std::thread::spawn({
        let url = url.clone();
        move || longest_gap(&url, Duration::from_secs(10))
    });
    std::thread::sleep(Duration::from_secs(1));
    let ca = certs::Ca::load(&pki).unwrap();
    ca.renew(county.id, Some(certs::Validity::days(200).unwrap()))
        .unwrap();
    let county_log = dir.path().join(format!("{}.log", county.id));
    c.wait_for(
        "the county loads its new certificate",
        Duration::from_secs(15),
        |_| {
            std::fs::read_to_string(&county_log)
                .unwrap_or_default()
                .contains("new certificate files loaded")
        },
    )
    .unwrap();
    let after = c.topology(&county.id).unwrap().certificate.unwrap();
    assert!(
        after.days_left >= 199,
        "the API shows the new expiry: {after:?}"
    );
    let gap = watcher.join().unwrap();
    eprintln!("longest gap between video frames through the rotation: {gap:?}");
    assert!(
        gap.is_some_and(|g| g < Duration::from_secs(1)),
        "the viewer's stream ran through the rotation without a stall: {gap:?}"
    );
    assert_eq!(c.metric(&city.id, "gbgate_quic_links", "").unwrap(), 1.0);

    // 3. The county (the town's parent, the city's child) restarts.
    let cam = camera(&c).expect("the camera is at the city");
    let url = format!("http://{}/live/{cam}.flv", city.http);
    assert!(
        first_video(&url, Duration::from_secs(10)).is_some(),
        "video before the restart"
    );
    let took = restart_until_video(&mut c, &county.id, &url).unwrap_or_else(|| {
        panic!(
            "no video at the city after the county restarted\n{}",
            c.log_digest()
        )
    });
    eprintln!("video at the city again {took:?} after the county restarted");
    assert!(
        took < Duration::from_secs(5),
        "video at the city again after {took:?}, more than 5 s"
    );
}
