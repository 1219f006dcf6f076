//! Rule files: what a rule names (subjects, objects, actions, expiry), the
//! line parser and its validation.
//!
//! The format is casbin's CSV policy format (see `model.conf`); every line is
//! checked here because casbin's own FileAdapter accepts lines it cannot use.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use topology::{GbId, IdError};

use crate::error::PolicyError;

/// Who asks: a department, a user, a role, or a peer node / upper platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// `dept:<name>`: a department (network) that owns or watches channels.
    Dept(String),
    /// `user:<name>`: one person, usually a member of a department.
    User(String),
    /// `role:<name>`: a named set of grants that subjects inherit through `g`.
    Role(String),
    /// `node:<20-digit ID>`: a peer gateway or a third-party upper platform.
    Node(GbId),
}

impl Subject {
    /// Whether other subjects may be members of this one (`dept:` and `role:`).
    pub fn can_have_members(&self) -> bool {
        matches!(self, Subject::Dept(_) | Subject::Role(_))
    }
}

/// Names of departments, users, roles and groups: `[A-Za-z0-9_.-]+`.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl FromStr for Subject {
    type Err = InvalidRule;

    fn from_str(s: &str) -> Result<Subject, InvalidRule> {
        let Some((kind, rest)) = s.split_once(':') else {
            return Err(InvalidRule::UnknownSubjectForm { found: s.into() });
        };
        let named = |make: fn(String) -> Subject| {
            if valid_name(rest) {
                Ok(make(rest.to_owned()))
            } else {
                Err(InvalidRule::BadName { found: s.into() })
            }
        };
        match kind {
            "dept" => named(Subject::Dept),
            "user" => named(Subject::User),
            "role" => named(Subject::Role),
            "node" => {
                GbId::parse(rest)
                    .map(Subject::Node)
                    .map_err(|error| InvalidRule::BadNodeId {
                        found: s.into(),
                        error,
                    })
            }
            _ => Err(InvalidRule::UnknownSubjectForm { found: s.into() }),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Dept(n) => write!(f, "dept:{n}"),
            Subject::User(n) => write!(f, "user:{n}"),
            Subject::Role(n) => write!(f, "role:{n}"),
            Subject::Node(id) => write!(f, "node:{}", id.as_str()),
        }
    }
}

/// What a subject wants to do with a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// See the channel in a catalog answer or push.
    Catalog,
    /// Watch live video.
    Live,
    /// Play back recordings.
    Playback,
    /// Download recordings.
    Download,
    /// Pan, tilt, zoom and other device control.
    Ptz,
    /// Two-way audio.
    Talk,
}

impl Action {
    /// Every action, in the order of their bits in a rule's action mask.
    pub const ALL: [Action; 6] = [
        Action::Catalog,
        Action::Live,
        Action::Playback,
        Action::Download,
        Action::Ptz,
        Action::Talk,
    ];

    /// The action's name in rule files.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Catalog => "catalog",
            Action::Live => "live",
            Action::Playback => "playback",
            Action::Download => "download",
            Action::Ptz => "ptz",
            Action::Talk => "talk",
        }
    }

    /// One bit per action, so a rule's actions are a mask tested with one AND.
    pub(crate) fn bit(self) -> u8 {
        match self {
            Action::Catalog => 1,
            Action::Live => 2,
            Action::Playback => 4,
            Action::Download => 8,
            Action::Ptz => 16,
            Action::Talk => 32,
        }
    }
}

impl FromStr for Action {
    type Err = InvalidRule;

    fn from_str(s: &str) -> Result<Action, InvalidRule> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| InvalidRule::UnknownAction { found: s.into() })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The action field of a `p` line: one action, or `*` for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionPattern {
    /// `*`: every action.
    Any,
    /// One action.
    Only(Action),
}

impl ActionPattern {
    /// The actions covered, as a mask of [`Action`] bits.
    pub(crate) fn mask(self) -> u8 {
        match self {
            ActionPattern::Any => 0x3f,
            ActionPattern::Only(a) => a.bit(),
        }
    }
}

