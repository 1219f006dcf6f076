//! The demo tree: one city, 2 counties, 2 towns per county, 2 villages per
//! town (15 nodes), written out as a topology file plus credentials files;
//! and where the test clips (`make clips`) are.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use topology::GbId;

/// Shape and timing of a generated tree.
#[derive(Debug, Clone)]
pub struct TreeSpec {
    /// Counties under the city.
    pub counties: usize,
    /// Towns per county.
    pub towns: usize,
    /// Villages per town.
    pub villages: usize,
    /// First SIP port; node k listens on `sip_base + k`.
    pub sip_base: u16,
    /// First HTTP port; node k serves on `http_base + k`.
    pub http_base: u16,
    /// Keepalive period, seconds.
    pub keepalive_secs: u64,
    /// First re-register wait after a failure, seconds.
    pub register_retry_secs: u64,
    /// SIP T1, milliseconds.
    pub t1_ms: u64,
    /// Link transport between nodes: "udp" or "tcp".
    pub transport: &'static str,
    /// Password of every node and device.
    pub password: String,
    /// Seconds a stream without viewers stays open.
    pub linger_secs: u64,
    /// Seconds of silence from a source after which its stream ends.
    pub media_timeout_secs: u64,
    /// How nodes ask sources to send: udp, tcp-passive, tcp-active.
    pub media_transport: &'static str,
    /// Levels whose link to the parent runs over QUIC (e.g. `["county"]`:
    /// county → city). When any does, every node listens for QUIC on its
    /// SIP port + [`QUIC_PORT_OFFSET`] and gets a certificate of a CA made
    /// in `pki/` beside the topology.
    pub quic_levels: &'static [&'static str],
    /// Levels whose link to the parent runs over TCP whatever `transport`
    /// says (a mixed tree).
    pub tcp_levels: &'static [&'static str],
    /// The certificate directory of the QUIC links (`gbgate cert` layout);
    /// `None`: `pki/` beside the topology. Missing certificates are made.
    pub pki: Option<PathBuf>,
    /// Nodes query newly registered devices and children (the default).
    pub query_new_registrants: bool,
    /// Viewers one stream may have; `None`: the node's default (sized for
    /// its machine).
    pub max_viewers_per_stream: Option<u64>,
    /// Seconds a camera's PTZ lock lasts; `None`: the node's default.
    pub ptz_lock_secs: Option<u64>,
    /// Seconds between intact probes; `None`: the node's default.
    pub intact_probe_secs: Option<u64>,
    /// PTZ priority per department (1 highest … 5 lowest).
    pub ptz_priority: &'static [(&'static str, u8)],
}

impl TreeSpec {
    /// One node per tier (city ← county ← town ← village), SIP from
    /// `sip_base` and HTTP from `http_base`, with the short media timers the
    /// end-to-end media tests use: keepalive 2 s, linger 2 s, a source
    /// silent 3 s ends its stream.
    pub fn media_chain(sip_base: u16, http_base: u16) -> TreeSpec {
        TreeSpec {
            counties: 1,
            towns: 1,
            villages: 1,
            sip_base,
            http_base,
            keepalive_secs: 2,
            linger_secs: 2,
            media_timeout_secs: 3,
            ..TreeSpec::default()
        }
    }

    /// True when `n` is on either end of a QUIC link.
    pub fn on_quic_link(&self, n: &TreeNode) -> bool {
        let child = match n.level {
            "city" => Some("county"),
            "county" => Some("town"),
            "town" => Some("village"),
            _ => None,
        };
        self.quic_levels.contains(&n.level) || child.is_some_and(|c| self.quic_levels.contains(&c))
    }
}

/// A node's QUIC port is its SIP port plus this.
pub const QUIC_PORT_OFFSET: u16 = 1500;

/// Every level below the city: all links over QUIC.
pub const ALL_LINKS: &[&str] = &["county", "town", "village"];

impl Default for TreeSpec {
    fn default() -> Self {
        TreeSpec {
            counties: 2,
            towns: 2,
            villages: 2,
            sip_base: 25060,
            http_base: 28080,
            keepalive_secs: 5,
            register_retry_secs: 2,
            t1_ms: 500,
            transport: "udp",
            password: "gbgate-demo".into(),
            linger_secs: 30,
            media_timeout_secs: 10,
            media_transport: "udp",
            quic_levels: &[],
            tcp_levels: &[],
            pki: None,
            query_new_registrants: true,
            max_viewers_per_stream: None,
            ptz_lock_secs: None,
            intact_probe_secs: None,
            ptz_priority: &[],
        }
    }
}

