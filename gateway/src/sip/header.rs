//! Typed SIP header values: URIs, Via, name-addr (From/To/Contact), CSeq,
//! plus generators for branches, tags and Call-IDs.
//!
//! Each type has `parse(&str) -> Result<Self, HeaderError>` and a `Display`
//! that produces text `parse` reads back to an equal value. Parsing is our
//! own because rsip 0.4 rejects IPv6 hosts and has no typed `rport`
//! (`docs/crates.md` §1); the grammar needed here is small.
//!
//! IPv6 hosts are stored *without* brackets (`2001:db8::1`) so they parse
//! directly as [`std::net::IpAddr`]; `Display` adds the brackets back.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::sip::message::{is_token, Headers, Method};

/// A header value that does not follow the expected grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// A SIP/SIPS URI is malformed.
    #[error("invalid SIP URI {input:?}: {reason}")]
    Uri {
        /// What was wrong.
        reason: String,
        /// The offending text (truncated).
        input: String,
    },
    /// A Via value is malformed.
    #[error("invalid Via {input:?}: {reason}")]
    Via {
        /// What was wrong.
        reason: String,
        /// The offending text (truncated).
        input: String,
    },
    /// A From/To/Contact value is malformed.
    #[error("invalid name-addr {input:?}: {reason}")]
    NameAddr {
        /// What was wrong.
        reason: String,
        /// The offending text (truncated).
        input: String,
    },
    /// A CSeq value is malformed.
    #[error("invalid CSeq {input:?}: {reason}")]
    CSeq {
        /// What was wrong.
        reason: String,
        /// The offending text (truncated).
        input: String,
    },
    /// A Reason value (RFC 3326) is malformed.
    #[error("invalid Reason {input:?}: {reason}")]
    Reason {
        /// What was wrong.
        reason: String,
        /// The offending text (truncated).
        input: String,
    },
}

/// At most this many characters of the offending input go into an error, so
/// a 60 KB garbage header does not end up in every log line.
const EXCERPT_CHARS: usize = 80;

fn excerpt(input: &str) -> String {
    match input.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", input.get(..cut).unwrap_or_default()),
        None => input.to_owned(),
    }
}

/// SP/HT trimming by bytes: `trim_matches([' ', '\t'])` walks chars
/// through a pattern, and every piece of every header is trimmed.
trait TrimBlanks {
    /// Without leading and trailing SP and HT.
    fn trim_blanks(&self) -> &str;
    /// Without leading SP and HT.
    fn trim_start_blanks(&self) -> &str;
}

impl TrimBlanks for str {
    fn trim_blanks(&self) -> &str {
        self.get(crate::sip::message::unblank_span(self.as_bytes()))
            .unwrap_or_default()
    }

    fn trim_start_blanks(&self) -> &str {
        let start = self
            .bytes()
            .position(|b| !matches!(b, b' ' | b'\t'))
            .unwrap_or(self.len());
        self.get(start..).unwrap_or_default()
    }
}

/// `str::split_once` for an ASCII separator, by memchr (the char-pattern
/// search was a twentieth of a REGISTER's cost).
fn split_at_byte(s: &str, sep: u8) -> Option<(&str, &str)> {
    debug_assert!(sep.is_ascii());
    let i = memchr::memchr(sep, s.as_bytes())?;
    // `sep` is ASCII, so `i` and `i + 1` are char boundaries.
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// Whitespace, a control character or a byte `extra` picks: what may not
/// stand in a URI or a token parameter value. Bytes for ASCII text (the
/// usual case), chars otherwise.
fn has_blank_control_or(s: &str, extra: impl Fn(u8) -> bool) -> bool {
    if s.is_ascii() {
        s.bytes().any(|b| b <= b' ' || b == 0x7f || extra(b))
    } else {
        s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || (c.is_ascii() && extra(c as u8)))
    }
}

fn uri_err(reason: impl Into<String>, input: &str) -> HeaderError {
    HeaderError::Uri {
        reason: reason.into(),
        input: excerpt(input),
    }
}

/// Split a header value into its comma-separated elements, ignoring commas
/// inside double quotes (with backslash escapes) and inside `<...>`.
/// Elements are trimmed; empty elements are dropped.
pub fn split_comma_values(value: &str) -> Vec<&str> {
    comma_values(value).collect()
}

/// [`split_comma_values`] without collecting.
fn comma_values(value: &str) -> impl Iterator<Item = &str> {
    pieces_outside_quotes(value, b',', true)
        .map(|s| s.trim_blanks())
        .filter(|s| !s.is_empty())
}

/// Split `s` at every `sep` byte that is outside a quoted string (and,
/// when `angle` is set, outside `<...>`). The pieces come untrimmed and
/// borrowed: every header of a REGISTER storm is split here, and a `Vec`
/// per value was a measurable share of it.
fn pieces_outside_quotes(s: &str, sep: u8, angle: bool) -> OutsideQuotes<'_> {
    OutsideQuotes {
        rest: Some(s),
        sep,
        angle,
    }
}

/// The iterator of [`pieces_outside_quotes`].
struct OutsideQuotes<'a> {
    /// What is not split yet; `None` once the last piece was returned.
    rest: Option<&'a str>,
    sep: u8,
    angle: bool,
}

impl<'a> Iterator for OutsideQuotes<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        let mut in_quotes = false;
        let mut escaped = false;
        let mut in_angle = false;
        for (i, b) in s.bytes().enumerate() {
            if in_quotes {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_quotes = false;
                }
                continue;
            }
            match b {
                b'"' => in_quotes = true,
                b'<' if self.angle => in_angle = true,
                b'>' if self.angle => in_angle = false,
                _ if b == self.sep && !in_angle => {
                    // `sep` is ASCII, so both `i` and `i + 1` are char boundaries.
                    self.rest = s.get(i + 1..);
                    return s.get(..i);
                }
                _ => {}
            }
        }
        self.rest = None;
        Some(s)
    }
}

/// The first comma-separated element of a header value, trimmed (the top
/// Via of a line, the first Contact), without splitting the rest.
pub fn first_comma_value(value: &str) -> Option<&str> {
    comma_values(value).next()
}

/// A list of `;name[=value]` parameters, names kept as written, values kept
/// verbatim (quoted values keep their quotes so they re-serialise exactly).
pub type Params = Vec<(String, Option<String>)>;

/// A parameter list as written (`;a=b;c`), checked once and read in
/// place: parsing a request's URIs and addresses allocates nothing until a
/// caller asks for an owned value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParamsRef<'a> {
    /// The list without its leading `;` and surrounding blanks.
    text: &'a str,
}

impl<'a> ParamsRef<'a> {
    /// Check `;a=b;c` (the leading `;` optional). Whitespace around names,
    /// `=` and values is dropped. Empty segments (`;;`, trailing `;`) are
    /// skipped.
    fn parse(s: &'a str) -> Result<Self, String> {
        let s = s.trim_blanks();
        let s = s.strip_prefix(';').unwrap_or(s);
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        let params = Self { text: s };
        for (name, value) in params.iter() {
            if !is_param_name(name) {
                return Err(format!("invalid parameter name {name:?}"));
            }
            if let Some(v) = value {
                if !is_param_value(v) {
                    return Err(format!("invalid value for parameter {name:?}"));
                }
            }
        }
        Ok(params)
    }