impl FromStr for ActionPattern {
    type Err = InvalidRule;

    fn from_str(s: &str) -> Result<ActionPattern, InvalidRule> {
        if s == "*" {
            Ok(ActionPattern::Any)
        } else {
            s.parse().map(ActionPattern::Only)
        }
    }
}

impl fmt::Display for ActionPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionPattern::Any => f.write_str("*"),
            ActionPattern::Only(a) => a.fmt(f),
        }
    }
}

/// The object field of a `p` line: which channels a rule covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectPattern {
    /// `*`: every channel.
    Any,
    /// One channel, by its 20-digit ID.
    Exact(GbId),
    /// Every channel whose ID starts with these 1 to 19 digits (written `3402*`);
    /// a civil code prefix is an area.
    Prefix(String),
    /// `group:<name>`: the channels of a named group defined by `g2` lines.
    NamedGroup(String),
    /// `group:<20-digit ID>`: every channel with this catalog group (device,
    /// business group 215, virtual organisation 216) among its ancestors.
    CatalogGroup(GbId),
}

/// Parses `<1..19 digits>*`; `s` is the whole field, for error messages.
fn parse_prefix(s: &str) -> Result<String, InvalidRule> {
    let digits = s.strip_suffix('*').unwrap_or(s);
    let ok = s.ends_with('*')
        && (1..GbId::LEN).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(digits.to_owned())
    } else {
        Err(InvalidRule::MalformedIdPrefix { found: s.into() })
    }
}

/// Whether `s` looks like an attempt at an ID or prefix (digits, maybe a star).
fn id_like(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'*')
}

impl FromStr for ObjectPattern {
    type Err = InvalidRule;

    fn from_str(s: &str) -> Result<ObjectPattern, InvalidRule> {
        if s == "*" {
            return Ok(ObjectPattern::Any);
        }
        if let Some(name) = s.strip_prefix("group:") {
            if name.len() == GbId::LEN && name.bytes().all(|b| b.is_ascii_digit()) {
                return GbId::parse(name)
                    .map(ObjectPattern::CatalogGroup)
                    .map_err(|_| InvalidRule::BadGroupName { found: s.into() });
            }
            return if valid_name(name) {
                Ok(ObjectPattern::NamedGroup(name.to_owned()))
            } else {
                Err(InvalidRule::BadGroupName { found: s.into() })
            };
        }
        if s.len() == GbId::LEN && s.bytes().all(|b| b.is_ascii_digit()) {
            return GbId::parse(s)
                .map(ObjectPattern::Exact)
                .map_err(|_| InvalidRule::MalformedIdPrefix { found: s.into() });
        }
        if id_like(s) {
            return parse_prefix(s).map(ObjectPattern::Prefix);
        }
        Err(InvalidRule::UnknownObjectForm { found: s.into() })
    }
}

impl fmt::Display for ObjectPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectPattern::Any => f.write_str("*"),
            ObjectPattern::Exact(id) => f.write_str(id.as_str()),
            ObjectPattern::Prefix(p) => write!(f, "{p}*"),
            ObjectPattern::NamedGroup(n) => write!(f, "group:{n}"),
            ObjectPattern::CatalogGroup(id) => write!(f, "group:{}", id.as_str()),
        }
    }
}

/// Whether a matching `p` rule grants or refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Grants, unless a deny also matches.
    Allow,
    /// Refuses; a deny always beats an allow.
    Deny,
}

impl FromStr for Effect {
    type Err = InvalidRule;

    fn from_str(s: &str) -> Result<Effect, InvalidRule> {
        match s {
            "allow" => Ok(Effect::Allow),
            "deny" => Ok(Effect::Deny),
            _ => Err(InvalidRule::UnknownEffect { found: s.into() }),
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        })
    }
}

/// When a rule stops applying: a whole second in UTC, written
/// `YYYY-MM-DDTHH:MM:SSZ`. A rule is in force while `now < expiry`.
///
/// Only this fixed-width form is accepted, so expiries compare as text too
/// (which is how the casbin matcher compares them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Expiry {
    /// Seconds since the Unix epoch (negative before 1970).
    secs: i64,
}