/// One node of a generated tree.
#[derive(Debug, Clone)]
pub struct TreeNode {
    /// ID.
    pub id: GbId,
    /// Name.
    pub name: String,
    /// city, county, town or village.
    pub level: &'static str,
    /// Parent.
    pub parent: Option<GbId>,
    /// SIP address.
    pub sip: std::net::SocketAddr,
    /// HTTP address.
    pub http: std::net::SocketAddr,
    /// For villages: the serial range devices below it use (keeps IDs unique
    /// among villages that share a town's civil code).
    pub device_serial_base: u32,
}

/// A tree written to disk.
#[derive(Debug, Clone)]
pub struct Tree {
    /// The topology file.
    pub topology: PathBuf,
    /// Nodes, root first, then breadth first.
    pub nodes: Vec<TreeNode>,
}

impl Tree {
    /// The root (city).
    pub fn root(&self) -> &TreeNode {
        &self.nodes[0]
    }

    /// Nodes of one level.
    pub fn level(&self, level: &str) -> Vec<&TreeNode> {
        self.nodes.iter().filter(|n| n.level == level).collect()
    }

    /// A node by ID.
    pub fn node(&self, id: &GbId) -> Option<&TreeNode> {
        self.nodes.iter().find(|n| n.id == *id)
    }
}

/// A CA in `pki` (kept if there is one) and a certificate for each node
/// that has none, valid 90 days, as `gbgate cert init-ca` and `issue` make.
pub fn make_certificates(pki: &Path, nodes: &[TreeNode]) -> Result<(), certs::Error> {
    let ca = if pki.join(certs::CA_CERT_FILE).exists() {
        certs::Ca::load(pki)?
    } else {
        certs::Ca::init(
            pki,
            "gbgate demo federation CA",
            certs::Validity::days(365)?,
        )?
    };
    for n in nodes {
        if !ca.node_cert_path(&n.id).exists() {
            ca.issue(
                n.id,
                &[certs::San::Ip(n.sip.ip())],
                certs::Validity::days(90)?,
            )?;
        }
    }
    Ok(())
}

fn gid(civil8: &str, serial: u32) -> GbId {
    // Generated from fixed digits; a failure is a bug in this file.
    #[allow(clippy::expect_used)]
    GbId::parse(&format!("{civil8}002000{serial:06}")).expect("generated ID is 20 digits")
}

/// The links `GBGATE_TEST_LINKS` has the tests' trees run over:
/// `quic` (every link over QUIC) or `mixed` (county → city over QUIC,
/// town → county over TCP, village → town over UDP); `None` when unset:
/// as each test's spec says.
pub fn test_links() -> Option<&'static str> {
    match std::env::var("GBGATE_TEST_LINKS").as_deref() {
        Ok("quic") => Some("quic"),
        Ok("mixed") => Some("mixed"),
        _ => None,
    }
}

/// `spec` with the links [`test_links`] asks for.
fn with_test_links(spec: &TreeSpec) -> TreeSpec {
    let mut spec = spec.clone();
    match test_links() {
        Some("quic") => spec.quic_levels = ALL_LINKS,
        Some("mixed") => {
            spec.quic_levels = &["county"];
            spec.tcp_levels = &["town"];
            spec.transport = "udp";
        }
        _ => {}
    }
    spec
}

