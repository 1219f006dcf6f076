//! The compiled policy: rules turned into per-subject digit tries at load, so
//! a decision costs a walk down at most 20 digits per inherited subject
//! instead of casbin's scan of every rule.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::PathBuf;
use std::time::SystemTime;

use topology::GbId;

use crate::error::{PolicyError, PolicyErrors};
use crate::rules::{
    parse_file, unix_floor, Action, Effect, Expiry, Grant, GroupMember, InvalidRule, ObjectPattern,
    Rule, RuleKind, RuleRef, Subject,
};

/// One access question: may `subject` do `action` on `channel`?
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Who asks.
    pub subject: &'a Subject,
    /// The channel's 20-digit ID.
    pub channel: &'a GbId,
    /// The channel's catalog ancestors: its device, business groups (215) and
    /// virtual organisations (216). `group:<id>` rules match these.
    pub ancestors: &'a [GbId],
    /// What it wants to do.
    pub action: Action,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The request may go ahead.
    Allow,
    /// The request is refused.
    Deny,
}

/// Why a decision came out as it did. Displays as a sentence for logs and audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// An allow rule matched and no deny rule did.
    Allowed {
        /// The first matching allow rule in file order.
        rule: RuleRef,
    },
    /// A deny rule matched; it wins over any allow.
    Denied {
        /// The first matching deny rule in file order.
        rule: RuleRef,
        /// The first allow rule that also matched, if any.
        overrides: Option<RuleRef>,
    },
    /// Only expired allow rules matched.
    Expired {
        /// The matching grant that expired last.
        rule: RuleRef,
        /// When it expired.
        at: Expiry,
    },
    /// No rule in force matches.
    NoGrant {
        /// Who asked.
        subject: Subject,
        /// What for.
        action: Action,
        /// On which channel.
        channel: GbId,
    },
    /// No rule names the subject, directly or through membership.
    UnknownSubject {
        /// Who asked.
        subject: Subject,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Allowed { rule } => write!(f, "allowed by {rule}"),
            Reason::Denied {
                rule,
                overrides: None,
            } => write!(f, "denied by {rule}, deny wins"),
            Reason::Denied {
                rule,
                overrides: Some(allow),
            } => write!(f, "denied by {rule}, deny wins over {allow}"),
            Reason::Expired { rule, at } => write!(f, "grant expired at {at}: {rule}"),
            Reason::NoGrant {
                subject,
                action,
                channel,
            } => write!(
                f,
                "no rule grants {subject} {action} on {}",
                channel.as_str()
            ),
            Reason::UnknownSubject { subject } => {
                write!(f, "unknown subject {subject}: no rule names it")
            }
        }
    }
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny.
    pub outcome: Outcome,
    /// The rule that decided, if one did (the allow, the deny, or the expired grant).
    pub rule: Option<RuleRef>,
    /// Why, for people.
    pub reason: Reason,
}

/// One rule that matched a request, from [`Policy::explain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The rule.
    pub rule: RuleRef,
    /// Allow or deny.
    pub effect: Effect,
    /// The subject the rule is written for: the requester or one it belongs to.
    pub via: Subject,
    /// Expiry of the rule, if it has one.
    pub expires: Option<Expiry>,
    /// Whether the rule was in force at the time asked (not expired).
    pub in_force: bool,
}

/// A decision with every rule that matched, for `gbgate policy explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The same decision [`Policy::decide`] gives.
    pub decision: Decision,
    /// Every matching rule, expired ones included, in file order.
    pub matches: Vec<Match>,
}

/// A compiled rule as stored in a trie node or catalog map.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Index into `Policy::rules`; file order, so smaller is earlier.
    rule: u32,
    /// Actions covered, as [`Action::bit`]s.
    actions: u8,
    deny: bool,
    /// Unix seconds; `i64::MAX` when the rule never expires.
    expires: i64,
}

/// FxHash-style hasher for the index's maps. SipHash costs more than the
/// whole trie walk; the keys are catalog IDs and configured subjects, and a
/// request can only look keys up, not add them, so flooding is not a concern.
#[derive(Debug, Default, Clone, Copy)]
struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// One node of a digit trie while it is built: the rules whose object is this prefix.
#[derive(Debug, Default)]
struct BuildNode {
    /// Child per next digit; 0 is "none" (the root is never a child).
    children: [u32; 10],
    entries: Vec<Entry>,
}