impl Expiry {
    /// The expiry at `secs` seconds after the Unix epoch, if its year is 0–9999.
    pub fn from_unix(secs: i64) -> Option<Expiry> {
        let (y, _, _) = civil_from_days(secs.div_euclid(86_400));
        (0..=9999).contains(&y).then_some(Expiry { secs })
    }

    /// Seconds since the Unix epoch.
    pub fn unix(self) -> i64 {
        self.secs
    }

    /// The expiry as a point in time.
    pub fn to_system_time(self) -> SystemTime {
        let d = Duration::from_secs(self.secs.unsigned_abs());
        if self.secs >= 0 {
            UNIX_EPOCH + d
        } else {
            UNIX_EPOCH - d
        }
    }

    /// Whether a rule with this expiry is still in force at `now`.
    pub fn in_force_at(self, now: SystemTime) -> bool {
        // Expiries are whole seconds, so comparing the floor of `now` is exact.
        unix_floor(now) < self.secs
    }
}

/// `now` as whole seconds since the epoch, rounded down (also before 1970).
pub(crate) fn unix_floor(now: SystemTime) -> i64 {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            -whole - i64::from(d.subsec_nanos() > 0)
        }
    }
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn format_utc(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number from [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

impl FromStr for Expiry {
    type Err = InvalidRule;

    fn from_str(s: &str) -> Result<Expiry, InvalidRule> {
        let bad = |why: &'static str| InvalidRule::BadExpiry {
            found: s.into(),
            why,
        };
        let b = s.as_bytes();
        let shape = b.len() == 20
            && b.iter().enumerate().all(|(i, &c)| match i {
                4 | 7 => c == b'-',
                10 => c == b'T',
                13 | 16 => c == b':',
                19 => c == b'Z',
                _ => c.is_ascii_digit(),
            });
        if !shape {
            return Err(bad(
                "the form is YYYY-MM-DDTHH:MM:SSZ (UTC, whole seconds, no offset)",
            ));
        }
        let num = |from: usize, to: usize| -> i64 {
            b[from..to]
                .iter()
                .fold(0, |n, &c| n * 10 + i64::from(c - b'0'))
        };
        let (y, mo, d) = (num(0, 4), num(5, 7), num(8, 10));
        let (h, mi, sec) = (num(11, 13), num(14, 16), num(17, 19));
        if !(1..=12).contains(&mo) {
            return Err(bad("month must be 01 to 12"));
        }
        let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        let month_days = match mo {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        if !(1..=month_days).contains(&d) {
            return Err(bad("that month has no such day"));
        }
        if h > 23 || mi > 59 || sec > 59 {
            return Err(bad("time of day must be 00:00:00 to 23:59:59"));
        }
        Ok(Expiry {
            secs: days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec,
        })
    }
}

impl fmt::Display for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_utc(self.secs))
    }
}

/// The left side of a `g2` line: which channels join a named group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GroupMember {
    /// A 20-digit ID: the channel with this ID, and every channel that has a
    /// catalog group with this ID among its ancestors (the two cannot be told
    /// apart by the ID alone, and a channel ID is never another's ancestor).
    Id(GbId),
    /// An ID prefix (digits, without the star): channels whose own ID starts with it.
    Prefix(String),
}

impl FromStr for GroupMember {
    type Err = InvalidRule;

    fn from_str(s: &str) -> Result<GroupMember, InvalidRule> {
        match s.parse::<ObjectPattern>() {
            Ok(ObjectPattern::Exact(id)) => Ok(GroupMember::Id(id)),
            Ok(ObjectPattern::Prefix(p)) => Ok(GroupMember::Prefix(p)),
            Err(e @ InvalidRule::MalformedIdPrefix { .. }) => Err(e),
            _ => Err(InvalidRule::BadGroupMember { found: s.into() }),
        }
    }
}

impl fmt::Display for GroupMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupMember::Id(id) => f.write_str(id.as_str()),
            GroupMember::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// Where a rule came from: file, 1-based line and the line's text.
