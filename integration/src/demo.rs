//! The demo tree: one city, 2 counties, 2 towns per county, 2 villages per
//! town (15 nodes), written out as a topology file plus credentials files;
//! and where the test clips (`make clips`) are.

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
}

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

fn gid(civil8: &str, serial: u32) -> GbId {
    // Generated from fixed digits; a failure is a bug in this file.
    #[allow(clippy::expect_used)]
    GbId::parse(&format!("{civil8}002000{serial:06}")).expect("generated ID is 20 digits")
}

/// Build the tree and write `topology.toml` and `creds/*.toml` under `dir`.
pub fn write_tree(dir: &Path, spec: &TreeSpec) -> std::io::Result<Tree> {
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
    let mut toml = String::new();
    toml.push_str("# gbgate demo topology (generated).\n[defaults]\n");
    toml.push_str(&format!(
        "transport = \"{}\"\nkeepalive_interval_secs = {}\nkeepalive_timeout_count = 3\nregister_expires_secs = 3600\nregister_retry_secs = {}\nsip_t1_ms = {}\nlinger_secs = {}\nmedia_timeout_secs = {}\nmedia_transport = \"{}\"\n\n",
        spec.transport,
        spec.keepalive_secs,
        spec.register_retry_secs,
        spec.t1_ms,
        spec.linger_secs,
        spec.media_timeout_secs,
        spec.media_transport
    ));
    for n in &nodes {
        toml.push_str("[[node]]\n");
        toml.push_str(&format!(
            "id = \"{}\"\nname = \"{}\"\nlevel = \"{}\"\n",
            n.id, n.name, n.level
        ));
        if let Some(p) = n.parent {
            toml.push_str(&format!("parent = \"{p}\"\n"));
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