/// Every rule written for one subject, while it is built.
#[derive(Debug)]
struct Builder {
    subject: Subject,
    nodes: Vec<BuildNode>,
    catalog: HashMap<GbId, Vec<Entry>>,
}

impl Builder {
    fn new(subject: Subject) -> Builder {
        Builder {
            subject,
            nodes: vec![BuildNode::default()],
            catalog: HashMap::new(),
        }
    }

    /// Adds `e` at the node for `digits`, creating the path.
    fn insert(&mut self, digits: &[u8], e: Entry) {
        let mut at = 0usize;
        for &d in digits {
            let slot = usize::from(d - b'0');
            let next = self.nodes[at].children[slot];
            at = if next == 0 {
                let id = self.nodes.len();
                self.nodes.push(BuildNode::default());
                self.nodes[at].children[slot] = index_u32(id);
                id
            } else {
                next as usize
            };
        }
        self.nodes[at].entries.push(e);
    }

    /// Lays every entry out in one array, so a walk touches few cache lines.
    fn freeze(self) -> Grants {
        let mut entries = Vec::new();
        let mut span = |es: Vec<Entry>| {
            let start = index_u32(entries.len());
            entries.extend(es);
            (start, index_u32(entries.len()))
        };
        let nodes = self
            .nodes
            .into_iter()
            .map(|n| {
                let (start, end) = span(n.entries);
                Node {
                    children: n.children,
                    start,
                    end,
                }
            })
            .collect();
        let catalog = self
            .catalog
            .into_iter()
            .map(|(id, es)| (id, span(es)))
            .collect();
        Grants {
            subject: self.subject,
            nodes,
            entries,
            catalog,
        }
    }
}

fn index_u32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// One node of a frozen digit trie.
#[derive(Debug)]
struct Node {
    /// Child per next digit; 0 is "none".
    children: [u32; 10],
    /// This node's rules: `Grants::entries[start..end]`.
    start: u32,
    end: u32,
}

/// Every rule written for one subject (not inherited ones).
#[derive(Debug)]
struct Grants {
    subject: Subject,
    /// Digit trie; node 0 is the root and holds `*` rules.
    nodes: Vec<Node>,
    entries: Vec<Entry>,
    /// `group:<id>` rules and named groups' ID members, keyed by ancestor ID:
    /// ranges of `entries`.
    catalog: FastMap<GbId, (u32, u32)>,
}

impl Grants {
    fn span(&self, start: u32, end: u32) -> &[Entry] {
        self.entries
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    /// Calls `f` for every entry whose object covers the request, action not yet checked.
    #[inline]
    fn each<F: FnMut(&Entry)>(&self, channel: &GbId, ancestors: &[GbId], f: &mut F) {
        let Some(mut node) = self.nodes.first() else {
            return;
        };
        self.span(node.start, node.end).iter().for_each(&mut *f);
        for &d in channel.as_bytes() {
            let next = node.children[usize::from(d.wrapping_sub(b'0')) % 10];
            if next == 0 {
                break;
            }
            node = &self.nodes[next as usize];
            self.span(node.start, node.end).iter().for_each(&mut *f);
        }
        if !self.catalog.is_empty() {
            for a in ancestors {
                if let Some(&(start, end)) = self.catalog.get(a) {
                    self.span(start, end).iter().for_each(&mut *f);
                }
            }
        }
    }
}

/// A loaded, validated and compiled sharing policy. Immutable: reload builds a
/// new one (the gateway swaps an `Arc<Policy>`).
#[derive(Debug)]
pub struct Policy {
    rules: Vec<Rule>,
    /// Every subject named by a rule, sorted.
    subjects: Vec<Subject>,
    /// Subject → indices into `grants` of itself and everything it belongs to
    /// (transitively) that has rules of its own.
    closure: FastMap<Subject, Vec<u32>>,
    grants: Vec<Grants>,
    /// Distinct expiries of `p` rules, ascending.
    expiries: Vec<Expiry>,
    generation: u64,
}

/// Running result of a decision: the earliest rule of each kind.
#[derive(Default)]
struct Tally {
    allow: Option<u32>,
    deny: Option<u32>,
    /// (expiry, rule) of the matching expired grant that expired last.
    expired: Option<(i64, u32)>,
}

impl Policy {
    /// Reads, validates and compiles rule files. Every unreadable file and
    /// every invalid line is reported, not just the first.
    pub fn load(paths: &[PathBuf]) -> Result<Policy, PolicyErrors> {
        let mut texts = Vec::with_capacity(paths.len());
        let mut errors = Vec::new();
        for p in paths {
            match std::fs::read_to_string(p) {
                Ok(t) => texts.push((p.display().to_string(), t)),
                Err(source) => errors.push(PolicyError::Io {
                    file: p.clone(),
                    source,
                }),
            }
        }
        match Policy::parse(&texts) {
            Ok(policy) if errors.is_empty() => Ok(policy),
            Ok(_) => Err(PolicyErrors(errors)),
            Err(PolicyErrors(more)) => {
                errors.extend(more);
                Err(PolicyErrors(errors))
            }
        }
    }

