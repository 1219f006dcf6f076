//! The rules a topology file must follow, each reported with its line.
//!
//! Per node: `id` is a 20-digit platform ID (type 200); `name`, `level`,
//! `sip` and `credentials` are present and well-formed; `parent`,
//! `transport` and `http` are well-formed when given. Across nodes: IDs and
//! listen addresses are unique; exactly one root; every parent exists; no
//! cycles; a parent is exactly one level up; a child's civil code extends
//! its parent's. Upper platforms (`[[node.upper]]`) have an ID and a
//! dialable `sip` address, are listed once per node and are not nodes of
//! the topology. Every rule runs even after others failed, so one load
//! shows everything to fix.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::file::{RawDefaults, RawFile, RawNode};
use crate::id::GbId;
use crate::node::{Level, Node, Transport};
use crate::problem::{line_of, Problem};
use crate::settings::Settings;
use crate::type_code;
use crate::upper::{
    RawUpper, TextCharset, UpperPlatform, DEFAULT_UPPER_EXPIRES_SECS,
    DEFAULT_UPPER_KEEPALIVE_COUNT, DEFAULT_UPPER_KEEPALIVE_SECS,
};

/// Checks `raw` (read from `text`, the file at `path`) and builds the
/// settings and nodes, or returns every problem found, ordered by line.
pub(crate) fn validate(
    raw: RawFile,
    text: &str,
    path: &Path,
) -> Result<(Settings, Vec<Node>), Vec<Problem>> {
    let mut checker = Checker {
        text,
        path,
        base_dir: path.parent().unwrap_or(Path::new("")),
        problems: Vec::new(),
    };
    let settings = match &raw.defaults {
        Some(defaults) => checker.settings(defaults.get_ref()),
        None => Settings::default(),
    };
    if raw.node.is_empty() {
        checker.report(
            1,
            "the file has no [[node]] tables; add one [[node]] table per gbgate node",
        );
    }
    let drafts: Vec<Draft> = raw
        .node
        .iter()
        .map(|node| checker.node(node, &settings))
        .collect();
    checker.unique_ids(&drafts);
    checker.unique_addresses(&drafts);
    checker.one_root(&drafts);
    checker.parents(&drafts);
    checker.cycles(&drafts);
    checker.uppers_outside(&drafts);
    checker.quic_links(&drafts);

    let mut problems = checker.problems;
    if !problems.is_empty() {
        // Stable: problems on one line keep the order the rules ran in.
        problems.sort_by_key(|problem| problem.line);
        return Err(problems);
    }
    let nodes: Vec<Node> = drafts.into_iter().filter_map(Draft::into_node).collect();
    Ok((settings, nodes))
}

/// A node's parent key.
#[derive(Debug, Clone, Copy)]
enum Parent {
    /// No `parent` key: a root.
    Root,
    /// A `parent` key that is not an ID (already reported).
    Bad,
    /// A parent ID and its line.
    Id(GbId, usize),
}

/// A node as far as it could be read; `None` fields had a problem (already reported).
#[derive(Debug)]
struct Draft {
    line: usize,
    id: Option<(GbId, usize)>,
    name: Option<String>,
    level: Option<Level>,
    parent: Parent,
    sip: Option<(SocketAddr, usize)>,
    transport: Option<Transport>,
    /// `Some(None)`: no http key; `None`: a bad one.
    http: Option<Option<(SocketAddr, usize)>>,
    /// `Some(None)`: no quic key; `None`: a bad one.
    quic: Option<Option<(SocketAddr, usize)>>,
    /// The certificate directory: resolved, as written, line.
    certs: Option<(PathBuf, PathBuf, usize)>,
    /// Line of the `transport` key, or the node's line.
    transport_line: usize,
    credentials: Option<(PathBuf, PathBuf, usize)>,
    /// `None` when some `[[node.upper]]` had a problem (already reported).
    upper: Option<Vec<(UpperPlatform, usize)>>,
}

impl Draft {
    /// The finished node, if every field was valid.
    fn into_node(self) -> Option<Node> {
        let parent = match self.parent {
            Parent::Root => None,
            Parent::Id(id, _) => Some(id),
            Parent::Bad => return None,
        };
        let (credentials, credentials_written, credentials_line) = self.credentials?;
        Some(Node {
            id: self.id?.0,
            name: self.name?,
            level: self.level?,
            parent,
            sip: self.sip?.0,
            transport: self.transport?,
            http: self.http?.map(|(addr, _)| addr),
            quic: self.quic?.map(|(addr, _)| addr),
            certs: self.certs.as_ref().map(|(p, _, _)| p.clone()),
            certs_written: self.certs.map(|(_, w, _)| w),
            credentials,
            credentials_written,
            line: self.line,
            credentials_line,
            upper: self.upper?.into_iter().map(|(u, _)| u).collect(),
        })
    }
}