///
/// Displays as `file:line` followed by the text in backquotes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleRef {
    /// The file name as given to [`crate::Policy::load`] or [`crate::Policy::parse`].
    pub file: Arc<str>,
    /// 1-based line number.
    pub line: u32,
    /// The line, trimmed.
    pub text: Arc<str>,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} `{}`", self.file, self.line, self.text)
    }
}

/// A `p` line: a grant or refusal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grant {
    /// Who it applies to (and, through `g`, every member).
    pub subject: Subject,
    /// Which channels.
    pub object: ObjectPattern,
    /// Which actions.
    pub action: ActionPattern,
    /// Allow or deny.
    pub effect: Effect,
    /// When it stops applying; `None` is never.
    pub expires: Option<Expiry>,
}

/// What a rule line says.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleKind {
    /// `p, subject, object, action, effect[, expires]`.
    Grant(Grant),
    /// `g, member, of`: `member` inherits every rule of `of` (transitively).
    Member {
        /// The subject that inherits.
        member: Subject,
        /// The department or role it belongs to.
        of: Subject,
    },
    /// `g2, member, group:<name>`: channels that join a named group.
    GroupMember {
        /// The channels.
        member: GroupMember,
        /// The group's name, without `group:`.
        group: String,
    },
}

/// One valid rule line and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// File, line and text.
    pub at: RuleRef,
    /// What it says.
    pub kind: RuleKind,
}

/// Why a rule line is refused. Each message says what was found and what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRule {
    /// The first field is not `p`, `g` or `g2`.
    #[error("unknown line kind `{found}`: a rule line starts with p, g or g2")]
    UnknownLineKind {
        /// The first field.
        found: String,
    },
    /// The line has too few or too many fields for its kind.
    #[error("a `{kind}` line needs {expected}, found {found} fields")]
    WrongFieldCount {
        /// `p`, `g` or `g2`.
        kind: &'static str,
        /// The expected fields, spelled out.
        expected: &'static str,
        /// How many fields the line has, its kind included.
        found: usize,
    },
    /// A subject without one of the known `kind:` forms.
    #[error("`{found}` is not a subject: use dept:<name>, user:<name>, role:<name> or node:<20-digit ID>")]
    UnknownSubjectForm {
        /// The field.
        found: String,
    },
    /// A `dept:`, `user:` or `role:` subject whose name is empty or has other characters.
    #[error("`{found}`: a name is one or more of A-Z a-z 0-9 _ . -")]
    BadName {
        /// The field.
        found: String,
    },
    /// A `node:` subject whose ID is not 20 digits.
    #[error("`{found}`: {error}")]
    BadNodeId {
        /// The field.
        found: String,
        /// What is wrong with the ID.
        error: IdError,
    },
    /// Digits that are neither a 20-digit ID nor a 1–19 digit prefix ending in `*`.
    #[error("`{found}` is not an ID or ID prefix: a channel ID is 20 digits, a prefix 1 to 19 digits followed by *")]
    MalformedIdPrefix {
        /// The field.
        found: String,
    },
    /// An object that is none of the known forms.
    #[error("`{found}` is not an object: use a 20-digit channel ID, an ID prefix like 3402*, *, group:<name> or group:<20-digit catalog group ID>")]
    UnknownObjectForm {
        /// The field.
        found: String,
    },
    /// `group:` followed by an empty or malformed name.
    #[error("`{found}`: a group is group:<name> (A-Z a-z 0-9 _ . -) or group:<20-digit catalog group ID>")]
    BadGroupName {
        /// The field.
        found: String,
    },
    /// An action other than the six known ones and `*`.
    #[error("unknown action `{found}`: use catalog, live, playback, download, ptz, talk or *")]
    UnknownAction {
        /// The field.
        found: String,
    },
    /// An effect other than `allow` or `deny`.
    #[error("unknown effect `{found}`: use allow or deny")]
    UnknownEffect {
        /// The field.
        found: String,
    },
    /// An expiry that is not a valid `YYYY-MM-DDTHH:MM:SSZ` time.
    #[error("expiry `{found}` is not a UTC time like 2026-12-31T00:00:00Z: {why}")]
    BadExpiry {
        /// The field.
        found: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The second field of a `g` line is a `user:` or `node:` subject.
    #[error(
        "`{found}` cannot have members: the second field of a g line is a dept: or role: subject"
    )]
    NotAGroupSubject {
        /// The field.
        found: String,
    },
    /// The first field of a `g2` line is neither an ID nor an ID prefix.
    #[error("`{found}` cannot join a group: use a 20-digit channel or catalog group ID, or an ID prefix like 3402*")]
    BadGroupMember {
        /// The field.
        found: String,
    },
    /// The second field of a `g2` line is not `group:<name>`.
    #[error("`{found}` is not a named group: the second field of a g2 line is group:<name>, and a name is not a 20-digit ID")]
    NotANamedGroup {
        /// The field.
        found: String,
    },
    /// A `p` line names a group that no `g2` line (in any file) defines.
    #[error("group:{group} has no members: no g2 line defines it")]
    UndefinedGroup {
        /// The group's name.
        group: String,
    },
}