    /// The parameters in order, names as written, values verbatim.
    pub fn iter(self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> {
        pieces_outside_quotes(self.text, b';', false).filter_map(|segment| {
            let segment = segment.trim_blanks();
            if segment.is_empty() {
                return None;
            }
            Some(match split_at_byte(segment, b'=') {
                Some((n, v)) => (n.trim_blanks(), Some(v.trim_blanks())),
                None => (segment, None),
            })
        })
    }

    /// A parameter: `None` if absent, `Some(None)` if present without value.
    pub fn get(self, name: &str) -> Option<Option<&'a str>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The owned list.
    pub fn to_params(self) -> Params {
        self.iter()
            .map(|(n, v)| (n.to_owned(), v.map(str::to_owned)))
            .collect()
    }
}

/// Parse `;a=b;c` into an owned list (see [`ParamsRef::parse`]).
fn parse_params(s: &str) -> Result<Params, String> {
    ParamsRef::parse(s).map(ParamsRef::to_params)
}

/// Parameter names are tokens; `[` `]` are tolerated for odd vendor names.
fn is_param_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| crate::sip::message::is_token_byte(b) || matches!(b, b'[' | b']'))
}

/// A parameter value is either a complete quoted string or a run of
/// printable non-blank characters with no separators that would change how
/// it is split (`;`, `,`, `"`, `<`, `>`).
fn is_param_value(s: &str) -> bool {
    if let Some(inner) = s.strip_prefix('"') {
        return match inner.strip_suffix('"') {
            // A closing quote that is itself escaped does not count.
            Some(body) => !ends_with_escape(body) && !body.chars().any(|c| c == '\r' || c == '\n'),
            None => false,
        };
    }
    !has_blank_control_or(s, |b| matches!(b, b';' | b',' | b'"' | b'<' | b'>'))
}

/// True if `s` ends in an odd number of backslashes.
fn ends_with_escape(s: &str) -> bool {
    s.bytes().rev().take_while(|b| *b == b'\\').count() % 2 == 1
}

/// Write `;name[=value]` for each parameter.
fn write_params<'p>(
    f: &mut impl fmt::Write,
    params: impl IntoIterator<Item = (&'p str, Option<&'p str>)>,
) -> fmt::Result {
    for (name, value) in params {
        match value {
            Some(v) => write!(f, ";{name}={v}")?,
            None => write!(f, ";{name}")?,
        }
    }
    Ok(())
}

/// An owned parameter list as [`write_params`] takes it.
fn param_pairs(params: &Params) -> impl Iterator<Item = (&str, Option<&str>)> {
    params.iter().map(|(n, v)| (n.as_str(), v.as_deref()))
}

fn find_param<'a>(params: &'a Params, name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_deref())
}

fn set_param(params: &mut Params, name: &str, value: Option<String>) {
    match params
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
    {
        Some(entry) => entry.1 = value,
        None => params.push((name.to_owned(), value)),
    }
}

/// A hostname or IPv4 literal: letters, digits, `-`, `.`, and `_` (not
/// RFC-legal but seen in the wild).
fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// Parse `host[:port]` where host may be `[v6]`. Returns (host without
/// brackets, port, remaining text).
fn parse_host_port(s: &str) -> Result<(&str, Option<u16>, &str), String> {
    let (host, rest) = if let Some(inner) = s.strip_prefix('[') {
        let Some((v6, rest)) = split_at_byte(inner, b']') else {
            return Err("unterminated '[' in IPv6 host".to_owned());
        };
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{v6:?} is not an IPv6 address"));
        }
        (v6, rest)
    } else {
        let end = s
            .bytes()
            .position(|b| matches!(b, b':' | b';' | b'?' | b' ' | b'\t' | b','))
            .unwrap_or(s.len());
        let host = s.get(..end).unwrap_or_default();
        if !is_host_name(host) {
            return Err(format!("invalid host {host:?}"));
        }
        (host, s.get(end..).unwrap_or_default())
    };
    let Some(after_colon) = rest.strip_prefix(':') else {
        return Ok((host, None, rest));
    };
    let end = after_colon
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(after_colon.len());
    let digits = after_colon.get(..end).unwrap_or_default();
    let port = digits
        .parse::<u16>()
        .map_err(|_| format!("invalid port {digits:?}"))?;
    Ok((host, Some(port), after_colon.get(end..).unwrap_or_default()))
}

/// Write a host, bracketing IPv6 literals.
fn write_host(f: &mut impl fmt::Write, host: &str) -> fmt::Result {
    if host.contains(':') {
        write!(f, "[{host}]")
    } else {
        f.write_str(host)
    }
}

/// A `sip:` or `sips:` URI (RFC 3261 §19.1).
///
/// `?headers` are accepted and dropped (GB/T 28181 never uses them). A
/// password (`user:pass@`, deprecated) stays inside `user`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SipUri {
    /// `sip` or `sips`, lowercase.
    pub scheme: String,
    /// User part (e.g. a 20-digit GB/T 28181 ID), still %-escaped.
    pub user: Option<String>,
    /// Host name or IP literal; IPv6 without brackets.
    pub host: String,
    /// Explicit port.
    pub port: Option<u16>,
    /// URI parameters (`;transport=tcp`, `;lr`).
    pub params: Params,
}

/// A `sip:`/`sips:` URI read in place (see [`SipUri`]): what checking a
/// request and finding who sent it need, without an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SipUriRef<'a> {
    /// `sip` or `sips`, as written (any case).
    pub scheme: &'a str,
    /// User part, still %-escaped.
    pub user: Option<&'a str>,
    /// Host name or IP literal; IPv6 without brackets.
    pub host: &'a str,
    /// Explicit port.
    pub port: Option<u16>,
    /// URI parameters.
    pub params: ParamsRef<'a>,
}