/// Build the tree and write `topology.toml` and `creds/*.toml` under `dir`
/// (with the links `GBGATE_TEST_LINKS` asks for, see [`test_links`]).
pub fn write_tree(dir: &Path, spec: &TreeSpec) -> std::io::Result<Tree> {
    let spec = &with_test_links(spec);
    std::fs::create_dir_all(dir.join("creds"))?;
    let mut nodes = Vec::new();
    let mut k: u16 = 0;
    let mut add = |nodes: &mut Vec<TreeNode>,
                   id: GbId,
                   name: String,
                   level: &'static str,
                   parent: Option<GbId>,
                   base: u32| {
        let sip = ([127, 0, 0, 1], spec.sip_base + k).into();
        let http = ([127, 0, 0, 1], spec.http_base + k).into();
        k += 1;
        nodes.push(TreeNode {
            id,
            name,
            level,
            parent,
            sip,
            http,
            device_serial_base: base,
        });
    };
    let city = gid("35010000", 1);
    add(&mut nodes, city, "Fuzhou city".into(), "city", None, 0);
    for c in 1..=spec.counties {
        let county_civil = format!("3501{:02}00", c + 1);
        let county = gid(&county_civil, 1);
        add(
            &mut nodes,
            county,
            format!("County {c}"),
            "county",
            Some(city),
            0,
        );
        for t in 1..=spec.towns {
            let town_civil = format!("3501{:02}{:02}", c + 1, t);
            let town = gid(&town_civil, 1);
            add(
                &mut nodes,
                town,
                format!("Town {c}.{t}"),
                "town",
                Some(county),
                0,
            );
            for v in 1..=spec.villages {
                let village = gid(&town_civil, 10 + v as u32);
                add(
                    &mut nodes,
                    village,
                    format!("Village {c}.{t}.{v}"),
                    "village",
                    Some(town),
                    (v as u32) * 100_000,
                );
            }
        }
    }
    let pki = spec.pki.clone().unwrap_or_else(|| dir.join("pki"));
    let mut toml = String::new();
    toml.push_str("# gbgate demo topology (generated).\n[defaults]\n");
    toml.push_str(&format!(
        "transport = \"{}\"\nkeepalive_interval_secs = {}\nkeepalive_timeout_count = 3\nregister_expires_secs = 3600\nregister_retry_secs = {}\nsip_t1_ms = {}\nlinger_secs = {}\nmedia_timeout_secs = {}\nmedia_transport = \"{}\"\nquery_new_registrants = {}\n\n",
        spec.transport,
        spec.keepalive_secs,
        spec.register_retry_secs,
        spec.t1_ms,
        spec.linger_secs,
        spec.media_timeout_secs,
        spec.media_transport,
        spec.query_new_registrants
    ));
    if let Some(n) = spec.max_viewers_per_stream {
        toml.push_str(&format!("max_viewers_per_stream = {n}\n\n"));
    }
    if let Some(n) = spec.ptz_lock_secs {
        toml.push_str(&format!("ptz_lock_secs = {n}\n\n"));
    }
    if let Some(n) = spec.intact_probe_secs {
        toml.push_str(&format!("intact_probe_secs = {n}\n\n"));
    }
    if !spec.ptz_priority.is_empty() {
        let table: Vec<String> = spec
            .ptz_priority
            .iter()
            .map(|(d, p)| format!("{d} = {p}"))
            .collect();
        toml.push_str(&format!("ptz_priority = {{ {} }}\n\n", table.join(", ")));
    }
    for n in &nodes {
        toml.push_str("[[node]]\n");
        toml.push_str(&format!(
            "id = \"{}\"\nname = \"{}\"\nlevel = \"{}\"\n",
            n.id, n.name, n.level
        ));
        if let Some(p) = n.parent {
            toml.push_str(&format!("parent = \"{p}\"\n"));
        }
        if spec.on_quic_link(n) {
            let quic = SocketAddr::new(n.sip.ip(), n.sip.port() + QUIC_PORT_OFFSET);
            toml.push_str(&format!(
                "quic = \"{quic}\"\ncerts = \"{}\"\n",
                pki.display()
            ));
            if spec.quic_levels.contains(&n.level) {
                toml.push_str("transport = \"quic\"\n");
            }
        }
        if spec.tcp_levels.contains(&n.level) {
            toml.push_str("transport = \"tcp\"\n");
        }
        toml.push_str(&format!(
            "sip = \"{}\"\nhttp = \"{}\"\ncredentials = \"creds/{}.toml\"\n\n",
            n.sip, n.http, n.id
        ));
        // Every node knows its own uplink password and accepts everyone with
        // the demo password; real deployments list each device.
        std::fs::write(
            dir.join("creds").join(format!("{}.toml", n.id)),
            format!(
                "uplink_password = \"{pw}\"\ndefault_password = \"{pw}\"\n",
                pw = spec.password
            ),
        )?;
    }
    let quic_nodes: Vec<TreeNode> = nodes
        .iter()
        .filter(|n| spec.on_quic_link(n))
        .cloned()
        .collect();
    if !quic_nodes.is_empty() {
        make_certificates(&pki, &quic_nodes).map_err(std::io::Error::other)?;
    }
    let topology = dir.join("topology.toml");
    std::fs::write(&topology, toml)?;
    Ok(Tree { topology, nodes })
}