/// Parses one file. Returns the valid rules and one error per invalid line.
pub fn parse_file(file: &str, text: &str) -> (Vec<Rule>, Vec<PolicyError>) {
    let file: Arc<str> = Arc::from(file);
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match parse_line(trimmed) {
            Ok(kind) => rules.push(Rule {
                at: RuleRef {
                    file: Arc::clone(&file),
                    line,
                    text: Arc::from(trimmed),
                },
                kind,
            }),
            Err(reason) => errors.push(PolicyError::Invalid {
                file: file.to_string(),
                line,
                reason,
            }),
        }
    }
    (rules, errors)
}

/// Parses one non-blank, non-comment line (already trimmed).
pub fn parse_line(line: &str) -> Result<RuleKind, InvalidRule> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let n = fields.len();
    match fields.as_slice() {
        ["p", rest @ ..] => {
            let [subject, object, action, effect, expires @ ..] = rest else {
                return Err(p_count(n));
            };
            let expires = match expires {
                [] => None,
                [e] => Some(e.parse::<Expiry>()?),
                _ => return Err(p_count(n)),
            };
            Ok(RuleKind::Grant(Grant {
                subject: subject.parse()?,
                object: object.parse()?,
                action: action.parse()?,
                effect: effect.parse()?,
                expires,
            }))
        }
        ["g", member, of] => {
            let member: Subject = member.parse()?;
            let of: Subject = of.parse()?;
            if !of.can_have_members() {
                return Err(InvalidRule::NotAGroupSubject {
                    found: of.to_string(),
                });
            }
            Ok(RuleKind::Member { member, of })
        }
        ["g", ..] => Err(InvalidRule::WrongFieldCount {
            kind: "g",
            expected: "3 (g, member subject, dept or role subject)",
            found: n,
        }),
        ["g2", member, group] => {
            let member: GroupMember = member.parse()?;
            match group.parse::<ObjectPattern>() {
                Ok(ObjectPattern::NamedGroup(group)) => Ok(RuleKind::GroupMember { member, group }),
                _ => Err(InvalidRule::NotANamedGroup {
                    found: (*group).into(),
                }),
            }
        }
        ["g2", ..] => Err(InvalidRule::WrongFieldCount {
            kind: "g2",
            expected: "3 (g2, channel ID or prefix*, group:<name>)",
            found: n,
        }),
        [kind, ..] => Err(InvalidRule::UnknownLineKind {
            found: (*kind).into(),
        }),
        [] => Err(InvalidRule::UnknownLineKind { found: line.into() }),
    }
}