impl<'a> SipUriRef<'a> {
    /// Parse a SIP/SIPS URI (the grammar of [`SipUri::parse`]).
    pub fn parse(input: &'a str) -> Result<Self, HeaderError> {
        let s = input.trim_blanks();
        if has_blank_control_or(s, |b| matches!(b, b'<' | b'>' | b'"')) {
            return Err(uri_err(
                "whitespace, control character, '<', '>' or '\"'",
                input,
            ));
        }
        let Some((scheme, rest)) = split_at_byte(s, b':') else {
            return Err(uri_err("no scheme", input));
        };
        if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
            return Err(uri_err(
                format!("unsupported scheme {:?}", scheme.to_ascii_lowercase()),
                input,
            ));
        }
        // The user part may contain ';' and '?' but never an unescaped '@',
        // so the first '@' ends it.
        let (user, rest) = match split_at_byte(rest, b'@') {
            Some((user, rest)) => {
                if user.is_empty() {
                    return Err(uri_err("empty user part before '@'", input));
                }
                (Some(user), rest)
            }
            None => (None, rest),
        };
        let (host, port, rest) = parse_host_port(rest).map_err(|r| uri_err(r, input))?;
        let (param_text, _headers) = split_at_byte(rest, b'?').unwrap_or((rest, ""));
        if !param_text.is_empty() && !param_text.starts_with(';') {
            return Err(uri_err(
                format!("unexpected {param_text:?} after host"),
                input,
            ));
        }
        let params = ParamsRef::parse(param_text).map_err(|r| uri_err(r, input))?;
        Ok(Self {
            scheme,
            user,
            host,
            port,
            params,
        })
    }

    /// The owned URI.
    pub fn to_uri(self) -> SipUri {
        SipUri {
            scheme: self.scheme.to_ascii_lowercase(),
            user: self.user.map(str::to_owned),
            host: self.host.to_owned(),
            port: self.port,
            params: self.params.to_params(),
        }
    }
}

impl SipUri {
    /// Parse a SIP/SIPS URI.
    pub fn parse(input: &str) -> Result<Self, HeaderError> {
        SipUriRef::parse(input).map(SipUriRef::to_uri)
    }

    /// A `sip:user@host[:port]` URI without parameters.
    pub fn new(user: Option<&str>, host: &str, port: Option<u16>) -> Self {
        Self {
            scheme: "sip".to_owned(),
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
            params: Vec::new(),
        }
    }

    /// `host[:port]`, IPv6 bracketed.
    pub fn host_port(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }

    /// The socket address, only if the host is an IP literal. The default
    /// port is 5060 for `sip:` and 5061 for `sips:` (RFC 3261 §19.1.2).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.host.parse().ok()?;
        let default = if self.scheme == "sips" { 5061 } else { 5060 };
        Some(SocketAddr::new(ip, self.port.unwrap_or(default)))
    }

    /// A URI parameter: `None` if absent, `Some(None)` if present without a
    /// value.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme)?;
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        write_host(f, &self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write_params(f, param_pairs(&self.params))
    }
}

impl std::str::FromStr for SipUri {
    type Err = HeaderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn via_err(reason: impl Into<String>, input: &str) -> HeaderError {
    HeaderError::Via {
        reason: reason.into(),
        input: excerpt(input),
    }
}

/// One Via value: `SIP/2.0/UDP host[:port];params` (RFC 3261 §20.42).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Via {
    /// Transport, uppercase (`UDP`, `TCP`, `TLS`, `QUIC`, ...).
    pub transport: String,
    /// sent-by host; IPv6 without brackets.
    pub host: String,
    /// sent-by port.
    pub port: Option<u16>,
    /// Parameters in order (`branch`, `rport`, `received`, ...).
    pub params: Params,
}

/// One Via value read in place (see [`Via`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViaRef<'a> {
    /// Transport as written (any case).
    pub transport: &'a str,
    /// sent-by host; IPv6 without brackets.
    pub host: &'a str,
    /// sent-by port.
    pub port: Option<u16>,
    /// Parameters in order.
    pub params: ParamsRef<'a>,
}

impl<'a> ViaRef<'a> {
    /// Parse one Via value (the grammar of [`Via::parse`]).
    pub fn parse(input: &'a str) -> Result<Self, HeaderError> {
        let s = input.trim_blanks();
        // sent-protocol = name LWS? "/" LWS? version LWS? "/" LWS? transport
        let mut parts = s.splitn(3, '/');
        let name = parts.next().unwrap_or_default().trim_blanks();
        let version = parts.next().unwrap_or_default().trim_blanks();
        let Some(rest) = parts.next() else {
            return Err(via_err("expected SIP/2.0/<transport>", input));
        };
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" {
            return Err(via_err(
                format!("unsupported protocol {name:?}/{version:?}"),
                input,
            ));
        }
        let rest = rest.trim_start_blanks();
        let transport_end = rest.find([' ', '\t']).unwrap_or(rest.len());
        let transport = rest.get(..transport_end).unwrap_or_default();
        if !is_token(transport) {
            return Err(via_err(format!("invalid transport {transport:?}"), input));
        }
        let sent_by = rest
            .get(transport_end..)
            .unwrap_or_default()
            .trim_start_blanks();
        if sent_by.is_empty() {
            return Err(via_err("missing sent-by host", input));
        }
        let (host, port, rest) = parse_host_port(sent_by).map_err(|r| via_err(r, input))?;
        let rest = rest.trim_start_blanks();
        if !rest.is_empty() && !rest.starts_with(';') {
            return Err(via_err(format!("unexpected {rest:?} after sent-by"), input));
        }
        let params = ParamsRef::parse(rest).map_err(|r| via_err(r, input))?;
        Ok(Self {
            transport,
            host,
            port,
            params,
        })
    }

    /// The owned Via.
    pub fn to_via(self) -> Via {
        Via {
            transport: self.transport.to_ascii_uppercase(),
            host: self.host.to_owned(),
            port: self.port,
            params: self.params.to_params(),
        }
    }
}

impl Via {
    /// Parse one Via value (not a comma-separated list; see [`vias`]).
    pub fn parse(input: &str) -> Result<Self, HeaderError> {
        ViaRef::parse(input).map(ViaRef::to_via)
    }

    /// A Via for a request we send: `SIP/2.0/<transport> host:port;branch=..;rport`.
    /// `rport` (RFC 3581) asks the peer to answer to our source port, which is
    /// what makes replies reach us through NAT.
    pub fn new(transport: &str, host: &str, port: u16, branch: &str) -> Self {
        Self {
            transport: transport.to_ascii_uppercase(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: Some(port),
            params: vec![
                ("branch".to_owned(), Some(branch.to_owned())),
                ("rport".to_owned(), None),
            ],
        }
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&str> {
        find_param(&self.params, "branch").flatten()
    }

    /// `rport`: `None` if absent, `Some(None)` if present without a (valid)
    /// value, `Some(Some(port))` once filled in by the receiver.
    pub fn rport(&self) -> Option<Option<u16>> {
        find_param(&self.params, "rport").map(|v| v.and_then(|p| p.parse().ok()))
    }

    /// The `received` parameter (source IP seen by the receiver).
    pub fn received(&self) -> Option<&str> {
        find_param(&self.params, "received").flatten()
    }

    /// A parameter: `None` if absent, `Some(None)` if present without value.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }

    /// Set (replace or append) a parameter, e.g. `received` and `rport` on
    /// an incoming request.
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        set_param(&mut self.params, name, value);
    }

    /// Where to send responses for a request carrying this Via (RFC 3261
    /// §18.2.2 with RFC 3581): `received` (else the sent-by host) and
    /// `rport` (else the sent-by port, else 5060). `None` if that host is
    /// not an IP literal.
    pub fn response_addr(&self) -> Option<SocketAddr> {
        let ip: IpAddr = match self.received() {
            Some(r) => r
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .ok()?,
            None => self.host.parse().ok()?,
        };
        let port = self.rport().flatten().or(self.port).unwrap_or(5060);
        Some(SocketAddr::new(ip, port))
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_via(
            f,
            &self.transport,
            &self.host,
            self.port,
            param_pairs(&self.params),
        )
    }
}

/// A Via's text, `SIP/2.0/<transport> host[:port];params`: for an owned
/// Via and for one rewritten from its pieces ([`stamp_source`]).
fn write_via<'p>(
    f: &mut impl fmt::Write,
    transport: &str,
    host: &str,
    port: Option<u16>,
    params: impl IntoIterator<Item = (&'p str, Option<&'p str>)>,
) -> fmt::Result {
    write!(f, "SIP/2.0/{transport} ")?;
    write_host(f, host)?;
    if let Some(port) = port {
        write!(f, ":{port}")?;
    }
    write_params(f, params)
}

