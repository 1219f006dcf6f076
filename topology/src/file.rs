//! The topology file: loading, the validated [`Topology`], and queries on the tree.
//!
//! Loading happens in two steps. Serde reads the TOML into a raw model whose
//! values are all strings with spans ([`toml::Spanned`]), so that nothing but
//! TOML syntax, unknown keys and wrong value types stop the read early; then
//! the `validate` module checks every node and the tree, collecting all problems
//! with their lines instead of stopping at the first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::credentials::{Credentials, CredentialsError};
use crate::id::GbId;
use crate::node::Node;
use crate::problem::{line_of, read_text, Problem, ReadText, TopologyError};
use crate::settings::{
    MediaTransport, Settings, DEFAULT_KEEPALIVE_INTERVAL_SECS, DEFAULT_KEEPALIVE_TIMEOUT_COUNT,
    DEFAULT_REGISTER_EXPIRES_SECS, DEFAULT_TRANSPORT,
};
use crate::spec::{DefaultsSpec, NodeSpec, TopologySpec};
use crate::validate;

/// The file as written: every value kept as text with its position.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    pub(crate) defaults: Option<Spanned<RawDefaults>>,
    #[serde(default)]
    pub(crate) node: Vec<Spanned<RawNode>>,
}

/// The `[defaults]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefaults {
    pub(crate) transport: Option<Spanned<String>>,
    pub(crate) keepalive_interval_secs: Option<Spanned<u64>>,
    pub(crate) keepalive_timeout_count: Option<Spanned<u64>>,
    pub(crate) register_expires_secs: Option<Spanned<u64>>,
    pub(crate) register_retry_secs: Option<Spanned<u64>>,
    pub(crate) sip_t1_ms: Option<Spanned<u64>>,
    pub(crate) linger_secs: Option<Spanned<u64>>,
    pub(crate) media_timeout_secs: Option<Spanned<u64>>,
    pub(crate) media_transport: Option<Spanned<String>>,
    pub(crate) query_new_registrants: Option<Spanned<bool>>,
    pub(crate) max_viewers_per_stream: Option<Spanned<u64>>,
    pub(crate) ptz_lock_secs: Option<Spanned<u64>>,
    pub(crate) intact_probe_secs: Option<Spanned<u64>>,
    pub(crate) subscribe_devices: Option<Spanned<Vec<String>>>,
    pub(crate) ptz_priority: Option<Spanned<std::collections::BTreeMap<String, Spanned<u64>>>>,
}

/// One `[[node]]` table as written. Required keys are `Option` too, so a
/// missing key is reported with the others rather than aborting the read.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    pub(crate) id: Option<Spanned<String>>,
    pub(crate) name: Option<Spanned<String>>,
    pub(crate) level: Option<Spanned<String>>,
    pub(crate) parent: Option<Spanned<String>>,
    pub(crate) sip: Option<Spanned<String>>,
    pub(crate) transport: Option<Spanned<String>>,
    pub(crate) http: Option<Spanned<String>>,
    pub(crate) quic: Option<Spanned<String>>,
    pub(crate) certs: Option<Spanned<String>>,
    pub(crate) credentials: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) upper: Vec<Spanned<crate::upper::RawUpper>>,
}

/// A validated topology: one tree of nodes under a single root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    path: PathBuf,
    settings: Settings,
    nodes: Vec<Node>,
    index: HashMap<GbId, usize>,
    /// Index of the root in `nodes`; validation guarantees exactly one.
    root: usize,
}