/// The workspace root above `start`: the nearest directory holding a
/// `Cargo.toml` with a `[workspace]` table.
pub fn workspace_root(start: &Path) -> Option<PathBuf> {
    start.ancestors().find_map(|dir| {
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).ok()?;
        manifest
            .lines()
            .any(|l| l.trim() == "[workspace]")
            .then(|| dir.to_path_buf())
    })
}

/// Where `make clips` puts the test clips, found without relying on the
/// current directory: next to the directory of the running binaries
/// (`target/release/gbdemo` → `target/clips`), else under the workspace
/// that holds the binary or the current directory. The first candidate
/// that exists wins; if none does, the one `make clips` would create.
pub fn clips_dir(bin_dir: &Path, cwd: &Path) -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(target) = bin_dir.parent() {
        candidates.push(target.join("clips"));
    }
    for start in [bin_dir, cwd] {
        if let Some(root) = workspace_root(start) {
            candidates.push(root.join("target").join("clips"));
        }
    }
    candidates
        .iter()
        .find(|c| c.is_dir())
        .or(candidates.last())
        .cloned()
        .unwrap_or_else(|| cwd.join("target").join("clips"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_policy_says_what_the_demo_prints() {
        use policy::{Action, Outcome, Policy, Request, Subject};
        let dir = tempfile::tempdir().unwrap();
        let tree = write_tree(dir.path(), &TreeSpec::default()).unwrap();
        let now = 1_900_000_000;
        let s = write_demo_sharing(dir.path(), &tree, 20, now, 180).unwrap();
        assert_eq!(s.visible_cameras, 120, "one town of 40 cameras kept below");
        let city = tree.root();
        let load = |id: &GbId| {
            Policy::load(&[dir.path().join("policy").join(format!("{id}.csv"))]).unwrap()
        };
        let at = |secs: i64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
        let decide = |p: &Policy, who: &str, cam: &str, action: Action, t: i64| {
            let subject: Subject = who.parse().unwrap();
            let channel = GbId::parse(cam).unwrap();
            p.decide(
                &Request {
                    subject: &subject,
                    channel: &channel,
                    ancestors: &[],
                    action,
                },
                at(t),
            )
            .outcome
                == Outcome::Allow
        };
        let p = load(&city.id);
        let villages = tree.level("village");
        let (police_v, traffic_v) = (villages[0], villages[2]);
        let intersection = camera(police_v, 10);
        let own = camera(traffic_v, 20);
        assert!(decide(&p, "dept:police", &own, Action::Playback, now));
        assert!(decide(&p, "dept:traffic", &own, Action::Playback, now));
        assert!(decide(&p, "dept:traffic", &intersection, Action::Live, now));
        assert!(!decide(
            &p,
            "dept:traffic",
            &intersection,
            Action::Playback,
            now
        ));
        assert!(!decide(
            &p,
            "dept:traffic",
            &camera(police_v, 11),
            Action::Live,
            now
        ));
        let (expiring, until) = &s.expiring;
        assert!(decide(&p, "dept:urban", expiring, Action::Live, until - 1));
        assert!(!decide(&p, "dept:urban", expiring, Action::Live, until + 1));
        // The partial county shares its first town's cameras, not the other's.
        let (county, kept) = s.partial;
        let cp = load(&county);
        let towns: Vec<_> = tree
            .level("town")
            .into_iter()
            .filter(|t| t.parent == Some(county))
            .collect();
        let cam_in = |town: GbId| format!("{}1310100001", town.domain());
        let node = format!("node:{}", city.id);
        assert!(decide(&cp, &node, &cam_in(towns[0].id), Action::Live, now));
        assert!(!decide(&cp, &node, &cam_in(kept), Action::Catalog, now));
        // A token per department, hashes only on disk.
        let tokens = std::fs::read_to_string(dir.path().join("tokens.toml")).unwrap();
        assert_eq!(s.depts.len(), 4);
        assert!(s.depts.iter().all(|d| !tokens.contains(&d.token)));
    }

    #[test]
    fn clips_are_found_from_the_binary_not_the_current_directory() {
        let ws = tempfile::tempdir().unwrap();
        let root = ws.path();
        std::fs::write(root.join("Cargo.toml"), "[workspace]\nmembers = []\n").unwrap();
        std::fs::create_dir_all(root.join("member")).unwrap();
        std::fs::write(root.join("member/Cargo.toml"), "[package]\n").unwrap();
        std::fs::create_dir_all(root.join("target/release")).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let bin = root.join("target/release");
        assert_eq!(workspace_root(&root.join("member")).as_deref(), Some(root));
        assert_eq!(workspace_root(elsewhere.path()), None);
        // Not made yet: the place `make clips` will fill.
        assert_eq!(clips_dir(&bin, elsewhere.path()), root.join("target/clips"));
        std::fs::create_dir_all(root.join("target/clips")).unwrap();
        assert_eq!(clips_dir(&bin, elsewhere.path()), root.join("target/clips"));
        // A binary outside any workspace (installed, or GBGATE_BIN_DIR),
        // run from inside the workspace.
        let installed = tempfile::tempdir().unwrap();
        let installed_bin = installed.path().join("bin");
        assert_eq!(
            clips_dir(&installed_bin, &root.join("member")),
            root.join("target/clips")
        );
    }
}

/// A department's token in the demo, and what its policy lets it do.
#[derive(Debug, Clone)]
pub struct DemoDept {
    /// The department (`dept:<name>`).
    pub dept: String,
    /// The token's holder.
    pub user: String,
    /// The bearer token (printed once by the demo).
    pub token: String,
    /// May use the admin endpoints.
    pub admin: bool,
    /// What the city's policy lets it see and watch, in words.
    pub may: String,
}

/// The demo's sharing: policy files per node, the tokens file, and each
/// node's `gbgate run` arguments.
#[derive(Debug, Clone)]
pub struct DemoSharing {
    /// The departments and their tokens.
    pub depts: Vec<DemoDept>,
    /// The camera whose temporary grant expires during the demo, and when
    /// (Unix seconds).
    pub expiring: (String, i64),
    /// The county that shares only part of its cameras, and the town whose
    /// cameras it keeps to itself.
    pub partial: (GbId, GbId),
    /// Cameras the city ends up seeing.
    pub visible_cameras: usize,
}

/// The prefix of a village's cameras (type 131): its town's 10-digit
/// domain, `1310`, and the village's serial digit (gbsim numbers a
/// village's devices from `device_serial_base + 1`).
fn village_cameras(village: &TreeNode) -> String {
    format!(
        "{}1310{}",
        village.id.domain(),
        village.device_serial_base / 100_000
    )
}

/// A camera of `village`: its `serial` above the village's base.
fn camera(village: &TreeNode, serial: u32) -> String {
    format!(
        "{}1310{:06}",
        village.id.domain(),
        village.device_serial_base + serial
    )
}

/// Write the demo's sharing policy under `dir/policy/` and `dir/tokens.toml`:
/// police see and replay everything; traffic owns the cameras of one
/// village and may watch (live only) the police cameras at intersections;
/// urban management owns another village plus a shared group, and holds a
/// grant on one more camera that expires `expire_after_secs` after
/// `now_unix`; the second county shares only its first town's cameras with
/// the city; every other node shares everything with its parent.
/// `channels_per_village` is what one fleet exposes.
pub fn write_demo_sharing(
    dir: &Path,
    tree: &Tree,
    channels_per_village: usize,
    now_unix: i64,
    expire_after_secs: i64,
) -> std::io::Result<DemoSharing> {
    let pdir = dir.join("policy");
    std::fs::create_dir_all(&pdir)?;
    let villages = tree.level("village");
    let city = tree.root();
    let counties = tree.level("county");
    let v = |i: usize| villages.get(i).copied();
    let (Some(police_v), Some(traffic_v), Some(urban_v)) = (v(0), v(2), v(3)) else {
        return Err(std::io::Error::other("the demo tree needs 4 villages"));
    };
    // Serials from the village's base: IPC i is 2i and its channel 2i+1
    // (1, 3, 5, 7); NVR 0 is 8 with channels 9–16, NVR 1 is 17 with 18–25.
    let intersections = [
        camera(police_v, 1),
        camera(police_v, 3),
        camera(police_v, 10),
    ];
    let urban_shared = [camera(police_v, 5), camera(traffic_v, 11)];
    let expiring = camera(police_v, 12);
    let until = now_unix + expire_after_secs;
    let expiry = policy::Expiry::from_unix(until)
        .ok_or_else(|| std::io::Error::other("expiry out of range"))?;
    let mut city_rules = String::from(
        "# Departments at the city (gbdemo). Deny wins; expiry is UTC.\n\
         p, dept:police, *, catalog, allow\n\
         p, dept:police, *, live, allow\n\
         p, dept:police, *, playback, allow\n",
    );
    city_rules.push_str(&format!(
        "# traffic owns {}'s cameras, and watches police cameras at intersections (live only)\n\
         p, dept:traffic, {}*, *, allow\n\
         p, dept:traffic, group:intersections, catalog, allow\n\
         p, dept:traffic, group:intersections, live, allow\n",
        traffic_v.name,
        village_cameras(traffic_v)
    ));
    for c in &intersections {
        city_rules.push_str(&format!("g2, {c}, group:intersections\n"));
    }
    city_rules.push_str(&format!(
        "# urban management owns {}'s cameras plus a shared group\n\
         p, dept:urban, {}*, *, allow\n\
         p, dept:urban, group:urban-shared, catalog, allow\n\
         p, dept:urban, group:urban-shared, live, allow\n",
        urban_v.name,
        village_cameras(urban_v)
    ));
    for c in &urban_shared {
        city_rules.push_str(&format!("g2, {c}, group:urban-shared\n"));
    }
    city_rules.push_str(&format!(
        "# a temporary grant, approved for the demo: it expires while you watch\n\
         p, dept:urban, {expiring}, catalog, allow, {expiry}\n\
         p, dept:urban, {expiring}, live, allow, {expiry}\n"
    ));
    std::fs::write(pdir.join(format!("{}.csv", city.id)), city_rules)?;
    let partial_county = counties
        .get(1)
        .copied()
        .ok_or_else(|| std::io::Error::other("the demo tree needs 2 counties"))?;
    let towns_of_partial: Vec<&TreeNode> = tree
        .level("town")
        .into_iter()
        .filter(|t| t.parent == Some(partial_county.id))
        .collect();
    let (Some(shared_town), Some(kept_town)) = (towns_of_partial.first(), towns_of_partial.get(1))
    else {
        return Err(std::io::Error::other("the partial county needs 2 towns"));
    };
    let mut hidden = 0;
    for n in &tree.nodes {
        let Some(parent) = n.parent else { continue };
        let rules = if n.id == partial_county.id {
            hidden = villages
                .iter()
                .filter(|v| v.parent == Some(kept_town.id))
                .count()
                * channels_per_village;
            format!(
                "# {} shares only {}'s cameras with the city\n\
                 p, node:{parent}, {}*, *, allow\n",
                n.name,
                shared_town.name,
                shared_town.id.domain()
            )
        } else {
            format!(
                "# {} shares everything with its parent\np, node:{parent}, *, *, allow\n",
                n.name
            )
        };
        std::fs::write(pdir.join(format!("{}.csv", n.id)), rules)?;
    }
    let mut depts = Vec::new();
    let mut tokens = String::from("# gbdemo tokens (hashes only)\n");
    for (user, dept, admin, may) in [
        (
            "ops",
            "ops",
            true,
            "admin: the catalog, topology, policy and audit".to_owned(),
        ),
        (
            "wang",
            "police",
            false,
            "every camera, live and playback".to_owned(),
        ),
        (
            "li",
            "traffic",
            false,
            format!(
                "{}'s cameras, and live only of {} police cameras at intersections",
                traffic_v.name,
                intersections.len()
            ),
        ),
        (
            "zhao",
            "urban",
            false,
            format!(
                "{}'s cameras, {} shared cameras, and {expiring} until {expiry}",
                urban_v.name,
                urban_shared.len()
            ),
        ),
    ] {
        let (token, entry) = gbgate::api::auth::new_token(user, dept, admin);
        tokens.push_str(&entry);
        depts.push(DemoDept {
            dept: dept.into(),
            user: user.into(),
            token,
            admin,
            may,
        });
    }
    std::fs::write(dir.join("tokens.toml"), tokens)?;
    Ok(DemoSharing {
        depts,
        expiring: (expiring, until),
        partial: (partial_county.id, kept_town.id),
        visible_cameras: villages.len() * channels_per_village - hidden,
    })
}

/// `gbgate run` arguments for node `n` of the demo: its policy file and the
/// tokens file written by [`write_demo_sharing`].
pub fn demo_run_args(dir: &Path, n: &TreeNode) -> Vec<String> {
    vec![
        "--policy".into(),
        dir.join("policy")
            .join(format!("{}.csv", n.id))
            .display()
            .to_string(),
        "--tokens".into(),
        dir.join("tokens.toml").display().to_string(),
    ]
}