impl std::str::FromStr for Via {
    type Err = HeaderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// All Via values of a message, in order, splitting comma-separated values
/// within one header line. Fails on the first unparsable value.
pub fn vias(headers: &Headers) -> Result<Vec<Via>, HeaderError> {
    let mut out = Vec::new();
    for line in headers.get_all("Via") {
        for value in split_comma_values(line) {
            out.push(Via::parse(value)?);
        }
    }
    Ok(out)
}

fn name_addr_err(reason: impl Into<String>, input: &str) -> HeaderError {
    HeaderError::NameAddr {
        reason: reason.into(),
        input: excerpt(input),
    }
}

/// Where a quoted string that starts after its opening quote ends:
/// (its escaped content, the text after the closing quote).
fn quoted_span(s: &str) -> Option<(&str, &str)> {
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return Some((s.get(..i)?, s.get(i + 1..)?)),
            _ => {}
        }
    }
    None
}

/// The content of a quoted string with its backslash escapes undone.
fn unescape_quoted(escaped: &str) -> String {
    let mut out = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            _ => out.push(c),
        }
    }
    out
}

/// `From`, `To`, `Contact`, `Reply-To` values: `["Name"] <uri>;params` or
/// the bare `uri;params` form (where everything after the first `;` is a
/// header parameter, RFC 3261 §20.10).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NameAddr {
    /// Display name, unquoted and unescaped.
    pub display: Option<String>,
    /// The address.
    pub uri: SipUri,
    /// Header parameters (`tag`, `expires`, ...).
    pub params: Params,
}

/// How a display name was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisplayRef<'a> {
    /// `"..."`: the content between the quotes, escapes not yet undone.
    Quoted(&'a str),
    /// A bare token run before `<`, trimmed.
    Plain(&'a str),
}

impl DisplayRef<'_> {
    /// The display name as text.
    pub fn to_text(self) -> String {
        match self {
            DisplayRef::Quoted(escaped) => unescape_quoted(escaped),
            DisplayRef::Plain(text) => text.to_owned(),
        }
    }
}

/// A name-addr read in place (see [`NameAddr`]): a REGISTER's From, To and
/// Contact are each read several times, and this reads them without
/// allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameAddrRef<'a> {
    /// Display name as written.
    pub display: Option<DisplayRef<'a>>,
    /// The address.
    pub uri: SipUriRef<'a>,
    /// Header parameters.
    pub params: ParamsRef<'a>,
}

impl<'a> NameAddrRef<'a> {
    /// Parse a name-addr or addr-spec with parameters (the grammar of
    /// [`NameAddr::parse`]).
    pub fn parse(input: &'a str) -> Result<Self, HeaderError> {
        let s = input.trim_blanks();
        // Header values never hold line breaks (the message parser replaces
        // them), and `Display` could not reproduce one.
        if memchr::memchr2(b'\r', b'\n', s.as_bytes()).is_some() {
            return Err(name_addr_err("line break in value", input));
        }
        let (display, uri_text, rest) = if let Some(after) = s.strip_prefix('"') {
            let (display, after) = quoted_span(after)
                .ok_or_else(|| name_addr_err("unterminated quoted display name", input))?;
            let after = after.trim_start_blanks();
            let Some(inner) = after.strip_prefix('<') else {
                return Err(name_addr_err("expected '<' after display name", input));
            };
            let (uri, rest) =
                split_at_byte(inner, b'>').ok_or_else(|| name_addr_err("missing '>'", input))?;
            (Some(DisplayRef::Quoted(display)), uri, rest)
        } else if let Some((before, inner)) = split_at_byte(s, b'<') {
            let (uri, rest) =
                split_at_byte(inner, b'>').ok_or_else(|| name_addr_err("missing '>'", input))?;
            let before = before.trim_blanks();
            let display = (!before.is_empty()).then_some(DisplayRef::Plain(before));
            (display, uri, rest)
        } else {
            match split_at_byte(s, b';') {
                Some((uri, _)) => (None, uri, s.get(uri.len()..).unwrap_or_default()),
                None => (None, s, ""),
            }
        };
        let uri = SipUriRef::parse(uri_text)?;
        let rest = rest.trim_start_blanks();
        if !rest.is_empty() && !rest.starts_with(';') {
            return Err(name_addr_err(
                format!("unexpected {rest:?} after address"),
                input,
            ));
        }
        let params = ParamsRef::parse(rest).map_err(|r| name_addr_err(r, input))?;
        Ok(Self {
            display,
            uri,
            params,
        })
    }

    /// The owned name-addr.
    pub fn to_name_addr(self) -> NameAddr {
        NameAddr {
            display: self.display.map(DisplayRef::to_text),
            uri: self.uri.to_uri(),
            params: self.params.to_params(),
        }
    }
}

impl NameAddr {
    /// Parse a name-addr or addr-spec with parameters. `Contact: *` is not a
    /// name-addr and is rejected.
    pub fn parse(input: &str) -> Result<Self, HeaderError> {
        NameAddrRef::parse(input).map(NameAddrRef::to_name_addr)
    }

    /// `<uri>` with no display name and no parameters.
    pub fn new(uri: SipUri) -> Self {
        Self {
            display: None,
            uri,
            params: Vec::new(),
        }
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        find_param(&self.params, "tag").flatten()
    }

    /// Set or replace the `tag` parameter.
    pub fn set_tag(&mut self, tag: &str) {
        set_param(&mut self.params, "tag", Some(tag.to_owned()));
    }

    /// A header parameter: `None` if absent, `Some(None)` if valueless.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }

    /// Set (replace or append) a header parameter.
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        set_param(&mut self.params, name, value);
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(display) = &self.display {
            f.write_str("\"")?;
            for c in display.chars() {
                match c {
                    '"' | '\\' => write!(f, "\\{c}")?,
                    // A line break would end the header; it cannot be escaped.
                    '\r' | '\n' => f.write_str(" ")?,
                    _ => write!(f, "{c}")?,
                }
            }
            f.write_str("\" ")?;
        }
        write!(f, "<{}>", self.uri)?;
        write_params(f, param_pairs(&self.params))
    }
}