    /// Validates and compiles rule texts given as `(file name, text)` pairs.
    pub fn parse<N: AsRef<str>, T: AsRef<str>>(files: &[(N, T)]) -> Result<Policy, PolicyErrors> {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        for (name, text) in files {
            let (r, e) = parse_file(name.as_ref(), text.as_ref());
            rules.extend(r);
            errors.extend(e);
        }
        check_groups(&rules, &mut errors);
        check_cycles(&rules, &mut errors);
        if !errors.is_empty() {
            // Cross-line checks run after parsing; list everything in file and line order.
            let order = |e: &PolicyError| match e {
                PolicyError::Invalid { file, line, .. } | PolicyError::Cycle { file, line, .. } => {
                    (files.iter().position(|(n, _)| n.as_ref() == file), *line)
                }
                PolicyError::Io { .. } => (None, 0),
            };
            errors.sort_by_key(order);
            return Err(PolicyErrors(errors));
        }
        Ok(compile(rules))
    }

    /// The decision for `req` at time `now`. Deny beats allow; expired rules
    /// are ignored, but named in the reason when nothing else matched.
    pub fn decide(&self, req: &Request<'_>, now: SystemTime) -> Decision {
        let Some(principals) = self.closure.get(req.subject) else {
            return Decision {
                outcome: Outcome::Deny,
                rule: None,
                reason: Reason::UnknownSubject {
                    subject: req.subject.clone(),
                },
            };
        };
        let now = unix_floor(now);
        let bit = req.action.bit();
        let mut t = Tally::default();
        let mut visit = |e: &Entry| {
            if e.actions & bit == 0 {
                return;
            }
            if now >= e.expires {
                // Report the grant that expired last; among equals, the first in file order.
                let later = |(x, r): (i64, u32)| e.expires > x || (e.expires == x && e.rule < r);
                if !e.deny && t.expired.is_none_or(later) {
                    t.expired = Some((e.expires, e.rule));
                }
                return;
            }
            let slot = if e.deny { &mut t.deny } else { &mut t.allow };
            if slot.is_none_or(|r| e.rule < r) {
                *slot = Some(e.rule);
            }
        };
        for &p in principals {
            self.grants[p as usize].each(req.channel, req.ancestors, &mut visit);
        }
        self.conclude(req, &t)
    }

    fn rule_ref(&self, i: u32) -> RuleRef {
        self.rules[i as usize].at.clone()
    }

    fn conclude(&self, req: &Request<'_>, t: &Tally) -> Decision {
        if let Some(d) = t.deny {
            let rule = self.rule_ref(d);
            return Decision {
                outcome: Outcome::Deny,
                rule: Some(rule.clone()),
                reason: Reason::Denied {
                    rule,
                    overrides: t.allow.map(|a| self.rule_ref(a)),
                },
            };
        }
        if let Some(a) = t.allow {
            let rule = self.rule_ref(a);
            return Decision {
                outcome: Outcome::Allow,
                rule: Some(rule.clone()),
                reason: Reason::Allowed { rule },
            };
        }
        if let Some((at, r)) = t.expired {
            let rule = self.rule_ref(r);
            if let Some(at) = Expiry::from_unix(at) {
                return Decision {
                    outcome: Outcome::Deny,
                    rule: Some(rule.clone()),
                    reason: Reason::Expired { rule, at },
                };
            }
        }
        Decision {
            outcome: Outcome::Deny,
            rule: None,
            reason: Reason::NoGrant {
                subject: req.subject.clone(),
                action: req.action,
                channel: *req.channel,
            },
        }
    }