impl Topology {
    /// Reads and validates the topology file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Topology, TopologyError> {
        let path = path.as_ref();
        match read_text(path) {
            Ok(text) => Topology::parse(&text, path),
            Err(ReadText::Io(source)) => Err(TopologyError::Read {
                path: path.to_path_buf(),
                source,
            }),
            Err(ReadText::NotUtf8(problem)) => Err(TopologyError::Invalid {
                path: path.to_path_buf(),
                problems: vec![problem],
            }),
        }
    }

    /// Validates topology TOML `text`. `path` names the file in messages and
    /// is where relative `credentials` paths resolve from (its directory).
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Topology, TopologyError> {
        let path = path.as_ref();
        let invalid = |problems| TopologyError::Invalid {
            path: path.to_path_buf(),
            problems,
        };
        let raw: RawFile = toml::from_str(text).map_err(|err| {
            invalid(vec![Problem::new(
                path,
                err.span().map_or(1, |span| line_of(text, span.start)),
                toml_message(&err),
            )])
        })?;
        let (settings, nodes) = validate::validate(raw, text, path).map_err(invalid)?;
        let index: HashMap<GbId, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| (node.id, i))
            .collect();
        let Some(root) = nodes.iter().position(Node::is_root) else {
            // validate() reports a missing root, so this is unreachable; it
            // stays an error rather than a panic.
            return Err(invalid(vec![Problem::new(path, 1, "no root node")]));
        };
        Ok(Topology {
            path: path.to_path_buf(),
            settings,
            nodes,
            index,
            root,
        })
    }

    /// The file this topology was read from (as given to `load`/`parse`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `[defaults]` settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// All nodes, in file order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node with `id`, if it is in the topology.
    pub fn node(&self, id: &GbId) -> Option<&Node> {
        self.index.get(id).and_then(|i| self.nodes.get(*i))
    }

    /// True if `id` is one of the topology's nodes.
    pub fn contains(&self, id: &GbId) -> bool {
        self.index.contains_key(id)
    }

    /// The node without a parent (the top of the federation).
    pub fn root(&self) -> &Node {
        // `root` was found by `position` over `nodes`, and nodes never change
        // afterwards, so the index is in bounds.
        &self.nodes[self.root]
    }

    /// The parent of `id`; `None` for the root or an unknown ID.
    pub fn parent_of(&self, id: &GbId) -> Option<&Node> {
        self.node(id)
            .and_then(|node| node.parent)
            .and_then(|parent| self.node(&parent))
    }

    /// The direct children of `id`, in file order.
    pub fn children_of(&self, id: &GbId) -> impl Iterator<Item = &Node> + '_ {
        let id = *id;
        self.nodes
            .iter()
            .filter(move |node| node.parent == Some(id))
    }

    /// `id`'s node, its parent, … up to the root. Empty for an unknown ID.
    pub fn path_to_root(&self, id: &GbId) -> Vec<&Node> {
        let mut path = Vec::new();
        let mut current = self.node(id);
        while let Some(node) = current {
            // Validation rules out cycles; the bound keeps this finite anyway.
            if path.len() >= self.nodes.len() {
                break;
            }
            path.push(node);
            current = node.parent.and_then(|parent| self.node(&parent));
        }
        path
    }

    /// True if `ancestor` is strictly above `descendant` in the tree.
    pub fn is_ancestor(&self, ancestor: &GbId, descendant: &GbId) -> bool {
        self.path_to_root(descendant)
            .iter()
            .skip(1)
            .any(|node| node.id == *ancestor)
    }

    /// The child of `from` on the way down to `to`: the link a request for
    /// something homed at `to` leaves `from` by. `None` if `to` is not below `from`.
    pub fn child_toward(&self, from: &GbId, to: &GbId) -> Option<&Node> {
        self.path_to_root(to)
            .into_iter()
            .find(|node| node.parent == Some(*from))
    }

    /// The topology as a writable spec (credentials paths as written;
    /// settings and transports only where they differ from the defaults).
    pub fn to_spec(&self) -> TopologySpec {
        let s = &self.settings;
        let defaults = DefaultsSpec {
            transport: (s.transport != DEFAULT_TRANSPORT).then_some(s.transport),
            keepalive_interval_secs: (s.keepalive_interval.as_secs()
                != DEFAULT_KEEPALIVE_INTERVAL_SECS)
                .then_some(s.keepalive_interval.as_secs()),
            keepalive_timeout_count: (s.keepalive_timeout_count != DEFAULT_KEEPALIVE_TIMEOUT_COUNT)
                .then_some(s.keepalive_timeout_count),
            register_expires_secs: (s.register_expires.as_secs() != DEFAULT_REGISTER_EXPIRES_SECS)
                .then_some(s.register_expires.as_secs()),
            register_retry_secs: s.register_retry.map(|d| d.as_secs()),
            sip_t1_ms: s
                .sip_t1
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            linger_secs: s.linger.map(|d| d.as_secs()),
            media_timeout_secs: s.media_timeout.map(|d| d.as_secs()),
            media_transport: (s.media_transport != MediaTransport::Udp)
                .then(|| s.media_transport.as_str().to_owned()),
            query_new_registrants: (!s.query_new_registrants).then_some(false),
            max_viewers_per_stream: s.max_viewers_per_stream.map(|n| n as u64),
            ptz_lock_secs: s.ptz_lock.map(|d| d.as_secs()),
            intact_probe_secs: s.intact_probe.map(|d| d.as_secs()),
            subscribe_devices: s
                .subscribe_devices
                .iter()
                .map(|e| e.as_str().to_owned())
                .collect(),
            ptz_priority: s
                .ptz_priority
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("dept:")?.to_owned(), *v)))
                .collect(),
        };
        let nodes = self
            .nodes
            .iter()
            .map(|node| NodeSpec {
                id: node.id,
                name: node.name.clone(),
                level: node.level,
                parent: node.parent,
                sip: node.sip,
                transport: (node.transport != s.transport).then_some(node.transport),
                http: node.http,
                quic: node.quic,
                certs: node.certs_written.clone(),
                credentials: node.credentials_written.clone(),
                upper: node.upper.iter().map(Into::into).collect(),
            })
            .collect();
        TopologySpec { defaults, nodes }
    }

    /// The topology as topology-file TOML.
    pub fn to_toml_string(&self) -> Result<String, TopologyError> {
        self.to_spec().to_toml_string()
    }

    /// Checks the files the topology points to: every credentials file
    /// exists and is valid, every non-root node has an `uplink_password`,
    /// and its parent's file holds the same password for it.
    ///
    /// Loading does not do this, because a node only needs its own file and
    /// may run on a host that lacks the others.
    pub fn check_files(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut loaded: HashMap<GbId, Credentials> = HashMap::new();
        for node in &self.nodes {
            match Credentials::load(&node.credentials) {
                Ok(creds) => {
                    loaded.insert(node.id, creds);
                }
                Err(CredentialsError::Invalid {
                    problems: found, ..
                }) => problems.extend(found),
                Err(err) => problems.push(Problem::new(
                    &self.path,
                    node.credentials_line,
                    format!("node {}: {err}", node.id),
                )),
            }
        }
        for node in &self.nodes {
            let Some(parent_id) = node.parent else {
                continue;
            };
            let Some(own) = loaded.get(&node.id) else {
                continue;
            };
            let Some(uplink) = own.uplink_password() else {
                problems.push(Problem::new(
                    &node.credentials,
                    1,
                    format!(
                        "no uplink_password, but node {} needs one to REGISTER to its parent {parent_id}; add uplink_password = \"...\"",
                        node.id
                    ),
                ));
                continue;
            };
            let (Some(parent_creds), Some(parent)) =
                (loaded.get(&parent_id), self.node(&parent_id))
            else {
                continue;
            };
            match parent_creds.password_for(&node.id) {
                None => problems.push(Problem::new(
                    &parent.credentials,
                    1,
                    format!(
                        "no password for child node {id} (no [devices] entry and no default_password); add \"{id}\" = the uplink_password from {}",
                        node.credentials.display(),
                        id = node.id
                    ),
                )),
                Some(password) if password != uplink => problems.push(Problem::new(
                    &parent.credentials,
                    1,
                    format!(
                        "the password for child node {} differs from the uplink_password in {}; make them equal",
                        node.id,
                        node.credentials.display()
                    ),
                )),
                Some(_) => {}
            }
        }
        problems
    }
}