impl std::str::FromStr for NameAddr {
    type Err = HeaderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// All Contact values of a message, in order (comma-separated values split).
/// `Contact: *` yields an error; check for it first when handling REGISTER.
pub fn contacts(headers: &Headers) -> Result<Vec<NameAddr>, HeaderError> {
    let mut out = Vec::new();
    for line in headers.get_all("Contact") {
        for value in split_comma_values(line) {
            out.push(NameAddr::parse(value)?);
        }
    }
    Ok(out)
}

/// `CSeq: <seq> <method>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CSeq {
    /// Sequence number.
    pub seq: u32,
    /// Method of the request (echoed in its responses).
    pub method: Method,
}

impl CSeq {
    /// Parse `1 REGISTER`.
    pub fn parse(input: &str) -> Result<Self, HeaderError> {
        let err = |reason: &str| HeaderError::CSeq {
            reason: reason.to_owned(),
            input: excerpt(input),
        };
        let mut words = input.split_ascii_whitespace();
        let seq = words.next().ok_or_else(|| err("empty"))?;
        if !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("sequence number is not decimal"));
        }
        let seq: u32 = seq
            .parse()
            .map_err(|_| err("sequence number does not fit in 32 bits"))?;
        let method = words.next().ok_or_else(|| err("missing method"))?;
        if !is_token(method) {
            return Err(err("method is not a token"));
        }
        if words.next().is_some() {
            return Err(err("trailing text after method"));
        }
        Ok(Self {
            seq,
            method: Method::parse(method),
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

impl std::str::FromStr for CSeq {
    type Err = HeaderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Longest `text` a [`Reason`] we write carries: the header rides in every
/// hop's BYE and ends up in logs, so a long cause is cut rather than sent.
pub const MAX_REASON_TEXT: usize = 200;

/// One value of an RFC 3326 `Reason` header: why a BYE or CANCEL was sent,
/// e.g. `SIP;cause=502;text="the source's PS could not be read: ..."`.
///
/// Parsing is lenient where it costs nothing (a non-numeric `cause` is
/// dropped, an unquoted `text` token is taken as it is); only a value whose
/// protocol is not a token or whose parameters do not split is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reason {
    /// `SIP`, `Q.850` or an extension token.
    pub protocol: String,
    /// `cause`: a SIP status code when `protocol` is `SIP`.
    pub cause: Option<u16>,
    /// `text`, unquoted and unescaped.
    pub text: Option<String>,
}

impl Reason {
    /// `SIP;cause=<cause>;text="<text>"`, the text made safe to send: every
    /// character outside printable ASCII becomes `?` and it is cut to
    /// [`MAX_REASON_TEXT`] characters, since peers (and old cameras) are
    /// not to be trusted with UTF-8 or long lines in a header.
    pub fn sip(cause: u16, text: &str) -> Self {
        let text = text
            .chars()
            .take(MAX_REASON_TEXT)
            .map(|c| {
                if c == ' ' || c.is_ascii_graphic() {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        Reason {
            protocol: "SIP".into(),
            cause: Some(cause),
            text: Some(text),
        }
    }

    /// Parse one value (no top-level commas; see [`reasons`]).
    pub fn parse(input: &str) -> Result<Self, HeaderError> {
        let err = |reason: String| HeaderError::Reason {
            reason,
            input: excerpt(input),
        };
        let s = input.trim_blanks();
        let (protocol, params) = match s.find(';') {
            Some(i) => (
                s.get(..i).unwrap_or_default(),
                s.get(i..).unwrap_or_default(),
            ),
            None => (s, ""),
        };
        let protocol = protocol.trim_blanks();
        if !is_token(protocol) {
            return Err(err(format!("protocol {protocol:?} is not a token")));
        }
        let params = parse_params(params).map_err(err)?;
        let cause = find_param(&params, "cause")
            .flatten()
            .and_then(|v| v.parse::<u16>().ok());
        let text = match find_param(&params, "text").flatten() {
            Some(v) => match v.strip_prefix('"') {
                // parse_params has checked it is one whole quoted string.
                Some(inner) => Some(
                    quoted_span(inner)
                        .map(|(t, _)| unescape_quoted(t))
                        .ok_or_else(|| err("unterminated text".into()))?,
                ),
                None => Some(v.to_owned()),
            },
            None => None,
        };
        Ok(Reason {
            protocol: protocol.to_owned(),
            cause,
            text,
        })
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.protocol)?;
        if let Some(c) = self.cause {
            write!(f, ";cause={c}")?;
        }
        if let Some(t) = &self.text {
            f.write_str(";text=\"")?;
            for c in t.chars() {
                // CR and LF cannot be escaped in a quoted-string (RFC 3261
                // §25.1): as spaces they keep the header one line.
                match c {
                    '"' | '\\' => write!(f, "\\{c}")?,
                    '\r' | '\n' => f.write_str(" ")?,
                    _ => write!(f, "{c}")?,
                }
            }
            f.write_str("\"")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reason {
    type Err = HeaderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reason::parse(s)
    }
}

/// All Reason values of a message, in order, splitting comma-separated
/// values within one header line. Fails on the first unparsable value.
pub fn reasons(headers: &Headers) -> Result<Vec<Reason>, HeaderError> {
    let mut out = Vec::new();
    for line in headers.get_all("Reason") {
        for value in split_comma_values(line) {
            out.push(Reason::parse(value)?);
        }
    }
    Ok(out)
}

/// The RFC 3261 magic cookie every branch must start with.
pub const BRANCH_MAGIC: &str = "z9hG4bK";

/// A fresh Via branch: the RFC 3261 magic cookie plus 64 random bits in hex.
pub fn new_branch() -> String {
    format!("{BRANCH_MAGIC}{:016x}", rand::random::<u64>())
}

/// A fresh From/To tag: 64 random bits in hex (RFC 3261 asks for at least 32).
pub fn new_tag() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A fresh Call-ID, `<128 random bits in hex>@host`. Characters that are
/// not allowed in a Call-ID word are dropped from `host`; an empty host
/// gives just the random part.
pub fn new_call_id(host: &str) -> String {
    let random = format!("{:032x}", rand::random::<u128>());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '@')
        .collect();
    if host.is_empty() {
        random
    } else {
        format!("{random}@{host}")
    }
}

/// Parse a delta-seconds value, clamping values above `u32::MAX` as RFC 3261
/// §20.19 asks.
fn delta_seconds(s: &str) -> Option<u32> {
    let s = s.trim().trim_matches('"');
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match s.parse::<u64>() {
        Ok(v) => Some(u32::try_from(v).unwrap_or(u32::MAX)),
        // Only overflow is possible here: more than 20 digits.
        Err(_) => Some(u32::MAX),
    }
}

/// The registration/subscription lifetime: the first Contact's `expires`
/// parameter if present and valid (it takes precedence, RFC 3261 §10.3
/// step 6), else the Expires header. `None` if neither is usable.
pub fn expires(headers: &Headers) -> Option<u32> {
    let from_contact = headers
        .get("Contact")
        .and_then(first_comma_value)
        .and_then(|first| NameAddrRef::parse(first).ok())
        .and_then(|addr| addr.params.get("expires").flatten().and_then(delta_seconds));
    from_contact.or_else(|| headers.get("Expires").and_then(delta_seconds))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::expect_used,
    clippy::panic
)]
mod tests {
    use super::*;

    #[test]
    fn gb_uri() {
        let u = SipUri::parse("sip:34020000001320000001@192.168.1.64:5060").unwrap();
        assert_eq!(u.user.as_deref(), Some("34020000001320000001"));
        assert_eq!(u.host, "192.168.1.64");
        assert_eq!(u.port, Some(5060));
        assert_eq!(u.socket_addr(), Some("192.168.1.64:5060".parse().unwrap()));
        let d = SipUri::parse("sip:34020000002000000001@3402000000").unwrap();
        assert_eq!(d.host, "3402000000");
        assert_eq!(d.host_port(), "3402000000");
        // A numeric domain ID is not an IP literal.
        assert_eq!(d.socket_addr(), None);
    }

    #[test]
    fn ipv6_uri() {
        let u = SipUri::parse("sip:a@[2001:db8::1]:5070;transport=tcp;lr").unwrap();
        assert_eq!(u.host, "2001:db8::1");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.param("transport"), Some(Some("tcp")));
        assert_eq!(u.param("lr"), Some(None));
        assert_eq!(u.host_port(), "[2001:db8::1]:5070");
        assert_eq!(u.socket_addr(), Some("[2001:db8::1]:5070".parse().unwrap()));
        assert_eq!(u.to_string(), "sip:a@[2001:db8::1]:5070;transport=tcp;lr");
        let bare = SipUri::parse("SIPS:[::1]").unwrap();
        assert_eq!(bare.scheme, "sips");
        assert_eq!(bare.socket_addr(), Some("[::1]:5061".parse().unwrap()));
        assert!(SipUri::parse("sip:a@[2001:db8::zz]").is_err());
        assert!(SipUri::parse("sip:a@[::1").is_err());
    }

    #[test]
    fn uri_errors_and_headers() {
        assert!(SipUri::parse("http://x").is_err());
        assert!(SipUri::parse("sip:@host").is_err());
        assert!(SipUri::parse("sip:a@host:99999").is_err());
        assert!(SipUri::parse("sip:a@host:").is_err());
        assert!(SipUri::parse("sip:a b@host").is_err());
        assert!(SipUri::parse("sip:").is_err());
        let u = SipUri::parse("sip:a@h;x=1?subject=hi").unwrap();
        assert_eq!(u.to_string(), "sip:a@h;x=1");
        let err = SipUri::parse("tel:+123").unwrap_err().to_string();
        assert!(err.contains("unsupported scheme"), "{err}");
    }

    #[test]
    fn via_with_rport_and_received() {
        let v = Via::parse("SIP/2.0/UDP 192.168.1.64:5060;rport=40123;branch=z9hG4bK1371463273;received=203.0.113.7").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.rport(), Some(Some(40123)));
        assert_eq!(v.received(), Some("203.0.113.7"));
        assert_eq!(v.branch(), Some("z9hG4bK1371463273"));
        assert_eq!(
            v.response_addr(),
            Some("203.0.113.7:40123".parse().unwrap())
        );
        assert_eq!(Via::parse(&v.to_string()).unwrap(), v);

        let mut v =
            Via::parse("SIP / 2.0 / tcp  [2001:db8::9]:5061 ; branch = z9hG4bKx ; rport").unwrap();
        assert_eq!(v.transport, "TCP");
        assert_eq!(v.host, "2001:db8::9");
        assert_eq!(v.rport(), Some(None));
        v.set_param("received", Some("2001:db8::10".into()));
        v.set_param("rport", Some("6000".into()));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/TCP [2001:db8::9]:5061;branch=z9hG4bKx;rport=6000;received=2001:db8::10"
        );
        assert_eq!(
            v.response_addr(),
            Some("[2001:db8::10]:6000".parse().unwrap())
        );
        assert!(Via::parse("SIP/2.0/UDP").is_err());
        assert!(Via::parse("SIP/3.0/UDP h").is_err());
        assert!(Via::parse("SIP/2.0/UDP h garbage").is_err());
    }

    #[test]
    fn via_new() {
        let v = Via::new("udp", "10.0.0.1", 5060, "z9hG4bKabc");
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc;rport"
        );
        let v6 = Via::new("TCP", "[::1]", 5060, "z9hG4bKabc");
        assert_eq!(v6.host, "::1");
        assert_eq!(
            v6.to_string(),
            "SIP/2.0/TCP [::1]:5060;branch=z9hG4bKabc;rport"
        );
    }

    #[test]
    fn multiple_vias_comma_separated() {
        let mut h = Headers::new();
        h.push("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1, SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bK2;received=1.2.3.4");
        h.push("v", "SIP/2.0/TCP host.example;branch=z9hG4bK3");
        let all = vias(&h).unwrap();
        let branches: Vec<_> = all.iter().map(|v| v.branch().unwrap()).collect();
        assert_eq!(branches, ["z9hG4bK1", "z9hG4bK2", "z9hG4bK3"]);
        assert_eq!(h.top_via().unwrap().host, "10.0.0.1");
        h.push("Via", "bogus");
        assert!(vias(&h).is_err());
    }

    #[test]
    fn name_addr_forms() {
        let a = NameAddr::parse("<sip:34020000001320000001@3402000000>;tag=2043466181").unwrap();
        assert_eq!(a.tag(), Some("2043466181"));
        assert_eq!(a.display, None);
        let b = NameAddr::parse("sip:34020000001320000001@3402000000;tag=9").unwrap();
        assert_eq!(b.uri.params, Vec::new());
        assert_eq!(b.tag(), Some("9"));
        let mut c = NameAddr::parse("\"Cam \\\"1\\\", gate\" <sip:x@[::1]:5060;transport=udp>;expires=60;+sip.instance=\"<urn:uuid:1;2>\"").unwrap();
        assert_eq!(c.display.as_deref(), Some("Cam \"1\", gate"));
        assert_eq!(c.uri.param("transport"), Some(Some("udp")));
        assert_eq!(c.param("expires"), Some(Some("60")));
        assert_eq!(c.param("+sip.instance"), Some(Some("\"<urn:uuid:1;2>\"")));
        assert_eq!(c.tag(), None);
        c.set_tag("t1");
        c.set_tag("t2");
        assert_eq!(c.tag(), Some("t2"));
        assert_eq!(NameAddr::parse(&c.to_string()).unwrap(), c);
        let d = NameAddr::parse("Alice Smith <sip:alice@example.com>").unwrap();
        assert_eq!(d.display.as_deref(), Some("Alice Smith"));
        assert!(NameAddr::parse("*").is_err());
        assert!(NameAddr::parse("<sip:a@b").is_err());
        assert!(NameAddr::parse("\"open <sip:a@b>").is_err());
    }

    #[test]
    fn contacts_split() {
        let mut h = Headers::new();
        h.push("m", "\"a,b\" <sip:1@h1>;expires=10, <sip:2@h2>");
        let list = contacts(&h).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].display.as_deref(), Some("a,b"));
    }

    #[test]
    fn cseq_parse() {
        let c = CSeq::parse("  20 MESSAGE ").unwrap();
        assert_eq!((c.seq, c.method.clone()), (20, Method::Message));
        assert_eq!(c.to_string(), "20 MESSAGE");
        assert!(CSeq::parse("x MESSAGE").is_err());
        assert!(CSeq::parse("1").is_err());
        assert!(CSeq::parse("-1 BYE").is_err());
        assert!(CSeq::parse("4294967296 BYE").is_err());
        assert!(CSeq::parse("1 BYE extra").is_err());
    }

    #[test]
    fn generators() {
        let b = new_branch();
        assert!(b.starts_with("z9hG4bK") && b.len() == 23);
        assert_ne!(new_branch(), b);
        assert_eq!(new_tag().len(), 16);
        let c = new_call_id("10.0.0.1");
        assert!(c.ends_with("@10.0.0.1"));
        assert_eq!(new_call_id(" \r\n").len(), 32);
    }

    #[test]
    fn expires_precedence() {
        let mut h = Headers::new();
        assert_eq!(expires(&h), None);
        h.push("Expires", "3600");
        assert_eq!(expires(&h), Some(3600));
        h.push("Contact", "<sip:1@h>;expires=0");
        assert_eq!(expires(&h), Some(0));
        h.set("Contact", "*");
        assert_eq!(expires(&h), Some(3600));
        h.set("Expires", "99999999999999999999999");
        assert_eq!(expires(&h), Some(u32::MAX));
        h.set("Expires", "soon");
        assert_eq!(expires(&h), None);
    }

    #[test]
    fn split_values() {
        assert_eq!(
            split_comma_values(" a , \"b,c\" ,<d,e>;x, ,"),
            ["a", "\"b,c\"", "<d,e>;x"]
        );
        assert_eq!(
            split_comma_values("\"unterminated, x"),
            ["\"unterminated, x"]
        );
    }

    #[test]
    fn reason_values() {
        let r = Reason::parse(r#"SIP ; cause=502 ;text="PS: \"bad\" \\ flags""#).unwrap();
        assert_eq!(r.protocol, "SIP");
        assert_eq!(r.cause, Some(502));
        assert_eq!(r.text.as_deref(), Some(r#"PS: "bad" \ flags"#));
        // Q.850, an extension param, a missing text, an unquoted text.
        let r = Reason::parse("Q.850;cause=16;x-vendor=1").unwrap();
        assert_eq!((r.cause, r.text), (Some(16), None));
        assert_eq!(
            Reason::parse("SIP;text=Busy").unwrap().text.as_deref(),
            Some("Busy")
        );
        // A cause that is no number is dropped, not an error.
        assert_eq!(Reason::parse("SIP;cause=x5").unwrap().cause, None);
        assert!(Reason::parse("").is_err());
        assert!(Reason::parse("S I P;cause=1").is_err());
        assert!(Reason::parse("SIP;text=\"open").is_err());
        // Several values, comma-separated and on several lines; commas in
        // the text stay in it.
        let mut h = Headers::new();
        h.push("Reason", r#"SIP;cause=502;text="a, b", Q.850;cause=31"#);
        h.push("Reason", "X-Gb;text=c");
        let all = reasons(&h).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].text.as_deref(), Some("a, b"));
        assert_eq!(all[1].protocol, "Q.850");
        assert_eq!(all[2].text.as_deref(), Some("c"));
    }

    #[test]
    fn reason_we_write_is_short_ascii_and_escaped() {
        let r = Reason::sip(502, "the \"PS\" could not be read: 缺少\r\n");
        assert_eq!(
            r.to_string(),
            r#"SIP;cause=502;text="the \"PS\" could not be read: ????""#
        );
        assert_eq!(Reason::parse(&r.to_string()).unwrap(), r);
        let long = Reason::sip(502, &"x".repeat(1000));
        assert_eq!(long.text.map(|t| t.len()), Some(MAX_REASON_TEXT));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn token() -> impl Strategy<Value = String> {
            "[A-Za-z0-9][A-Za-z0-9.!%*_+`'~-]{0,10}"
        }

        fn host() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z0-9][a-z0-9.-]{0,20}",
                any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
                any::<std::net::Ipv6Addr>().prop_map(|ip| ip.to_string()),
            ]
        }

        fn params() -> impl Strategy<Value = Params> {
            proptest::collection::vec((token(), proptest::option::of(token())), 0..4)
        }

        prop_compose! {
            fn arb_uri()(
                sips in any::<bool>(),
                user in proptest::option::of("[0-9]{20}|[a-z0-9_.!~*'()&=+$-]{1,12}"),
                host in host(),
                port in proptest::option::of(any::<u16>()),
                params in params(),
            ) -> SipUri {
                SipUri { scheme: if sips { "sips" } else { "sip" }.into(), user, host, port, params }
            }
        }

        proptest! {
            #[test]
            fn uri_round_trips(u in arb_uri()) {
                prop_assert_eq!(SipUri::parse(&u.to_string()).unwrap(), u);
            }

            #[test]
            fn via_round_trips(transport in "[A-Z]{2,5}", host in host(), port in proptest::option::of(any::<u16>()), params in params()) {
                let v = Via { transport, host, port, params };
                prop_assert_eq!(Via::parse(&v.to_string()).unwrap(), v);
            }

            #[test]
            fn name_addr_round_trips(display in proptest::option::of("[^\r\n]{0,20}"), uri in arb_uri(), params in params()) {
                let a = NameAddr { display, uri, params };
                prop_assert_eq!(NameAddr::parse(&a.to_string()).unwrap(), a);
            }

            #[test]
            fn cseq_round_trips(seq in any::<u32>(), method in token()) {
                let c = CSeq { seq, method: Method::parse(&method) };
                prop_assert_eq!(CSeq::parse(&c.to_string()).unwrap(), c);
            }

            #[test]
            fn reasons_never_panic(s in prop_oneof!["\\PC{0,80}", "[SIPQ.850 ;=,\"\\\\a-z]{0,60}"]) {
                let _ = Reason::parse(&s);
                let mut h = Headers::new();
                h.push("Reason", s.clone());
                let _ = reasons(&h);
            }

            #[test]
            fn reason_round_trips(cause in proptest::option::of(any::<u16>()), text in proptest::option::of("[ -~]{0,40}")) {
                let r = Reason { protocol: "SIP".into(), cause, text };
                prop_assert_eq!(Reason::parse(&r.to_string()), Ok(r));
            }

            /// The byte fast path answers as the char definition does.
            #[test]
            fn blank_check_matches_the_char_definition(s in "(\\PC|[\\x00-\\x7f]){0,40}") {
                let extra = |b: u8| matches!(b, b'<' | b'>' | b'"');
                let by_chars = s.chars().any(|c| {
                    c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"')
                });
                prop_assert_eq!(has_blank_control_or(&s, extra), by_chars);
            }

            /// The top Via after stamping is the owned Via with rport and
            /// received set, and every other Via stays as it was.
            #[test]
            fn stamping_sets_the_source_on_the_top_via(params in params(), rest in proptest::option::of("SIP/2\\.0/UDP 10\\.0\\.0\\.[0-9];branch=z9hG4bK[a-z]{1,4}"), v6 in any::<bool>()) {
                let source: SocketAddr = if v6 { "[2001:db8::7]:4000".parse().unwrap() } else { "203.0.113.7:40000".parse().unwrap() };
                let mut top = Via::new("udp", "192.168.1.64", 5060, "z9hG4bK1");
                top.params.extend(params);
                let mut line = top.to_string();
                if let Some(r) = &rest {
                    line.push_str(", ");
                    line.push_str(r);
                }
                let mut h = Headers::new();
                h.push("Via", line);
                stamp_source(&mut h, source);
                let all = vias(&h).unwrap();
                let mut want = top.clone();
                want.set_param("rport", Some(source.port().to_string()));
                want.set_param("received", Some(source.ip().to_string()));
                prop_assert_eq!(&all[0], &want);
                prop_assert_eq!(all.len(), 1 + usize::from(rest.is_some()));
                if let Some(r) = &rest {
                    prop_assert_eq!(&all[1], &Via::parse(r).unwrap());
                }
            }

            #[test]
            fn parsers_never_panic(s in "\\PC{0,80}") {
                let _ = SipUri::parse(&s);
                let _ = Via::parse(&s);
                let _ = NameAddr::parse(&s);
                let _ = CSeq::parse(&s);
                let _ = split_comma_values(&s);
            }

            /// Whatever is accepted re-serialises to text that parses to the
            /// same value.
            #[test]
            fn accepted_inputs_round_trip(s in "[sip:@\\[\\]<>\";=,/ 0-9a-fA-F.\\\\?SIPUDPtag]{0,50}") {
                if let Ok(u) = SipUri::parse(&s) {
                    prop_assert_eq!(SipUri::parse(&u.to_string()), Ok(u));
                }
                if let Ok(v) = Via::parse(&s) {
                    prop_assert_eq!(Via::parse(&v.to_string()), Ok(v));
                }
                if let Ok(a) = NameAddr::parse(&s) {
                    prop_assert_eq!(NameAddr::parse(&a.to_string()), Ok(a));
                }
            }

            #[test]
            fn structured_inputs_round_trip(
                display in "(\"[^\"\\\\]{0,8}\" |[a-z ]{0,8})?",
                user in "([0-9a-z;?&=+$,/]{1,8}@)?",
                host in "[a-z0-9.]{1,8}|\\[[0-9a-f:]{2,12}\\]",
                port in "(:[0-9]{1,6})?",
                uri_params in "(;[a-z]{1,4}(=[a-z0-9@]{0,4})?){0,3}",
                header_params in "( ?; ?[a-z]{1,4}( ?= ?([a-z0-9]{0,4}|\"[^\"]{0,6}\"))?){0,3}",
            ) {
                let text = format!("{display}<sip:{user}{host}{port}{uri_params}>{header_params}");
                if let Ok(a) = NameAddr::parse(&text) {
                    prop_assert_eq!(NameAddr::parse(&a.to_string()), Ok(a));
                }
                let via = format!("SIP/2.0/UDP {host}{port}{header_params}");
                if let Ok(v) = Via::parse(&via) {
                    prop_assert_eq!(Via::parse(&v.to_string()), Ok(v));
                }
            }

            #[test]
            fn parsers_never_panic_on_sip_alphabet(s in "[sip:@\\[\\]<>\";=,/ 0-9a-fA-F.\\\\SIPUDP]{0,60}") {
                let _ = SipUri::parse(&s);
                let _ = Via::parse(&s);
                let _ = NameAddr::parse(&s);
                let mut h = Headers::new();
                h.push("Contact", s.clone());
                h.push("Via", s.clone());
                let _ = expires(&h);
                let _ = vias(&h);
                let _ = contacts(&h);
            }
        }
    }
}