    /// The decision and every rule that matched (expired ones flagged), for
    /// operators asking "why". Slower than [`Policy::decide`]; not for the hot path.
    pub fn explain(&self, req: &Request<'_>, now: SystemTime) -> Explanation {
        let decision = self.decide(req, now);
        // rule → the table it is in; a BTreeMap keeps file order and drops repeats.
        let mut found: BTreeMap<u32, u32> = BTreeMap::new();
        if let Some(principals) = self.closure.get(req.subject) {
            let bit = req.action.bit();
            for &p in principals {
                self.grants[p as usize].each(req.channel, req.ancestors, &mut |e| {
                    if e.actions & bit != 0 {
                        found.insert(e.rule, p);
                    }
                });
            }
        }
        let matches = found
            .into_iter()
            .filter_map(|(r, p)| {
                let rule = &self.rules[r as usize];
                let RuleKind::Grant(g) = &rule.kind else {
                    return None;
                };
                Some(Match {
                    rule: rule.at.clone(),
                    effect: g.effect,
                    via: self.grants[p as usize].subject.clone(),
                    expires: g.expires,
                    in_force: g.expires.is_none_or(|e| e.in_force_at(now)),
                })
            })
            .collect();
        Explanation { decision, matches }
    }

    /// Number of rule lines (`p`, `g` and `g2`) in the policy.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Every valid rule, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Every subject that some rule names, sorted.
    pub fn subjects(&self) -> &[Subject] {
        &self.subjects
    }

    /// The generation number the gateway gave this policy (0 until set).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Sets the generation number, e.g. one more than the policy it replaces.
    pub fn set_generation(&mut self, generation: u64) {
        self.generation = generation;
    }