/// A serde/TOML error's reason, plus what to do for the common ones.
fn toml_message(err: &toml::de::Error) -> String {
    let message = err.message().trim_end();
    let hint = if message.starts_with("unknown field") {
        "; remove the key or fix its spelling"
    } else if message.starts_with("duplicate key") {
        "; each key may appear once per table"
    } else if message.contains("expected a sequence") {
        "; write each node as a [[node]] table (double brackets)"
    } else if message.starts_with("invalid type") || message.starts_with("invalid value") {
        "; check the value's type (strings go in quotes, numbers do not)"
    } else {
        "; fix the TOML syntax"
    };
    format!("{message}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{Level, Transport};
    use std::net::SocketAddr;

    fn id(s: &str) -> GbId {
        s.parse().unwrap()
    }

    /// City with two counties; the first county has two towns.
    fn spec() -> TopologySpec {
        let node = |id_: &str, level, parent: Option<&str>, port: u16| NodeSpec {
            id: id(id_),
            name: format!("node {id_}"),
            level,
            parent: parent.map(id),
            sip: SocketAddr::from(([127, 0, 0, 1], port)),
            transport: None,
            http: None,
            quic: None,
            certs: None,
            credentials: PathBuf::from(format!("creds/{port}.toml")),
            upper: Vec::new(),
        };
        let mut nodes = vec![
            node("35010000002000000001", Level::City, None, 15060),
            node(
                "35010200002000000002",
                Level::County,
                Some("35010000002000000001"),
                15061,
            ),
            node(
                "35010300002000000003",
                Level::County,
                Some("35010000002000000001"),
                15062,
            ),
            node(
                "35010201002000000004",
                Level::Town,
                Some("35010200002000000002"),
                15063,
            ),
            node(
                "35010202002000000005",
                Level::Town,
                Some("35010200002000000002"),
                15064,
            ),
        ];
        nodes[0].http = Some(SocketAddr::from(([127, 0, 0, 1], 18080)));
        nodes[3].transport = Some(Transport::Tcp);
        TopologySpec {
            defaults: DefaultsSpec {
                keepalive_interval_secs: Some(5),
                register_retry_secs: Some(2),
                sip_t1_ms: Some(50),
                ..DefaultsSpec::default()
            },
            nodes,
        }
    }

    #[test]
    fn tree_queries() {
        let t = spec().build("deploy/topology.toml").unwrap();
        let city = id("35010000002000000001");
        let county = id("35010200002000000002");
        let town = id("35010202002000000005");
        assert_eq!(t.root().id, city);
        assert!(t.root().is_root());
        assert_eq!(t.parent_of(&town).map(|n| n.id), Some(county));
        assert_eq!(t.parent_of(&city), None);
        let children: Vec<GbId> = t.children_of(&city).map(|n| n.id).collect();
        assert_eq!(children, vec![county, id("35010300002000000003")]);
        assert_eq!(t.children_of(&town).count(), 0);
        let path: Vec<GbId> = t.path_to_root(&town).iter().map(|n| n.id).collect();
        assert_eq!(path, vec![town, county, city]);
        assert!(t.path_to_root(&id("35010000002000000099")).is_empty());
        assert!(t.is_ancestor(&city, &town));
        assert!(!t.is_ancestor(&town, &city));
        assert!(!t.is_ancestor(&town, &town));
        assert_eq!(t.child_toward(&city, &town).map(|n| n.id), Some(county));
        assert_eq!(t.child_toward(&county, &town).map(|n| n.id), Some(town));
        assert!(t.child_toward(&town, &city).is_none());
        assert!(t.child_toward(&city, &city).is_none());
        assert!(t.contains(&county));
        assert_eq!(t.node(&county).unwrap().civil_code().as_str(), "350102");
        assert_eq!(t.path(), Path::new("deploy/topology.toml"));
    }

    #[test]
    fn toml_round_trip() {
        let original = spec();
        let t = original.build("deploy/topology.toml").unwrap();
        assert_eq!(t.to_spec(), original);
        let text = t.to_toml_string().unwrap();
        assert!(text.contains("[[node]]"), "{text}");
        assert!(text.contains("keepalive_interval_secs = 5"), "{text}");
        let again = Topology::parse(&text, "deploy/topology.toml").unwrap();
        assert_eq!(again, t);
        assert_eq!(
            again.nodes()[1].credentials,
            Path::new("deploy/creds/15061.toml")
        );
        assert_eq!(
            again.nodes()[1].credentials_as_written(),
            Path::new("creds/15061.toml")
        );
    }

    #[test]
    fn invalid_spec_reports_problems() {
        let mut bad = spec();
        bad.nodes[4].parent = Some(id("35010000002000000001"));
        let err = bad.build("gen.toml").unwrap_err();
        assert_eq!(err.problems().len(), 1, "{err}");
        assert!(err.to_string().contains("must be a county"), "{err}");
    }

    #[test]
    fn load_reports_missing_file_and_bad_utf8() {
        let err = Topology::load("/nonexistent/gbgate/topology.toml").unwrap_err();
        assert!(matches!(err, TopologyError::Read { .. }));
        let dir = scratch_dir("utf8");
        let path = dir.join("topology.toml");
        std::fs::write(&path, b"# ok\n# \xff bad\n").unwrap();
        let err = Topology::load(&path).unwrap_err();
        assert_eq!(err.problems()[0].line, 2, "{err}");
        assert!(err.to_string().contains("not UTF-8"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("topology-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("creds")).unwrap();
        dir
    }

    #[test]
    fn check_files_finds_missing_and_mismatched_credentials() {
        let dir = scratch_dir("files");
        let path = dir.join("topology.toml");
        let t = spec().build(&path).unwrap();
        std::fs::write(&path, t.to_toml_string().unwrap()).unwrap();
        let t = Topology::load(&path).unwrap();
        // Only the city's and one county's files exist at first.
        let city = Credentials::default()
            .with_device(id("35010200002000000002"), "county-pw")
            .to_toml_string()
            .unwrap();
        std::fs::write(dir.join("creds/15060.toml"), city).unwrap();
        let county = Credentials::default()
            .with_uplink_password("wrong")
            .with_default_password("below")
            .to_toml_string()
            .unwrap();
        std::fs::write(dir.join("creds/15061.toml"), county).unwrap();
        let problems = t.check_files();
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        // Three unreadable files (at their `credentials` lines) plus the mismatch.
        assert_eq!(problems.len(), 4, "{text:#?}");
        assert!(
            text.iter()
                .any(|p| p.contains("differs from the uplink_password")),
            "{text:#?}"
        );
        assert!(
            text.iter()
                .filter(|p| p.contains("cannot read credentials file"))
                .count()
                == 3
        );
        assert!(!text
            .iter()
            .any(|p| p.contains("county-pw") || p.contains("wrong")));

        // Fix everything: equal passwords, the remaining files present.
        let county = Credentials::default()
            .with_uplink_password("county-pw")
            .with_default_password("below")
            .to_toml_string()
            .unwrap();
        std::fs::write(dir.join("creds/15061.toml"), county).unwrap();
        std::fs::write(dir.join("creds/15062.toml"), "uplink_password = \"c2\"\n").unwrap();
        for port in [15063, 15064] {
            std::fs::write(
                dir.join(format!("creds/{port}.toml")),
                "uplink_password = \"below\"\n",
            )
            .unwrap();
        }
        let problems = t.check_files();
        // The city has no entry and no default for the second county.
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0]
            .message
            .contains("no password for child node 35010300002000000003"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