fn p_count(found: usize) -> InvalidRule {
    InvalidRule::WrongFieldCount {
        kind: "p",
        expected: "5 or 6 (p, subject, object, action, allow|deny[, expires])",
        found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reason `line`, put on line 2 of t.csv after a comment, is refused;
    /// checks the error names t.csv:2.
    fn reason(line: &str) -> InvalidRule {
        let (rules, errors) = parse_file("t.csv", &format!("# header\n{line}\n"));
        assert!(rules.is_empty(), "{rules:?}");
        match errors.as_slice() {
            [e @ PolicyError::Invalid {
                file,
                line: 2,
                reason,
            }] if file == "t.csv" => {
                assert_eq!(e.to_string(), format!("t.csv:2: {reason}"));
                reason.clone()
            }
            other => panic!("expected one error at t.csv:2, got {other:?}"),
        }
    }

    #[test]
    fn subjects_round_trip() {
        for s in [
            "dept:traffic",
            "user:li.wei",
            "role:viewer-2",
            "node:34020000002000000001",
        ] {
            let parsed: Subject = s.parse().expect("valid subject");
            assert_eq!(parsed.to_string(), s);
        }
        assert!(matches!(
            "dept:".parse::<Subject>(),
            Err(InvalidRule::BadName { .. })
        ));
        assert!(matches!(
            "node:3402".parse::<Subject>(),
            Err(InvalidRule::BadNodeId { .. })
        ));
    }

    #[test]
    fn objects_round_trip() {
        for s in [
            "*",
            "34020000001320000001",
            "3402*",
            "3*",
            "3402000000132000000*",
            "group:river",
            "group:34020000002150000001",
        ] {
            let parsed: ObjectPattern = s.parse().expect("valid object");
            assert_eq!(parsed.to_string(), s);
        }
        for bad in ["34*02", "3402", "*3402", "34020000001320000001*", "**"] {
            assert!(
                matches!(
                    bad.parse::<ObjectPattern>(),
                    Err(InvalidRule::MalformedIdPrefix { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn expiry_parses_and_formats() {
        let e: Expiry = "2026-12-31T00:00:00Z".parse().expect("valid expiry");
        assert_eq!(e.unix(), 1_798_675_200);
        assert_eq!(e.to_string(), "2026-12-31T00:00:00Z");
        let epoch: Expiry = "1970-01-01T00:00:00Z".parse().expect("valid expiry");
        assert_eq!(epoch.unix(), 0);
        let leap: Expiry = "2024-02-29T23:59:59Z".parse().expect("leap day");
        assert_eq!(leap.unix(), 1_709_251_199);
        let old: Expiry = "1969-12-31T23:59:59Z".parse().expect("before 1970");
        assert_eq!(old.unix(), -1);
        assert_eq!(old.to_string(), "1969-12-31T23:59:59Z");
        assert_eq!(
            Expiry::from_unix(253_402_300_799).map(|e| e.to_string()),
            Some("9999-12-31T23:59:59Z".into())
        );
        for bad in [
            "2026-12-31",
            "2026-12-31T00:00:00+08:00",
            "2026-12-31T00:00:00.5Z",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-12-31T24:00:00Z",
        ] {
            assert!(
                matches!(bad.parse::<Expiry>(), Err(InvalidRule::BadExpiry { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn expiry_in_force_is_strictly_before() {
        let e: Expiry = "2026-12-31T00:00:00Z".parse().expect("valid expiry");
        let at = e.to_system_time();
        assert!(e.in_force_at(at - Duration::from_nanos(1)));
        assert!(!e.in_force_at(at));
        assert!(!e.in_force_at(at + Duration::from_secs(1)));
        let before: Expiry = "1969-12-31T23:59:59Z".parse().expect("valid expiry");
        let t = before.to_system_time();
        assert!(before.in_force_at(t - Duration::from_millis(500)));
        assert!(!before.in_force_at(t + Duration::from_millis(500)));
    }

    #[test]
    fn every_invalid_rule_kind_is_reported() {
        type Check = fn(&InvalidRule) -> bool;
        let cases: Vec<(&str, Check)> = vec![
            (
                "x, dept:a, *, live, allow",
                |r| matches!(r, InvalidRule::UnknownLineKind { found } if found == "x"),
            ),
            ("p, dept:a, *, live", |r| {
                matches!(
                    r,
                    InvalidRule::WrongFieldCount {
                        kind: "p",
                        found: 4,
                        ..
                    }
                )
            }),
            ("p, dept:a, *, live, allow, 2026-12-31T00:00:00Z, x", |r| {
                matches!(
                    r,
                    InvalidRule::WrongFieldCount {
                        kind: "p",
                        found: 7,
                        ..
                    }
                )
            }),
            ("g, dept:a", |r| {
                matches!(
                    r,
                    InvalidRule::WrongFieldCount {
                        kind: "g",
                        found: 2,
                        ..
                    }
                )
            }),
            ("g2, 3402*, group:a, x", |r| {
                matches!(
                    r,
                    InvalidRule::WrongFieldCount {
                        kind: "g2",
                        found: 4,
                        ..
                    }
                )
            }),
            (
                "p, team:a, *, live, allow",
                |r| matches!(r, InvalidRule::UnknownSubjectForm { found } if found == "team:a"),
            ),
            ("p, traffic, *, live, allow", |r| {
                matches!(r, InvalidRule::UnknownSubjectForm { .. })
            }),
            ("p, dept:a b, *, live, allow", |r| {
                matches!(r, InvalidRule::BadName { .. })
            }),
            ("p, node:123, *, live, allow", |r| {
                matches!(r, InvalidRule::BadNodeId { .. })
            }),
            (
                "p, dept:a, 3402, live, allow",
                |r| matches!(r, InvalidRule::MalformedIdPrefix { found } if found == "3402"),
            ),
            ("p, dept:a, 34*02, live, allow", |r| {
                matches!(r, InvalidRule::MalformedIdPrefix { .. })
            }),
            ("p, dept:a, camera1, live, allow", |r| {
                matches!(r, InvalidRule::UnknownObjectForm { .. })
            }),
            ("p, dept:a, group:, live, allow", |r| {
                matches!(r, InvalidRule::BadGroupName { .. })
            }),
            (
                "p, dept:a, *, watch, allow",
                |r| matches!(r, InvalidRule::UnknownAction { found } if found == "watch"),
            ),
            (
                "p, dept:a, *, live, permit",
                |r| matches!(r, InvalidRule::UnknownEffect { found } if found == "permit"),
            ),
            ("p, dept:a, *, live, allow, 2026-12-31", |r| {
                matches!(r, InvalidRule::BadExpiry { .. })
            }),
            ("p, dept:a, *, live, allow,", |r| {
                matches!(r, InvalidRule::BadExpiry { .. })
            }),
            (
                "g, dept:a, user:b",
                |r| matches!(r, InvalidRule::NotAGroupSubject { found } if found == "user:b"),
            ),
            ("g2, group:a, group:b", |r| {
                matches!(r, InvalidRule::BadGroupMember { .. })
            }),
            ("g2, 3402*, river", |r| {
                matches!(r, InvalidRule::NotANamedGroup { .. })
            }),
            ("g2, 3402*, group:34020000002150000001", |r| {
                matches!(r, InvalidRule::NotANamedGroup { .. })
            }),
        ];
        for (line, check) in cases {
            let r = reason(line);
            assert!(check(&r), "{line}: got {r:?}");
            // Every reason reads as a sentence a person can act on.
            assert!(r.to_string().len() > 20, "{line}: {r}");
        }
    }

    #[test]
    fn errors_name_file_and_line_and_every_bad_line_is_listed() {
        let text = "# shared with traffic\n\
                    p, dept:traffic, 3402*, live, allow\n\
                    \n\
                    p, dept:traffic, 3402*, watch, allow\n\
                    g, user:a, dept:traffic\n\
                    p, dept:traffic, 3402*, live, maybe\n";
        let (rules, errors) = parse_file("policy/dept.csv", text);
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].at.line, 2);
        assert_eq!(rules[1].at.line, 5);
        let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            shown,
            [
                "policy/dept.csv:4: unknown action `watch`: use catalog, live, playback, download, ptz, talk or *",
                "policy/dept.csv:6: unknown effect `maybe`: use allow or deny",
            ]
        );
    }
}