/// RFC 3261 §18.2.1 and RFC 3581 §4: record where a request really came
/// from in its top Via (`received`, and `rport` when the sender asked for
/// it), so every response carries the address it is sent to.
pub fn stamp_source(headers: &mut Headers, source: std::net::SocketAddr) {
    let Some(line) = headers.get("Via") else {
        return;
    };
    let mut values = comma_values(line);
    let Some(top) = values.next() else {
        return;
    };
    let Ok(via) = ViaRef::parse(top) else {
        return;
    };
    // Written from the parsed pieces (every request passes here, and
    // parsing into an owned Via to print it again was a tenth of a
    // REGISTER's cost). The first rport and received take the source; the
    // rest stay.
    let (port, ip) = (source.port().to_string(), source.ip().to_string());
    let has_received = via.params.get("received").is_some();
    let (mut rport, mut received) = (false, false);
    let params = via
        .params
        .iter()
        .map(|(name, v)| {
            if !rport && name.eq_ignore_ascii_case("rport") {
                rport = true;
                (name, Some(port.as_str()))
            } else if !received && name.eq_ignore_ascii_case("received") {
                received = true;
                (name, Some(ip.as_str()))
            } else {
                (name, v)
            }
        })
        .chain((!has_received).then_some(("received", Some(ip.as_str()))));
    let mut value = String::with_capacity(line.len() + 48);
    let transport = via.transport.to_ascii_uppercase();
    // Writing into a String cannot fail.
    let _ = write_via(&mut value, &transport, via.host, via.port, params);
    for v in values {
        value.push_str(", ");
        value.push_str(v);
    }
    // Only the first Via line changes, where it stands.
    headers.replace_first("Via", value);
}

#[cfg(test)]
mod stamp_tests {
    use super::*;

    #[test]
    fn stamps_received_and_rport_on_the_top_via_only() {
        let mut h = Headers::new();
        h.push("Via", "SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK0");
        h.push("Via", "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKx");
        stamp_source(&mut h, "203.0.113.7:40000".parse().unwrap());
        let all = vias(&h).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].rport(), Some(Some(40000)));
        assert_eq!(all[0].received(), Some("203.0.113.7"));
        assert_eq!(all[0].branch(), Some("z9hG4bK1"));
        assert_eq!(all[1].received(), None);
        assert_eq!(all[2].branch(), Some("z9hG4bKx"));
    }

    #[test]
    fn no_rport_asked_means_received_only() {
        let mut h = Headers::new();
        h.push("Via", "SIP/2.0/UDP 192.168.1.64:5060;branch=z9hG4bK1");
        stamp_source(&mut h, "203.0.113.7:40000".parse().unwrap());
        let v = vias(&h).unwrap();
        assert_eq!(v[0].rport(), None);
        assert_eq!(v[0].received(), Some("203.0.113.7"));
    }
}