    /// The first time after `now` at which some rule expires: when the gateway
    /// must re-check sessions. `None` if no rule expires after `now`.
    pub fn next_expiry(&self, now: SystemTime) -> Option<SystemTime> {
        let now = unix_floor(now);
        let i = self.expiries.partition_point(|e| e.unix() <= now);
        self.expiries.get(i).map(|e| e.to_system_time())
    }
}

/// Adds an error for every `p` line naming a group no `g2` line defines.
fn check_groups(rules: &[Rule], errors: &mut Vec<PolicyError>) {
    let defined: HashSet<&str> = rules
        .iter()
        .filter_map(|r| match &r.kind {
            RuleKind::GroupMember { group, .. } => Some(group.as_str()),
            _ => None,
        })
        .collect();
    for r in rules {
        if let RuleKind::Grant(Grant {
            object: ObjectPattern::NamedGroup(g),
            ..
        }) = &r.kind
        {
            if !defined.contains(g.as_str()) {
                errors.push(PolicyError::Invalid {
                    file: r.at.file.to_string(),
                    line: r.at.line,
                    reason: InvalidRule::UndefinedGroup { group: g.clone() },
                });
            }
        }
    }
}

/// Adds an error for every `g` line that closes a membership cycle.
fn check_cycles(rules: &[Rule], errors: &mut Vec<PolicyError>) {
    // member → [(of, rule index)]
    let mut up: HashMap<&Subject, Vec<(&Subject, usize)>> = HashMap::new();
    for (i, r) in rules.iter().enumerate() {
        if let RuleKind::Member { member, of } = &r.kind {
            up.entry(member).or_default().push((of, i));
        }
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        OnPath,
        Done,
    }
    let mut mark: HashMap<&Subject, Mark> = HashMap::new();
    let mut starts: Vec<&Subject> = up.keys().copied().collect();
    starts.sort();
    for start in starts {
        if mark.contains_key(start) {
            continue;
        }
        // Iterative DFS: the path of subjects and, per level, the next edge to try.
        let mut path: Vec<(&Subject, usize)> = vec![(start, 0)];
        mark.insert(start, Mark::OnPath);
        while let Some(top) = path.last_mut() {
            let s = top.0;
            let edges = up.get(s).map(Vec::as_slice).unwrap_or_default();
            let Some(&(of, rule)) = edges.get(top.1) else {
                mark.insert(s, Mark::Done);
                path.pop();
                continue;
            };
            top.1 += 1;
            match mark.get(of) {
                Some(Mark::Done) => {}
                Some(Mark::OnPath) => {
                    let from = path.iter().position(|(p, _)| *p == of).unwrap_or(0);
                    let mut cycle: Vec<Subject> =
                        path[from..].iter().map(|(p, _)| (*p).clone()).collect();
                    cycle.push(of.clone());
                    errors.push(PolicyError::Cycle {
                        file: rules[rule].at.file.to_string(),
                        line: rules[rule].at.line,
                        cycle,
                    });
                }
                None => {
                    mark.insert(of, Mark::OnPath);
                    path.push((of, 0));
                }
            }
        }
    }
}

/// Builds the index from valid, acyclic rules.
fn compile(rules: Vec<Rule>) -> Policy {
    let mut members: HashMap<&str, Vec<&GroupMember>> = HashMap::new();
    let mut up: HashMap<&Subject, Vec<&Subject>> = HashMap::new();
    let mut subjects: BTreeSet<&Subject> = BTreeSet::new();
    for r in &rules {
        match &r.kind {
            RuleKind::GroupMember { member, group } => {
                members.entry(group).or_default().push(member)
            }
            RuleKind::Member { member, of } => {
                up.entry(member).or_default().push(of);
                subjects.insert(member);
                subjects.insert(of);
            }
            RuleKind::Grant(g) => {
                subjects.insert(&g.subject);
            }
        }
    }

    let mut grants: Vec<Builder> = Vec::new();
    let mut grant_of: HashMap<&Subject, u32> = HashMap::new();
    let mut expiries = BTreeSet::new();
    for (i, r) in rules.iter().enumerate() {
        let RuleKind::Grant(g) = &r.kind else {
            continue;
        };
        let gi = *grant_of.entry(&g.subject).or_insert_with(|| {
            grants.push(Builder::new(g.subject.clone()));
            u32::try_from(grants.len() - 1).unwrap_or(u32::MAX)
        });
        let table = &mut grants[gi as usize];
        let e = Entry {
            rule: u32::try_from(i).unwrap_or(u32::MAX),
            actions: g.action.mask(),
            deny: g.effect == Effect::Deny,
            expires: g.expires.map_or(i64::MAX, Expiry::unix),
        };
        if let Some(x) = g.expires {
            expiries.insert(x);
        }
        match &g.object {
            ObjectPattern::Any => table.insert(&[], e),
            ObjectPattern::Exact(id) => table.insert(id.as_bytes(), e),
            ObjectPattern::Prefix(p) => table.insert(p.as_bytes(), e),
            ObjectPattern::CatalogGroup(id) => table.catalog.entry(*id).or_default().push(e),
            ObjectPattern::NamedGroup(name) => {
                // Expanded into the members' own places, so groups cost nothing at decision time.
                for m in members
                    .get(name.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                {
                    match m {
                        GroupMember::Id(id) => {
                            table.insert(id.as_bytes(), e);
                            table.catalog.entry(*id).or_default().push(e);
                        }
                        GroupMember::Prefix(p) => table.insert(p.as_bytes(), e),
                    }
                }
            }
        }
    }

    let mut closure = FastMap::default();
    for &s in &subjects {
        let mut seen: HashSet<&Subject> = HashSet::from([s]);
        let mut queue = vec![s];
        let mut tables = Vec::new();
        while let Some(x) = queue.pop() {
            if let Some(&gi) = grant_of.get(x) {
                tables.push(gi);
            }
            for &of in up.get(x).map(Vec::as_slice).unwrap_or_default() {
                if seen.insert(of) {
                    queue.push(of);
                }
            }
        }
        tables.sort_unstable();
        closure.insert(s.clone(), tables);
    }

    Policy {
        subjects: subjects.into_iter().cloned().collect(),
        closure,
        grants: grants.into_iter().map(Builder::freeze).collect(),
        expiries: expiries.into_iter().collect(),
        generation: 0,
        rules,
    }
}

#[cfg(test)]
mod tests;