struct Checker<'a> {
    text: &'a str,
    path: &'a Path,
    base_dir: &'a Path,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn report(&mut self, line: usize, message: impl Into<String>) {
        self.problems.push(Problem::new(self.path, line, message));
    }

    fn line<T>(&self, spanned: &Spanned<T>) -> usize {
        line_of(self.text, spanned.span().start)
    }

    fn settings(&mut self, raw: &RawDefaults) -> Settings {
        let mut settings = Settings::default();
        if let Some(transport) = &raw.transport {
            match transport.get_ref().parse() {
                Ok(t) => settings.transport = t,
                Err(err) => {
                    self.report(self.line(transport), format!("[defaults] transport: {err}"))
                }
            }
        }
        if let Some(secs) = &raw.keepalive_interval_secs {
            match *secs.get_ref() {
                0 => self.report(
                    self.line(secs),
                    "keepalive_interval_secs is 0; use at least 1 (GB/T 28181 default: 60)",
                ),
                n => settings.keepalive_interval = Duration::from_secs(n),
            }
        }
        if let Some(count) = &raw.keepalive_timeout_count {
            match u32::try_from(*count.get_ref()) {
                Ok(n) if n > 0 => settings.keepalive_timeout_count = n,
                _ => self.report(
                    self.line(count),
                    format!(
                        "keepalive_timeout_count is {}; use a count from 1 to {} (GB/T 28181 default: 3)",
                        count.get_ref(),
                        u32::MAX
                    ),
                ),
            }
        }
        if let Some(secs) = &raw.register_expires_secs {
            match *secs.get_ref() {
                0 => self.report(
                    self.line(secs),
                    "register_expires_secs is 0; use at least 1 (GB/T 28181 default: 3600)",
                ),
                n => settings.register_expires = Duration::from_secs(n),
            }
        }
        if let Some(secs) = &raw.register_retry_secs {
            match *secs.get_ref() {
                0 => self.report(
                    self.line(secs),
                    "register_retry_secs is 0; use at least 1 (GB/T 28181-2022 asks for 60)",
                ),
                n => settings.register_retry = Some(Duration::from_secs(n)),
            }
        }
        if let Some(ms) = &raw.sip_t1_ms {
            match *ms.get_ref() {
                0 => self.report(
                    self.line(ms),
                    "sip_t1_ms is 0; use at least 1 (RFC 3261 default: 500)",
                ),
                n => settings.sip_t1 = Some(Duration::from_millis(n)),
            }
        }
        if let Some(secs) = &raw.linger_secs {
            // 0 is allowed: close as soon as the last viewer leaves.
            settings.linger = Some(Duration::from_secs(*secs.get_ref()));
        }
        if let Some(secs) = &raw.media_timeout_secs {
            match *secs.get_ref() {
                0 => self.report(
                    self.line(secs),
                    "media_timeout_secs is 0; use at least 1 (default: 10)",
                ),
                n => settings.media_timeout = Some(Duration::from_secs(n)),
            }
        }
        if let Some(q) = &raw.query_new_registrants {
            settings.query_new_registrants = *q.get_ref();
        }
        if let Some(n) = &raw.max_viewers_per_stream {
            match usize::try_from(*n.get_ref()) {
                Ok(0) | Err(_) => self.report(
                    self.line(n),
                    "max_viewers_per_stream must be at least 1 (default: 1,000 per CPU core)",
                ),
                Ok(n) => settings.max_viewers_per_stream = Some(n),
            }
        }
        if let Some(secs) = &raw.ptz_lock_secs {
            match *secs.get_ref() {
                0 => self.report(
                    self.line(secs),
                    "ptz_lock_secs is 0; use at least 1 (default: 30)",
                ),
                n => settings.ptz_lock = Some(Duration::from_secs(n)),
            }
        }
        if let Some(secs) = &raw.intact_probe_secs {
            settings.intact_probe = Some(Duration::from_secs(*secs.get_ref()));
        }
        if let Some(list) = &raw.subscribe_devices {
            let mut events = Vec::new();
            for name in list.get_ref() {
                match crate::settings::DeviceEvent::parse(name) {
                    Some(e) if !events.contains(&e) => events.push(e),
                    Some(_) => {}
                    None => self.report(
                        self.line(list),
                        format!("subscribe_devices: {name:?} is not one of \"catalog\", \"alarm\", \"mobile_position\""),
                    ),
                }
            }
            events.sort();
            settings.subscribe_devices = events;
        }
        if let Some(table) = &raw.ptz_priority {
            for (dept, p) in table.get_ref() {
                let valid = !dept.is_empty()
                    && dept
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
                if !valid {
                    self.report(
                        self.line(table),
                        format!("ptz_priority: {dept:?} is not a department name (letters, digits, _ . -)"),
                    );
                    continue;
                }
                match u8::try_from(*p.get_ref()) {
                    Ok(v @ 1..=5) => {
                        settings.ptz_priority.insert(format!("dept:{dept}"), v);
                    }
                    _ => self.report(
                        self.line(p),
                        format!(
                            "ptz_priority.{dept} = {}: use 1 (highest) to 5 (lowest)",
                            p.get_ref()
                        ),
                    ),
                }
            }
        }
        if let Some(t) = &raw.media_transport {
            match crate::settings::MediaTransport::parse(t.get_ref()) {
                Some(m) => settings.media_transport = m,
                None => self.report(
                    self.line(t),
                    format!(
                        "media_transport is {:?}; use \"udp\", \"tcp-passive\" or \"tcp-active\"",
                        t.get_ref()
                    ),
                ),
            }
        }
        settings
    }

    fn node(&mut self, spanned: &Spanned<RawNode>, settings: &Settings) -> Draft {
        let line = self.line(spanned);
        let raw = spanned.get_ref();
        let id = self.id(raw, line);
        let who = id.map_or_else(
            || format!("node at line {line}"),
            |(id, _)| format!("node {id}"),
        );

        let name = match &raw.name {
            None => {
                self.report(line, format!("{who} has no `name`; add name = \"...\""));
                None
            }
            Some(name) if name.get_ref().trim().is_empty() => {
                self.report(
                    self.line(name),
                    format!("{who}: `name` is empty; give the node a name"),
                );
                None
            }
            Some(name) => Some(name.get_ref().clone()),
        };

        let level = match &raw.level {
            None => {
                self.report(
                    line,
                    format!("{who} has no `level`; add level = \"city\", \"county\", \"town\" or \"village\""),
                );
                None
            }
            Some(level) => match level.get_ref().parse() {
                Ok(level) => Some(level),
                Err(err) => {
                    self.report(self.line(level), format!("{who}: {err}"));
                    None
                }
            },
        };

        let parent = match &raw.parent {
            None => Parent::Root,
            Some(parent) => match GbId::parse(parent.get_ref()) {
                Ok(parent_id) => Parent::Id(parent_id, self.line(parent)),
                Err(err) => {
                    self.report(
                        self.line(parent),
                        format!(
                            "{who}: parent {:?} is not a GB/T 28181 ID: {err}",
                            parent.get_ref()
                        ),
                    );
                    Parent::Bad
                }
            },
        };

        let sip = match &raw.sip {
            None => {
                self.report(
                    line,
                    format!("{who} has no `sip` listen address; add sip = \"IP:PORT\", e.g. \"127.0.0.1:5060\""),
                );
                None
            }
            Some(sip) => self.sip_address(sip, &who),
        };

        let transport = match &raw.transport {
            None => Some(settings.transport),
            Some(transport) => match transport.get_ref().parse() {
                Ok(t) => Some(t),
                Err(err) => {
                    self.report(self.line(transport), format!("{who}: {err}"));
                    None
                }
            },
        };

        let transport_line = raw.transport.as_ref().map_or(line, |t| self.line(t));
        let http = self.optional_address(raw.http.as_ref(), &who, "http", "127.0.0.1:8080");
        let quic = self.optional_address(raw.quic.as_ref(), &who, "quic", "127.0.0.1:5061");
        let certs = raw.certs.as_ref().and_then(|path| {
            self.path(
                path,
                &who,
                "certs",
                "the directory `gbgate cert` wrote the node's certificate to",
            )
        });

        let credentials = match &raw.credentials {
            None => {
                self.report(
                    line,
                    format!("{who} has no `credentials`; add credentials = \"path/to/node-credentials.toml\" (relative to this file)"),
                );
                None
            }
            Some(path) => self.path(
                path,
                &who,
                "credentials",
                "the path of the node's credentials file",
            ),
        };

        let mut upper = Some(Vec::new());
        for table in &raw.upper {
            match (self.upper(table, &who), upper.as_mut()) {
                (Some(u), Some(list)) => {
                    if list
                        .iter()
                        .any(|(o, _): &(UpperPlatform, usize)| o.id == u.0.id)
                    {
                        self.report(
                            u.1,
                            format!("{who}: upper platform {} is listed twice", u.0.id),
                        );
                    } else {
                        list.push(u);
                    }
                }
                _ => upper = None,
            }
        }

        Draft {
            line,
            id,
            name,
            level,
            parent,
            sip,
            transport,
            http,
            quic,
            certs,
            transport_line,
            credentials,
            upper,
        }
    }

    /// A path key (`credentials`, `certs`): resolved against the file's
    /// directory, as written, and its line; `None` when empty (reported).
    fn path(
        &mut self,
        value: &Spanned<String>,
        who: &str,
        key: &str,
        what: &str,
    ) -> Option<(PathBuf, PathBuf, usize)> {
        if value.get_ref().trim().is_empty() {
            self.report(
                self.line(value),
                format!("{who}: `{key}` is empty; give {what}"),
            );
            return None;
        }
        let written = PathBuf::from(value.get_ref());
        Some((self.base_dir.join(&written), written, self.line(value)))
    }

    /// An optional listen address key (`http`, `quic`): `Some(None)` when
    /// absent, `None` when it does not parse (reported).
    fn optional_address(
        &mut self,
        value: Option<&Spanned<String>>,
        who: &str,
        key: &str,
        example: &str,
    ) -> Option<Option<(SocketAddr, usize)>> {
        let Some(value) = value else {
            return Some(None);
        };
        match value.get_ref().parse::<SocketAddr>() {
            Ok(addr) => Some(Some((addr, self.line(value)))),
            Err(_) => {
                self.report(
                    self.line(value),
                    format!(
                        "{who}: {key} {:?} is not a socket address; write IP:PORT, e.g. \"{example}\" or \"[::1]:8080\"",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// A child linked over QUIC dials its parent's `quic` address, and both
    /// ends need a certificate directory. Upper platforms are third-party:
    /// they speak GB/T 28181 over UDP or TCP only.
    fn quic_links(&mut self, drafts: &[Draft]) {
        let by_id: HashMap<GbId, &Draft> = drafts
            .iter()
            .rev()
            .filter_map(|draft| draft.id.map(|(id, _)| (id, draft)))
            .collect();
        for draft in drafts {
            if draft.transport != Some(Transport::Quic) {
                continue;
            }
            let who = describe(draft);
            if draft.certs.is_none() {
                self.report(
                    draft.transport_line,
                    format!("{who} links to its parent over QUIC but has no `certs`; add certs = \"<directory with ca.crt, <id>.crt and <id>.key>\" (see `gbgate cert issue`)"),
                );
            }
            let Parent::Id(parent_id, _) = draft.parent else {
                if matches!(draft.parent, Parent::Root) {
                    self.report(
                        draft.transport_line,
                        format!("{who} is the root: `transport` names the link to a parent, and it has none"),
                    );
                }
                continue;
            };
            let Some(parent) = by_id.get(&parent_id) else {
                continue; // reported by `parents`
            };
            if matches!(parent.quic, Some(None)) {
                self.report(
                    draft.transport_line,
                    format!("{who} links to its parent over QUIC, but its parent {parent_id} (line {}) has no `quic` listen address; add quic = \"IP:PORT\" there", parent.line),
                );
            }
            if parent.certs.is_none() {
                self.report(
                    draft.transport_line,
                    format!("{who} links to its parent over QUIC, but its parent {parent_id} (line {}) has no `certs`; add certs = \"<directory>\" there", parent.line),
                );
            }
        }
        for draft in drafts {
            for (u, line) in draft.upper.iter().flatten() {
                if u.transport == Transport::Quic {
                    self.report(
                        *line,
                        format!("upper platform {} has transport \"quic\"; QUIC links join gbgate nodes only, so use udp or tcp for a third-party platform", u.id),
                    );
                }
            }
        }
    }

    /// One `[[node.upper]]` table of node `who`, and its line.
    fn upper(&mut self, spanned: &Spanned<RawUpper>, who: &str) -> Option<(UpperPlatform, usize)> {
        let line = self.line(spanned);
        let raw = spanned.get_ref();
        let whose = format!("{who}, upper platform at line {line}");
        let id = match &raw.id {
            None => {
                self.report(
                    line,
                    format!("{whose} has no `id`; add id = \"<the platform's 20-digit ID>\""),
                );
                None
            }
            Some(id) => match GbId::parse(id.get_ref()) {
                Ok(v) => Some(v),
                Err(err) => {
                    self.report(
                        self.line(id),
                        format!(
                            "{whose}: id {:?} is not a GB/T 28181 ID: {err}",
                            id.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        let name = raw
            .name
            .as_ref()
            .map(|n| n.get_ref().trim().to_owned())
            .filter(|n| !n.is_empty());
        let sip = match &raw.sip {
            None => {
                self.report(
                    line,
                    format!("{whose} has no `sip`; add sip = \"IP:PORT\" of the platform"),
                );
                None
            }
            Some(sip) => self.sip_address(sip, &whose).map(|(a, _)| a),
        };
        let transport = match &raw.transport {
            None => Some(Transport::Udp),
            Some(t) => match t.get_ref().parse() {
                Ok(t) => Some(t),
                Err(err) => {
                    self.report(self.line(t), format!("{whose}: {err}"));
                    None
                }
            },
        };
        let charset = match &raw.charset {
            None => Some(TextCharset::default()),
            Some(c) => match c.get_ref().parse() {
                Ok(c) => Some(c),
                Err(err) => {
                    self.report(self.line(c), format!("{whose}: {err}"));
                    None
                }
            },
        };
        let mut positive =
            |value: &Option<Spanned<u64>>, key: &str, default: u64, min: u64| match value {
                None => Some(default),
                Some(v) if *v.get_ref() >= min => Some(*v.get_ref()),
                Some(v) => {
                    let l = line_of(self.text, v.span().start);
                    self.problems.push(Problem::new(
                        self.path,
                        l,
                        format!("{whose}: {key} must be at least {min}"),
                    ));
                    None
                }
            };
        let keepalive = positive(
            &raw.keepalive_interval_secs,
            "keepalive_interval_secs",
            DEFAULT_UPPER_KEEPALIVE_SECS,
            1,
        );
        let count = positive(
            &raw.keepalive_timeout_count,
            "keepalive_timeout_count",
            u64::from(DEFAULT_UPPER_KEEPALIVE_COUNT),
            1,
        )
        .map(|c| u32::try_from(c).unwrap_or(u32::MAX));
        let expires = positive(
            &raw.register_expires_secs,
            "register_expires_secs",
            DEFAULT_UPPER_EXPIRES_SECS,
            60,
        );
        let id = id?;
        Some((
            UpperPlatform {
                id,
                name: name.unwrap_or_else(|| format!("upper platform {id}")),
                sip: sip?,
                transport: transport?,
                charset: charset?,
                keepalive_interval_secs: keepalive?,
                keepalive_timeout_count: count?,
                register_expires_secs: expires?,
            },
            line,
        ))
    }

    /// The node's ID, which must be a platform (type 200).
    fn id(&mut self, raw: &RawNode, line: usize) -> Option<(GbId, usize)> {
        let Some(spanned) = &raw.id else {
            self.report(
                line,
                "this [[node]] has no `id`; add id = \"<20-digit ID with type code 200>\"",
            );
            return None;
        };
        let id_line = self.line(spanned);
        let id = match GbId::parse(spanned.get_ref()) {
            Ok(id) => id,
            Err(err) => {
                self.report(
                    id_line,
                    format!("id {:?} is not a GB/T 28181 ID: {err}", spanned.get_ref()),
                );
                return None;
            }
        };
        if !id.is_platform() {
            let suggestion = id
                .with_type_code(type_code::PLATFORM)
                .map(|s| format!(", e.g. {s}"))
                .unwrap_or_default();
            self.report(
                id_line,
                format!(
                    "id {id} has type code {} ({}) in digits 11-13, but a gbgate node is a platform: use type code 200{suggestion}",
                    id.type_code(),
                    id.type_name()
                ),
            );
        }
        // Kept even when the type is wrong so parent and duplicate checks can use it.
        Some((id, id_line))
    }

    fn sip_address(&mut self, sip: &Spanned<String>, who: &str) -> Option<(SocketAddr, usize)> {
        let line = self.line(sip);
        let Ok(addr) = sip.get_ref().parse::<SocketAddr>() else {
            self.report(
                line,
                format!(
                    "{who}: sip {:?} is not a socket address; write IP:PORT, e.g. \"127.0.0.1:5060\" or \"[::1]:5060\"",
                    sip.get_ref()
                ),
            );
            return None;
        };
        // Children dial this address to register, so it must name one host and port.
        if addr.ip().is_unspecified() {
            self.report(
                line,
                format!("{who}: sip {addr} is a wildcard address that children cannot dial; use the node's own IP"),
            );
            return None;
        }
        if addr.port() == 0 {
            self.report(
                line,
                format!(
                    "{who}: sip {addr} has port 0, which children cannot dial; give a fixed port"
                ),
            );
            return None;
        }
        Some((addr, line))
    }

    /// An upper platform is not one of our nodes: a node in the topology is
    /// reached as a `parent`, with the tree's rules.
    fn uppers_outside(&mut self, drafts: &[Draft]) {
        let ids: HashSet<GbId> = drafts
            .iter()
            .filter_map(|d| d.id.map(|(id, _)| id))
            .collect();
        for draft in drafts {
            for (u, line) in draft.upper.iter().flatten() {
                if ids.contains(&u.id) {
                    self.report(
                        *line,
                        format!("upper platform {} is a node of this topology; make it this node's `parent` instead", u.id),
                    );
                }
            }
        }
    }

    fn unique_ids(&mut self, drafts: &[Draft]) {
        let mut first: HashMap<GbId, usize> = HashMap::new();
        for draft in drafts {
            let Some((id, line)) = draft.id else { continue };
            if let Some(first_line) = first.get(&id) {
                self.report(
                    line,
                    format!("duplicate node ID {id}: the node at line {first_line} already uses it; give every node its own ID"),
                );
            } else {
                first.insert(id, draft.line);
            }
        }
    }

    /// SIP binds UDP and TCP, HTTP binds TCP: any two equal addresses clash.
    fn unique_addresses(&mut self, drafts: &[Draft]) {
        let mut first: HashMap<SocketAddr, (&'static str, usize)> = HashMap::new();
        for draft in drafts {
            let sip = draft.sip.map(|(addr, line)| ("sip", addr, line));
            let http = draft
                .http
                .flatten()
                .map(|(addr, line)| ("http", addr, line));
            let quic = draft
                .quic
                .flatten()
                .map(|(addr, line)| ("quic", addr, line));
            for (key, addr, line) in sip.into_iter().chain(http).chain(quic) {
                if let Some((first_key, first_line)) = first.get(&addr) {
                    self.report(
                        line,
                        format!("{key} address {addr} is already the {first_key} address at line {first_line}; every listen address must be unique"),
                    );
                } else {
                    first.insert(addr, (key, line));
                }
            }
        }
    }

    fn one_root(&mut self, drafts: &[Draft]) {
        let mut roots = drafts
            .iter()
            .filter(|draft| matches!(draft.parent, Parent::Root));
        let Some(root) = roots.next() else {
            if !drafts.is_empty() {
                self.report(
                    drafts.first().map_or(1, |d| d.line),
                    "no root node: every node has a `parent`; remove `parent` from the top node",
                );
            }
            return;
        };
        let root_name = describe(root);
        for extra in roots {
            self.report(
                extra.line,
                format!(
                    "{} has no `parent`, but {root_name} at line {} is already the root; there must be exactly one root, so add a `parent`",
                    describe(extra),
                    root.line
                ),
            );
        }
    }

    /// Parent exists, is one level up, and its region contains the child's.
    fn parents(&mut self, drafts: &[Draft]) {
        let by_id: HashMap<GbId, &Draft> = drafts
            .iter()
            .rev() // so the first node with an ID wins on duplicates
            .filter_map(|draft| draft.id.map(|(id, _)| (id, draft)))
            .collect();
        for draft in drafts {
            let Parent::Id(parent_id, line) = draft.parent else {
                continue;
            };
            let who = describe(draft);
            if draft.id.map(|(id, _)| id) == Some(parent_id) {
                self.report(
                    line,
                    format!(
                        "{who} names itself as its parent; give the ID of the node one level up"
                    ),
                );
                continue;
            }
            let Some(parent) = by_id.get(&parent_id) else {
                // The parent may be a node whose own id could not be read.
                let unreadable = drafts
                    .iter()
                    .find(|d| d.id.is_none() && d.line != draft.line)
                    .map(|d| format!(", or fix the unreadable id of the node at line {}", d.line))
                    .unwrap_or_default();
                self.report(
                    line,
                    format!("{who}: parent {parent_id} is not a node in this file; add a [[node]] with that id or fix `parent`{unreadable}"),
                );
                continue;
            };
            if let Some(level) = draft.level {
                match (level.parent_level(), parent.level) {
                    (None, _) => self.report(
                        line,
                        format!("{who} is a city, the top level, so it cannot have a parent; remove `parent` or change `level`"),
                    ),
                    (Some(expected), Some(actual)) if expected != actual => self.report(
                        line,
                        format!("{who} is a {level}, so its parent must be a {expected}, but {parent_id} is a {actual}; fix `parent` or `level`"),
                    ),
                    _ => {}
                }
            }
            if let Some((id, _)) = draft.id {
                let (child, up) = (id.civil_code(), parent_id.civil_code());
                if !child.is_under(&up) {
                    self.report(
                        line,
                        format!(
                            "{who} has civil code {child:?}, outside its parent {parent_id}'s region {up:?}; a child's ID must start with its parent's civil code {}",
                            up.as_str()
                        ),
                    );
                } else if child.len() == up.len() && up.len() < 8 {
                    self.report(
                        line,
                        format!(
                            "{who} has the same civil code {:?} as its parent {parent_id}; a child serves a smaller region, so its civil code must add a 2-digit level (e.g. {}01)",
                            child.as_str(),
                            up.as_str()
                        ),
                    );
                }
            }
        }
    }

    /// Reports each cycle of parent links once, at its first node in the file.
    fn cycles(&mut self, drafts: &[Draft]) {
        let mut parent_of: HashMap<GbId, GbId> = HashMap::new();
        let mut line_of_id: HashMap<GbId, usize> = HashMap::new();
        for draft in drafts {
            if let (Some((id, _)), Parent::Id(parent, _)) = (draft.id, draft.parent) {
                parent_of.entry(id).or_insert(parent);
            }
            if let Some((id, _)) = draft.id {
                line_of_id.entry(id).or_insert(draft.line);
            }
        }
        let mut done: HashSet<GbId> = HashSet::new();
        for draft in drafts {
            let Some((start, _)) = draft.id else { continue };
            let mut path: Vec<GbId> = Vec::new();
            let mut current = Some(start);
            while let Some(id) = current {
                if done.contains(&id) {
                    break;
                }
                if let Some(pos) = path.iter().position(|seen| *seen == id) {
                    let cycle = path.get(pos..).unwrap_or_default();
                    // A node that is its own parent was reported by `parents`.
                    if cycle.len() > 1 {
                        self.report_cycle(cycle, &line_of_id);
                    }
                    break;
                }
                path.push(id);
                current = parent_of.get(&id).copied();
            }
            done.extend(path);
        }
    }

    fn report_cycle(&mut self, cycle: &[GbId], line_of_id: &HashMap<GbId, usize>) {
        let line = cycle
            .iter()
            .filter_map(|id| line_of_id.get(id))
            .min()
            .copied()
            .unwrap_or(1);
        let mut chain: Vec<String> = cycle.iter().map(GbId::to_string).collect();
        if let Some(first) = cycle.first() {
            chain.push(first.to_string());
        }
        self.report(
            line,
            format!(
                "nodes {} form a cycle of parents; every chain of parents must end at the root",
                chain.join(" -> ")
            ),
        );
    }
}

/// "node ID" or "node at line N" for messages.
fn describe(draft: &Draft) -> String {
    match draft.id {
        Some((id, _)) => format!("node {id}"),
        None => format!("node at line {}", draft.line),
    }
}

#[cfg(test)]
mod tests {
    use crate::{Level, TextCharset, Topology, TopologyError, Transport};
    use std::path::Path;
    use std::time::Duration;

    const CITY: &str = "35010000002000000001";
    const COUNTY: &str = "35010200002000000002";
    const TOWN: &str = "35010201002000000003";
    const VILLAGE: &str = "35010201002000000004";

    /// A valid four-tier file; tests break one thing at a time.
    fn good() -> String {
        format!(
            r#"# four tiers
[defaults]
transport = "udp"
keepalive_interval_secs = 30

[[node]]
id = "{CITY}"
name = "Fuzhou city"
level = "city"
sip = "127.0.0.1:15060"
http = "127.0.0.1:18080"
credentials = "creds/city.toml"

[[node]]
id = "{COUNTY}"
name = "Gulou county"
level = "county"
parent = "{CITY}"
sip = "127.0.0.1:15061"
transport = "tcp"
credentials = "creds/county.toml"

[[node]]
id = "{TOWN}"
name = "Town"
level = "town"
parent = "{COUNTY}"
sip = "127.0.0.1:15062"
credentials = "creds/town.toml"

[[node]]
id = "{VILLAGE}"
name = "Village"
level = "village"
parent = "{TOWN}"
sip = "127.0.0.1:15063"
credentials = "/abs/village.toml"
"#
        )
    }

    /// Problems as (line, message) for a text that must fail.
    fn problems(text: &str) -> Vec<(usize, String)> {
        match Topology::parse(text, "dir/topology.toml") {
            Ok(_) => panic!("expected problems in:\n{text}"),
            Err(TopologyError::Invalid { problems, .. }) => {
                problems.into_iter().map(|p| (p.line, p.message)).collect()
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    }

    /// Asserts exactly one problem, on `line`, whose message contains `needle`.
    fn one_problem(text: &str, line: usize, needle: &str) {
        let found = problems(text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].0, line, "{found:#?}");
        assert!(found[0].1.contains(needle), "{found:#?}");
    }

    fn replace(from: &str, to: &str) -> String {
        let text = good();
        assert!(text.contains(from), "{from}");
        text.replacen(from, to, 1)
    }

    /// The city of `good()` with upper platforms written after it.
    fn with_upper(upper: &str) -> String {
        good().replacen(
            "credentials = \"creds/city.toml\"\n",
            &format!("credentials = \"creds/city.toml\"\n{upper}\n"),
            1,
        )
    }

    #[test]
    fn a_quic_link_loads_and_round_trips() {
        let text = replace(
            "http = \"127.0.0.1:18080\"\n",
            "http = \"127.0.0.1:18080\"\nquic = \"127.0.0.1:15161\"\ncerts = \"pki\"\n",
        )
        .replacen(
            "transport = \"tcp\"\n",
            "transport = \"quic\"\ncerts = \"/etc/gbgate/pki\"\n",
            1,
        );
        let t = Topology::parse(&text, "dir/topology.toml").unwrap();
        let city = t.root();
        assert_eq!(city.quic, Some("127.0.0.1:15161".parse().unwrap()));
        assert_eq!(city.certs.as_deref(), Some(Path::new("dir/pki")));
        let county = t.node(&crate::GbId::parse(COUNTY).unwrap()).unwrap();
        assert_eq!(county.transport, Transport::Quic);
        assert_eq!(county.certs.as_deref(), Some(Path::new("/etc/gbgate/pki")));
        let again = Topology::parse(&t.to_toml_string().unwrap(), "dir/topology.toml").unwrap();
        assert_eq!(again, t);
    }

    #[test]
    fn a_quic_link_needs_the_parents_address_and_certificates_on_both_ends() {
        let text = replace("transport = \"tcp\"", "transport = \"quic\"");
        let found = problems(&text);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found.iter().all(|(l, _)| *l == 20), "{found:#?}");
        assert!(found[0].1.contains("has no `certs`"), "{found:#?}");
        assert!(
            found[1].1.contains("has no `quic` listen address"),
            "{found:#?}"
        );
        assert!(found[2]
            .1
            .contains("its parent 35010000002000000001 (line 6) has no `certs`"));
        one_problem(
            &replace("http = \"127.0.0.1:18080\"", "quic = \"127.0.0.1:15061\""),
            19,
            "sip address 127.0.0.1:15061 is already the quic address at line 11",
        );
        one_problem(
            &replace("http = \"127.0.0.1:18080\"", "quic = \"localhost\""),
            11,
            "quic \"localhost\" is not a socket address",
        );
    }

    #[test]
    fn an_upper_platform_cannot_use_quic() {
        one_problem(
            &with_upper("[[node.upper]]\nid = \"35000000002000000001\"\nsip = \"10.1.0.5:5060\"\ntransport = \"quic\"\n"),
            13,
            "QUIC links join gbgate nodes only",
        );
    }

    #[test]
    fn upper_platforms_load_with_defaults_and_round_trip() {
        let text = with_upper(
            "[[node.upper]]\nid = \"35000000002000000001\"\nname = \"Province\"\nsip = \"10.1.0.5:5060\"\n\n[[node.upper]]\nid = \"35000000002000000002\"\nsip = \"10.1.0.6:5060\"\ntransport = \"tcp\"\ncharset = \"UTF-8\"\nkeepalive_interval_secs = 20\n",
        );
        let t = Topology::parse(&text, "dir/topology.toml").unwrap();
        let city = t.root();
        assert_eq!(city.upper.len(), 2);
        let (a, b) = (&city.upper[0], &city.upper[1]);
        assert_eq!(
            (a.name.as_str(), a.transport, a.charset),
            ("Province", Transport::Udp, TextCharset::Gb2312)
        );
        assert_eq!(
            (
                a.keepalive_interval_secs,
                a.keepalive_timeout_count,
                a.register_expires_secs
            ),
            (60, 3, 3600)
        );
        assert_eq!(
            (b.transport, b.charset, b.keepalive_interval_secs),
            (Transport::Tcp, TextCharset::Utf8, 20)
        );
        let again = Topology::parse(&t.to_toml_string().unwrap(), "dir/topology.toml").unwrap();
        assert_eq!(again, t);
    }

    #[test]
    fn bad_upper_platforms_name_their_line() {
        // The city's credentials key is line 12; the tables start on line 13.
        let bad =
            |upper: &str, line: usize, needle: &str| one_problem(&with_upper(upper), line, needle);
        bad(
            "[[node.upper]]\nid = \"3500\"\nsip = \"10.1.0.5:5060\"\n",
            14,
            "not a GB/T 28181 ID",
        );
        bad(
            "[[node.upper]]\nid = \"35000000002000000001\"\n",
            13,
            "has no `sip`",
        );
        bad("[[node.upper]]\nid = \"35000000002000000001\"\nsip = \"10.1.0.5:5060\"\ncharset = \"latin1\"\n", 16, "unknown charset");
        bad("[[node.upper]]\nid = \"35000000002000000001\"\nsip = \"10.1.0.5:5060\"\nregister_expires_secs = 5\n", 16, "at least 60");
        bad(
            &format!("[[node.upper]]\nid = \"{COUNTY}\"\nsip = \"10.1.0.5:5060\"\n"),
            13,
            "make it this node's `parent`",
        );
        bad("[[node.upper]]\nid = \"35000000002000000001\"\nsip = \"10.1.0.5:5060\"\n\n[[node.upper]]\nid = \"35000000002000000001\"\nsip = \"10.1.0.6:5060\"\n", 17, "listed twice");
    }

    #[test]
    fn good_file_loads() {
        let t = Topology::parse(&good(), "dir/topology.toml").unwrap();
        assert_eq!(t.nodes().len(), 4);
        assert_eq!(t.settings().keepalive_interval, Duration::from_secs(30));
        assert_eq!(t.settings().register_retry, None);
        let tuned = replace(
            "keepalive_interval_secs = 30",
            "register_retry_secs = 2\nsip_t1_ms = 50",
        );
        let t2 = Topology::parse(&tuned, "t.toml").unwrap();
        assert_eq!(t2.settings().register_retry, Some(Duration::from_secs(2)));
        assert_eq!(t2.settings().sip_t1, Some(Duration::from_millis(50)));
        let county = t.node(&COUNTY.parse().unwrap()).unwrap();
        assert_eq!(county.transport, Transport::Tcp);
        assert_eq!(county.level, Level::County);
        assert_eq!(county.line(), 14);
        assert_eq!(county.credentials, Path::new("dir/creds/county.toml"));
        let village = t.node(&VILLAGE.parse().unwrap()).unwrap();
        assert_eq!(village.credentials, Path::new("/abs/village.toml"));
        assert_eq!(village.transport, Transport::Udp);
        assert_eq!(village.http, None);
    }

    #[test]
    fn syntax_error_has_line() {
        one_problem(
            &replace("name = \"Town\"", "name = \"Town"),
            25,
            "fix the TOML syntax",
        );
    }

    #[test]
    fn unknown_key_rejected() {
        one_problem(
            &replace("level = \"town\"", "level = \"town\"\nport = 5"),
            27,
            "unknown field `port`",
        );
        one_problem(
            &replace("keepalive_interval_secs", "keepalive_secs"),
            4,
            "unknown field `keepalive_secs`",
        );
        one_problem(
            &format!("{}\n[extra]\n", good()),
            39,
            "unknown field `extra`",
        );
    }

    #[test]
    fn wrong_value_type() {
        one_problem(
            &replace(
                "keepalive_interval_secs = 30",
                "keepalive_interval_secs = \"30\"",
            ),
            4,
            "invalid type",
        );
    }

    #[test]
    fn single_brackets_hint() {
        one_problem("[node]\nid = \"35010000002000000001\"\n", 1, "[[node]]");
    }

    #[test]
    fn bad_id_names_position() {
        let found = problems(&replace(
            &format!("id = \"{TOWN}\""),
            "id = \"3501020100200x000003\"",
        ));
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(found[0].0, 24);
        assert!(found[0].1.contains("has 'x' at position 14"), "{found:#?}");
        // The village's parent is now unknown; the message points at the bad id.
        assert_eq!(found[1].0, 35);
        assert!(
            found[1].1.contains("unreadable id of the node at line 23"),
            "{found:#?}"
        );
    }

    #[test]
    fn short_id_names_length() {
        let found = problems(&replace(
            &format!("id = \"{TOWN}\""),
            "id = \"3501020100200000003\"",
        ));
        assert_eq!(found[0].0, 24);
        assert!(
            found[0].1.contains("ID must be 20 digits, got 19"),
            "{found:#?}"
        );
    }

    #[test]
    fn node_id_must_be_platform() {
        let text = replace(
            &format!("id = \"{VILLAGE}\""),
            "id = \"35010201001320000004\"",
        );
        one_problem(&text, 32, "type code 132 (IP camera)");
        assert!(problems(&text)[0].1.contains("e.g. 35010201002000000004"));
    }

    #[test]
    fn duplicate_ids() {
        let text = replace(&format!("id = \"{VILLAGE}\""), &format!("id = \"{TOWN}\""));
        let found = problems(&text);
        // The duplicate also makes the village its own parent.
        assert!(found.iter().any(|(line, m)| *line == 32
            && m.contains("duplicate node ID")
            && m.contains("line 23")));
    }

    #[test]
    fn duplicate_sip_addresses() {
        one_problem(
            &replace("sip = \"127.0.0.1:15063\"", "sip = \"127.0.0.1:15061\""),
            36,
            "already the sip address at line 19",
        );
    }

    #[test]
    fn sip_and_http_clash() {
        one_problem(
            &replace("sip = \"127.0.0.1:15063\"", "sip = \"127.0.0.1:18080\""),
            36,
            "already the http address at line 11",
        );
    }

    #[test]
    fn no_root() {
        let found = problems(&replace(
            "level = \"city\"\n",
            &format!("level = \"city\"\nparent = \"{VILLAGE}\"\n"),
        ));
        assert!(
            found
                .iter()
                .any(|(l, m)| *l == 6 && m.contains("no root node")),
            "{found:#?}"
        );
        assert!(
            found.iter().any(|(l, m)| *l == 6 && m.contains("cycle")),
            "{found:#?}"
        );
    }

    #[test]
    fn two_roots() {
        one_problem(
            &replace(&format!("parent = \"{TOWN}\"\n"), ""),
            31,
            "already the root",
        );
    }

    #[test]
    fn parent_must_exist() {
        one_problem(
            &replace(
                &format!("parent = \"{TOWN}\""),
                "parent = \"35010201002000000099\"",
            ),
            35,
            "not a node in this file",
        );
    }

    #[test]
    fn parent_must_be_an_id() {
        one_problem(
            &replace(&format!("parent = \"{TOWN}\""), "parent = \"town\""),
            35,
            "position 1",
        );
    }

    #[test]
    fn own_parent() {
        one_problem(
            &replace(
                &format!("parent = \"{TOWN}\""),
                &format!("parent = \"{VILLAGE}\""),
            ),
            35,
            "names itself",
        );
    }

    #[test]
    fn cycles_are_found() {
        // Town and village point at each other; levels and the county's lack of
        // children are reported too, the cycle once at the town's line.
        let text = replace(
            &format!("parent = \"{COUNTY}\""),
            &format!("parent = \"{VILLAGE}\""),
        );
        let found = problems(&text);
        let cycles: Vec<_> = found.iter().filter(|(_, m)| m.contains("cycle")).collect();
        assert_eq!(cycles.len(), 1, "{found:#?}");
        assert_eq!(cycles[0].0, 23);
        assert!(found
            .iter()
            .any(|(l, m)| *l == 27 && m.contains("must be a county")));
        assert!(cycles[0]
            .1
            .contains(&format!("{TOWN} -> {VILLAGE} -> {TOWN}")));
    }

    #[test]
    fn parent_level_must_be_one_up() {
        one_problem(
            &replace(
                &format!("parent = \"{TOWN}\""),
                &format!("parent = \"{COUNTY}\""),
            ),
            35,
            "its parent must be a town, but 35010200002000000002 is a county",
        );
    }

    #[test]
    fn city_cannot_have_parent() {
        let text = replace("level = \"county\"", "level = \"city\"");
        let found = problems(&text);
        assert!(found
            .iter()
            .any(|(line, m)| *line == 18 && m.contains("cannot have a parent")));
    }

    #[test]
    fn child_civil_code_under_parent() {
        // County 350202 is not in city 3501.
        let text = good().replace("35010200002000000002", "35020200002000000002");
        let found = problems(&text);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(found[0].0, 18);
        assert!(found[0].1.contains("outside its parent"));
        // The town (3501020100…) is not under the moved county either.
        assert_eq!(found[1].0, 27);
    }

    #[test]
    fn child_civil_code_must_be_longer() {
        one_problem(
            &good().replace("35010200002000000002", "35010000002000000002"),
            18,
            "same civil code \"3501\"",
        );
    }

    #[test]
    fn equal_civil_code_allowed_under_8_digits() {
        // Town and village both use 35010201 (already 8 digits): fine.
        assert!(Topology::parse(&good(), "t.toml").is_ok());
    }

    #[test]
    fn bad_addresses() {
        one_problem(
            &replace("sip = \"127.0.0.1:15062\"", "sip = \"localhost:15062\""),
            28,
            "not a socket address",
        );
        one_problem(
            &replace("sip = \"127.0.0.1:15062\"", "sip = \"0.0.0.0:15062\""),
            28,
            "wildcard",
        );
        one_problem(
            &replace("sip = \"127.0.0.1:15062\"", "sip = \"127.0.0.1:0\""),
            28,
            "port 0",
        );
        one_problem(
            &replace("http = \"127.0.0.1:18080\"", "http = \"127.0.0.1\""),
            11,
            "http \"127.0.0.1\" is not a socket address",
        );
    }

    #[test]
    fn bad_transport() {
        one_problem(
            &replace("transport = \"tcp\"", "transport = \"sctp\""),
            20,
            "unknown transport \"sctp\"; use udp, tcp or quic",
        );
        one_problem(
            &replace("transport = \"udp\"", "transport = \"sctp\""),
            3,
            "[defaults] transport",
        );
    }

    #[test]
    fn bad_level() {
        one_problem(
            &replace("level = \"town\"", "level = \"township\""),
            26,
            "unknown level \"township\"",
        );
    }

    #[test]
    fn empty_credentials_and_name() {
        one_problem(
            &replace("credentials = \"creds/town.toml\"", "credentials = \" \""),
            29,
            "`credentials` is empty",
        );
        one_problem(
            &replace("name = \"Town\"", "name = \"\""),
            25,
            "`name` is empty",
        );
    }

    #[test]
    fn missing_keys_all_reported() {
        let found =
            problems("[[node]]\nlevel = \"city\"\n\n[[node]]\nid = \"35010200002000000002\"\n");
        let lines: Vec<usize> = found.iter().map(|(l, _)| *l).collect();
        assert!(found.iter().any(|(l, m)| *l == 1 && m.contains("no `id`")));
        assert!(found.iter().any(|(l, m)| *l == 1 && m.contains("no `sip`")));
        assert!(found
            .iter()
            .any(|(l, m)| *l == 4 && m.contains("no `level`")));
        assert!(found
            .iter()
            .any(|(l, m)| *l == 4 && m.contains("no `credentials`")));
        assert!(found
            .iter()
            .any(|(l, m)| *l == 4 && m.contains("already the root")));
        let mut sorted = lines.clone();
        sorted.sort();
        assert_eq!(lines, sorted);
    }

    #[test]
    fn bad_defaults() {
        one_problem(
            &replace(
                "keepalive_interval_secs = 30",
                "keepalive_interval_secs = 0",
            ),
            4,
            "keepalive_interval_secs is 0",
        );
        one_problem(
            &replace(
                "keepalive_interval_secs = 30",
                "keepalive_timeout_count = 99999999999",
            ),
            4,
            "keepalive_timeout_count is 99999999999",
        );
        one_problem(
            &replace("keepalive_interval_secs = 30", "register_expires_secs = 0"),
            4,
            "register_expires_secs is 0",
        );
        one_problem(
            &replace("keepalive_interval_secs = 30", "register_retry_secs = 0"),
            4,
            "register_retry_secs is 0",
        );
        one_problem(
            &replace("keepalive_interval_secs = 30", "sip_t1_ms = 0"),
            4,
            "sip_t1_ms is 0",
        );
        one_problem(
            &replace("keepalive_interval_secs = 30", "media_timeout_secs = 0"),
            4,
            "media_timeout_secs is 0",
        );
        one_problem(
            &replace("keepalive_interval_secs = 30", "media_transport = \"rtsp\""),
            4,
            "use \"udp\", \"tcp-passive\" or \"tcp-active\"",
        );
    }

    #[test]
    fn new_registrants_are_queried_unless_turned_off() {
        let t = Topology::parse(
            &replace(
                "keepalive_interval_secs = 30",
                "keepalive_interval_secs = 30",
            ),
            "t.toml",
        )
        .unwrap();
        assert!(t.settings().query_new_registrants);
        let t = Topology::parse(
            &replace(
                "keepalive_interval_secs = 30",
                "query_new_registrants = false",
            ),
            "t.toml",
        )
        .unwrap();
        assert!(!t.settings().query_new_registrants);
        let e = Topology::parse(
            &replace(
                "keepalive_interval_secs = 30",
                "query_new_registrants = \"no\"",
            ),
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("t.toml:4") && e.contains("expected a boolean"),
            "{e}"
        );
    }

    #[test]
    fn the_viewer_limit_is_read_and_zero_refused() {
        let with =
            |line: &str| Topology::parse(&replace("keepalive_interval_secs = 30", line), "t.toml");
        assert_eq!(
            with("keepalive_interval_secs = 30")
                .unwrap()
                .settings()
                .max_viewers_per_stream,
            None
        );
        assert_eq!(
            with("max_viewers_per_stream = 5000")
                .unwrap()
                .settings()
                .max_viewers_per_stream,
            Some(5000)
        );
        let e = with("max_viewers_per_stream = 0").unwrap_err().to_string();
        assert!(e.contains("t.toml:4") && e.contains("at least 1"), "{e}");
    }

    #[test]
    fn ptz_lock_and_priorities_are_read_and_checked() {
        let with =
            |line: &str| Topology::parse(&replace("keepalive_interval_secs = 30", line), "t.toml");
        let t = with(
            "ptz_lock_secs = 45\nptz_priority = { police = 1, traffic = 4 }\nintact_probe_secs = 0\nsubscribe_devices = [\"mobile_position\", \"alarm\"]",
        )
        .unwrap();
        let s = t.settings();
        assert_eq!(s.ptz_lock, Some(Duration::from_secs(45)));
        assert_eq!(s.ptz_priority.get("dept:police"), Some(&1));
        assert_eq!(s.ptz_priority.get("dept:traffic"), Some(&4));
        assert_eq!(s.intact_probe, Some(Duration::ZERO));
        assert_eq!(
            s.subscribe_devices,
            vec![
                crate::DeviceEvent::Alarm,
                crate::DeviceEvent::MobilePosition
            ]
        );
        let e = with("subscribe_devices = [\"weather\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml:4") && e.contains("weather"), "{e}");
        // What is read writes back the same.
        let again = Topology::parse(&t.to_toml_string().unwrap(), "t.toml").unwrap();
        assert_eq!(again.settings(), s);
        let e = with("ptz_lock_secs = 0").unwrap_err().to_string();
        assert!(e.contains("t.toml:4") && e.contains("ptz_lock_secs"), "{e}");
        let e = with("ptz_priority = { police = 9 }")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.toml:4") && e.contains("1 (highest) to 5"),
            "{e}"
        );
        let e = with("ptz_priority = { \"po lice\" = 1 }")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a department name"), "{e}");
    }

    #[test]
    fn media_settings_are_read() {
        let t = Topology::parse(
            &replace(
                "keepalive_interval_secs = 30",
                "linger_secs = 0\nmedia_timeout_secs = 4\nmedia_transport = \"tcp-active\"",
            ),
            "t.toml",
        )
        .unwrap();
        let s = t.settings();
        assert_eq!(s.linger, Some(Duration::ZERO));
        assert_eq!(s.media_timeout, Some(Duration::from_secs(4)));
        assert_eq!(
            s.media_transport,
            crate::settings::MediaTransport::TcpActive
        );
    }

    #[test]
    fn empty_file() {
        one_problem("", 1, "no [[node]] tables");
        one_problem("# nothing\n[defaults]\n", 1, "no [[node]] tables");
    }

    #[test]
    fn many_problems_in_one_report() {
        let text = good()
            .replace("level = \"town\"", "level = \"borough\"")
            .replace("sip = \"127.0.0.1:15063\"", "sip = \"nowhere\"")
            .replace("transport = \"tcp\"", "transport = \"ip\"");
        let found = problems(&text);
        let lines: Vec<usize> = found.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![20, 26, 36], "{found:#?}");
    }

    #[test]
    fn display_lists_file_and_lines() {
        let text = good()
            .replace("level = \"town\"", "level = \"borough\"")
            .replace("sip = \"127.0.0.1:15063\"", "sip = \"nowhere\"");
        let err = Topology::parse(&text, "dir/topology.toml").unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.starts_with("dir/topology.toml is invalid (2 problems)"),
            "{shown}"
        );
        assert!(
            shown.contains("\n  dir/topology.toml:26: node 35010201002000000003: unknown level"),
            "{shown}"
        );
        assert!(
            shown.contains("\n  dir/topology.toml:36: node 35010201002000000004: sip \"nowhere\""),
            "{shown}"
        );
    }

    proptest::proptest! {
        #[test]
        fn mutated_files_never_panic(pos in 0usize..1200, c in proptest::char::any()) {
            let mut chars: Vec<char> = good().chars().collect();
            let i = pos % chars.len();
            chars[i] = c;
            let text: String = chars.into_iter().collect();
            if let Ok(t) = Topology::parse(&text, "t.toml") {
                let again = Topology::parse(&t.to_toml_string().unwrap(), "t.toml").unwrap();
                proptest::prop_assert_eq!(again, t);
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = Topology::parse(&text, "t.toml");
        }
    }
}
