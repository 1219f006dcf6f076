//! SIP messages: start line, ordered headers and a raw byte body.
//!
//! This is the sans-IO syntax layer. [`Message::parse`] turns one complete
//! message (a UDP datagram, or a frame cut by
//! [`StreamFramer`](crate::sip::framing::StreamFramer)) into a [`Message`], and
//! [`Message::to_bytes`] turns it back into wire bytes.
//!
//! The parser is hand-written rather than rsip's because GB/T 28181 devices
//! send things rsip rejects or damages (see `docs/crates.md` §1): compact
//! header names, folded lines, bare-LF line endings, GBK bytes in header
//! values, and GB2312 bodies that must never be re-encoded. The body is kept
//! as raw [`Bytes`]; header values are decoded lossily to `String` because the
//! only non-ASCII bytes that occur in practice are display names.
//!
//! Nothing here may panic on network input: indexing is forbidden by lint and
//! every length computation is checked.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::borrow::Cow;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::sip::header::{CSeq, NameAddrRef, SipUriRef, Via};

/// Default upper bound on the size of one SIP message in bytes.
///
/// Matches the largest UDP payload; GB/T 28181 catalog parts are far smaller.
pub const MAX_MESSAGE_SIZE: usize = 65_535;

/// A SIP request method (RFC 3261 §7.1 and the usual extensions).
///
/// Methods are case-sensitive, so `register` is `Other("register")`, not
/// [`Method::Register`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// `REGISTER`
    Register,
    /// `INVITE`
    Invite,
    /// `ACK`
    Ack,
    /// `BYE`
    Bye,
    /// `CANCEL`
    Cancel,
    /// `OPTIONS`
    Options,
    /// `MESSAGE` (RFC 3428): GB/T 28181 MANSCDP queries, keepalives, replies.
    Message,
    /// `INFO` (RFC 6086): GB/T 28181 playback control (MANSRTSP).
    Info,
    /// `SUBSCRIBE` (RFC 6665)
    Subscribe,
    /// `NOTIFY` (RFC 6665)
    Notify,
    /// `REFER` (RFC 3515)
    Refer,
    /// `UPDATE` (RFC 3311)
    Update,
    /// `PRACK` (RFC 3262)
    Prack,
    /// Any other method token, exactly as received.
    Other(String),
}

impl Method {
    /// The token of a standard method; `None` for [`Method::Other`].
    pub fn standard_name(&self) -> Option<&'static str> {
        Some(match self {
            Method::Register => "REGISTER",
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Message => "MESSAGE",
            Method::Info => "INFO",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Other(_) => return None,
        })
    }

    /// The method token as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Other(s) => s,
            m => m.standard_name().unwrap_or_default(),
        }
    }

    /// Map a method token to a [`Method`]; unknown tokens become
    /// [`Method::Other`]. This does not validate that `s` is a token; the
    /// message parser does that for request lines.
    pub fn parse(s: &str) -> Method {
        match s {
            "REGISTER" => Method::Register,
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "MESSAGE" => Method::Message,
            "INFO" => Method::Info,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            other => Method::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// True for bytes allowed in an RFC 3261 `token` (method names, header
/// names, parameter names, transport names).
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// True if `s` is a non-empty RFC 3261 token.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

/// Compact header names (RFC 3261 §7.3.3 and later RFCs) and their full form.
const COMPACT_FORMS: &[(u8, &str)] = &[
    (b'a', "Accept-Contact"),
    (b'b', "Referred-By"),
    (b'c', "Content-Type"),
    (b'd', "Request-Disposition"),
    (b'e', "Content-Encoding"),
    (b'f', "From"),
    (b'i', "Call-ID"),
    (b'j', "Reject-Contact"),
    (b'k', "Supported"),
    (b'l', "Content-Length"),
    (b'm', "Contact"),
    (b'n', "Identity-Info"),
    (b'o', "Event"),
    (b'r', "Refer-To"),
    (b's', "Subject"),
    (b't', "To"),
    (b'u', "Allow-Events"),
    (b'v', "Via"),
    (b'x', "Session-Expires"),
    (b'y', "Identity"),
];

/// Canonical spelling of well-known header names. Names are matched
/// case-insensitively; storing one spelling keeps serialised output tidy
/// (`Call-ID`, `CSeq`, `WWW-Authenticate`) whatever the peer sent.
const KNOWN_NAMES: &[&str] = &[
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "Identity",
    "Identity-Info",
    "In-Reply-To",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Min-SE",
    "Organization",
    "Path",
    "Priority",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Service-Route",
    "Session-Expires",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
];

/// Expand a one-letter compact name to its full form; other names are
/// returned unchanged. Lookups only need this (not full canonicalisation)
/// because stored names are already canonical and compared case-insensitively.
fn expand_compact(name: &str) -> &str {
    if let [b] = name.as_bytes() {
        let lower = b.to_ascii_lowercase();
        if let Some((_, full)) = COMPACT_FORMS.iter().find(|(c, _)| *c == lower) {
            return full;
        }
    }
    name
}

/// The stored form of a header name: compact forms expanded, well-known
/// names in their canonical spelling, unknown names kept as given minus any
/// byte that is not allowed in a token (so a name can never smuggle a `:` or
/// a line break into serialised output).
fn canonical_name(name: &str) -> Cow<'static, str> {
    let full = expand_compact(name.trim());
    // Known names are borrowed: most headers of every message are one, and
    // an allocation per header was a tenth of a REGISTER's cost.
    // The headers every GB/T 28181 message carries, exactly as written
    // (what senders write), before the search of the whole list.
    const EVERY_MESSAGE: [&str; 10] = [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Max-Forwards",
        "Content-Length",
        "User-Agent",
        "Expires",
    ];
    if let Some(known) = EVERY_MESSAGE.iter().find(|k| **k == full) {
        return Cow::Borrowed(known);
    }
    if let Some(known) = KNOWN_NAMES.iter().find(|k| k.eq_ignore_ascii_case(full)) {
        return Cow::Borrowed(known);
    }
    let cleaned: String = full
        .chars()
        .filter(|c| c.is_ascii() && is_token_byte(*c as u8))
        .collect();
    if cleaned.is_empty() {
        // Only reachable from program code passing a nonsense name; keep the
        // output well-formed rather than emitting ": value".
        Cow::Borrowed("X-Invalid-Header-Name")
    } else {
        Cow::Owned(cleaned)
    }
}

/// Replace CR, LF and NUL in a header value by spaces: a value can then never
/// inject a header line or end the header section early when serialised.
fn sanitize_value(value: String) -> String {
    if memchr::memchr3(b'\r', b'\n', 0, value.as_bytes()).is_some() {
        value.replace(['\r', '\n', '\0'], " ")
    } else {
        value
    }
}

/// Decode wire bytes of a header value: lossy UTF-8, CR/LF/NUL replaced by
/// spaces, then SP/HT trimmed (after the replacement, so a stray CR at the
/// end of a line does not leave a trailing blank that would change on the
/// next parse).
fn clean_wire_value(bytes: &[u8]) -> String {
    // Every header of every message comes through here (a tenth of a
    // REGISTER storm's CPU went to the lossy decode, the scan and the
    // trim, each a pass and an allocation): trim the bytes that would
    // become blanks, then one UTF-8 check and one SIMD scan, and one
    // allocation. Anything unusual takes the slow path.
    let blank = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0);
    let start = bytes.iter().position(|b| !blank(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !blank(b))
        .map_or(start, |i| i + 1);
    let inner = bytes.get(start..end).unwrap_or_default();
    match std::str::from_utf8(inner) {
        Ok(text) if memchr::memchr3(b'\r', b'\n', 0, inner).is_none() => text.to_owned(),
        _ => clean_wire_value_slowly(bytes),
    }
}

/// [`clean_wire_value`] the plain way: the oracle, and the path for values
/// with invalid UTF-8 or line breaks inside.
fn clean_wire_value_slowly(bytes: &[u8]) -> String {
    let value = sanitize_value(String::from_utf8_lossy(bytes).into_owned());
    let trimmed = value.trim_matches([' ', '\t']);
    if trimmed.len() == value.len() {
        value
    } else {
        trimmed.to_owned()
    }
}

/// The header section of a message: an ordered list of `(name, value)`.
///
/// Names are stored in canonical full form (`v` becomes `Via`, `call-id`
/// becomes `Call-ID`); lookups are case-insensitive and accept compact forms.
/// Order is preserved because it matters for Via, Route and Record-Route.
/// Values never contain CR, LF or NUL (they are replaced by spaces on insert).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(Cow<'static, str>, String)>,
}

impl Headers {
    /// An empty header list, with room for a typical message's headers
    /// (growing the list one header at a time was a tenth of a REGISTER's
    /// cost).
    pub fn new() -> Self {
        Headers {
            entries: Vec::with_capacity(12),
        }
    }

    /// A copy of the header lines from `at` on.
    pub fn tail_from(&self, at: usize) -> Headers {
        Headers {
            entries: self.entries.get(at..).unwrap_or_default().to_vec(),
        }
    }

    /// True when this list begins with `prefix`'s lines, names and values
    /// alike.
    pub fn starts_with(&self, prefix: &Headers) -> bool {
        self.entries.starts_with(&prefix.entries)
    }

    /// Append every line of `other`, in order.
    pub fn extend_from(&mut self, other: &Headers) {
        self.entries.extend(other.entries.iter().cloned());
    }

    /// The first value of header `name` (case-insensitive; compact forms are
    /// equivalent to full names).
    pub fn get(&self, name: &str) -> Option<&str> {
        let key = expand_compact(name);
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in message order. A header line holding
    /// a comma-separated list is one value here; see
    /// [`split_comma_values`](crate::sip::header::split_comma_values).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let key = expand_compact(name);
        self.entries
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// True if at least one header `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Append a header after all existing ones.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.entries
            .push((canonical_name(name), sanitize_value(value.into())));
    }

    /// Append a header whose name is canonical and whose value came from
    /// a header list (so holds no CR, LF or NUL): a response copies five
    /// headers of its request, and checking them again was measurable.
    fn push_clean(&mut self, name: &'static str, value: String) {
        debug_assert!(!value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)));
        self.entries.push((Cow::Borrowed(name), value));
    }

    /// Replace every occurrence of `name` by one header with `value`, at the
    /// position of the first occurrence; append if there was none.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let key = expand_compact(name);
        let value = sanitize_value(value.into());
        match self
            .entries
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(key))
        {
            Some(first) => {
                let mut index = 0usize;
                self.entries.retain(|(n, _)| {
                    let keep = index == first || !n.eq_ignore_ascii_case(key);
                    index += 1;
                    keep
                });
                // `first` is still valid: nothing before it was removed.
                if let Some(entry) = self.entries.get_mut(first) {
                    entry.1 = value;
                }
            }
            None => self.entries.push((canonical_name(name), value)),
        }
    }

    /// Insert a header before all others (e.g. a new top Via when relaying).
    pub fn insert_first(&mut self, name: &str, value: impl Into<String>) {
        self.entries
            .insert(0, (canonical_name(name), sanitize_value(value.into())));
    }

    /// Replace the value of the first `name` line in place; false if there
    /// is none.
    pub fn replace_first(&mut self, name: &str, value: impl Into<String>) -> bool {
        let key = expand_compact(name);
        match self
            .entries
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(key))
        {
            Some((_, v)) => {
                *v = sanitize_value(value.into());
                true
            }
            None => false,
        }
    }

    /// Remove every occurrence of `name`.
    pub fn remove(&mut self, name: &str) {
        let key = expand_compact(name);
        self.entries.retain(|(n, _)| !n.eq_ignore_ascii_case(key));
    }

    /// All headers as `(name, value)` in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_ref(), v.as_str()))
    }

    /// Number of header lines.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if there are no headers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The Call-ID value.
    pub fn call_id(&self) -> Option<&str> {
        self.get("Call-ID")
    }

    /// The CSeq header, parsed; `None` if absent or malformed.
    pub fn cseq(&self) -> Option<CSeq> {
        self.get("CSeq").and_then(|v| CSeq::parse(v).ok())
    }

    /// The first (topmost) Via value, parsed; `None` if absent or malformed.
    pub fn top_via(&self) -> Option<Via> {
        let first = crate::sip::header::first_comma_value(self.get("Via")?)?;
        Via::parse(first).ok()
    }

    /// Mutable access to the last header, for unfolding continuation lines.
    fn last_value_mut(&mut self) -> Option<&mut String> {
        self.entries.last_mut().map(|(_, v)| v)
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a str, &'a str);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Cow<'static, str>, String)>,
        fn(&'a (Cow<'static, str>, String)) -> (&'a str, &'a str),
    >;

    fn into_iter(self) -> Self::IntoIter {
        fn pair<'e>(e: &'e (Cow<'static, str>, String)) -> (&'e str, &'e str) {
            (e.0.as_ref(), e.1.as_str())
        }
        self.entries.iter().map(pair)
    }
}

/// Why a message could not be parsed. Messages name the line, header or byte
/// count that failed so logs are actionable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing but CR/LF (a keepalive) or no bytes at all.
    #[error("empty message: no start line")]
    Empty,
    /// The input exceeds the configured size limit.
    #[error("message of {size} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Size of the input in bytes.
        size: usize,
        /// Configured limit.
        max: usize,
    },
    /// The request line or status line is malformed.
    #[error("invalid start line: {reason}")]
    StartLine {
        /// What was wrong.
        reason: String,
    },
    /// A header line is malformed. `line` is 1-based and counts the start
    /// line as line 1.
    #[error("invalid header on line {line}: {reason}")]
    Header {
        /// 1-based line number within the message.
        line: usize,
        /// What was wrong, including the byte offset of the line.
        reason: String,
    },
    /// The header section is cut off mid-line (no empty line ends it).
    #[error("header section ends mid-line at byte {offset}: no empty line terminates it")]
    UnterminatedHead {
        /// Byte offset where the input ended.
        offset: usize,
    },
    /// One of Via, From, To, Call-ID, CSeq is absent.
    #[error("missing required {0} header")]
    MissingHeader(&'static str),
    /// A required header is present but unusable (CSeq syntax, CSeq method
    /// different from the request method, unparsable top Via).
    #[error("invalid {name} header: {reason}")]
    InvalidHeader {
        /// Canonical header name.
        name: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// Content-Length is not a decimal number, or two Content-Length headers
    /// disagree.
    #[error("invalid Content-Length {value:?}")]
    ContentLength {
        /// The offending value(s).
        value: String,
    },
    /// A request's Request-URI is not a SIP URI (no scheme, an unknown
    /// scheme, angle brackets, a port out of range...): RFC 3261 §8.2.2.1.
    #[error("invalid Request-URI: {0}")]
    RequestUri(crate::sip::header::HeaderError),
    /// A header that RFC 3261 §7.3.1 allows once appears more than once.
    #[error("more than one {0} header")]
    Duplicate(&'static str),
    /// Max-Forwards is not a decimal number (RFC 3261 §20.22).
    #[error("Max-Forwards {value:?} is not a number")]
    MaxForwards {
        /// The offending value.
        value: String,
    },
    /// A request carries a body but no Content-Type (RFC 3261 §20.15).
    #[error("a {len}-byte body without a Content-Type header")]
    BodyWithoutContentType {
        /// Body length in bytes.
        len: usize,
    },
    /// Content-Length declares more bytes than the message holds.
    #[error("body truncated: Content-Length declares {declared} bytes but only {available} follow the header section")]
    BodyTruncated {
        /// Declared body length.
        declared: usize,
        /// Bytes actually present after the header section.
        available: usize,
    },
}

/// Knobs for [`Message::parse_with`]. `Default` is the strict RFC 3261 profile
/// with [`MAX_MESSAGE_SIZE`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseOptions {
    /// Reject inputs larger than this many bytes.
    pub max_size: usize,
    /// Accept responses that carry no Via header. Some camera firmware
    /// answers INVITE without one (see MiBeeNvr PR #326); such a response
    /// cannot be matched to a client transaction by branch, so callers that
    /// enable this must match on Call-ID/CSeq instead. Requests always need
    /// a Via.
    pub allow_response_without_via: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        Self {
            max_size: MAX_MESSAGE_SIZE,
            allow_response_without_via: false,
        }
    }
}

/// A SIP request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Request method.
    pub method: Method,
    /// Request-URI, exactly as on the wire (parse it with
    /// [`SipUri::parse`](crate::sip::header::SipUri::parse) when needed).
    pub uri: String,
    /// Header section.
    pub headers: Headers,
    /// Body bytes, never re-encoded.
    pub body: Bytes,
}

/// A SIP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code, 100..=699.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Header section.
    pub headers: Headers,
    /// Body bytes, never re-encoded.
    pub body: Bytes,
}

/// A SIP request or response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

impl Request {
    /// A request with no headers and an empty body.
    pub fn new(method: Method, uri: impl Into<String>) -> Self {
        Self {
            method,
            uri: uri.into(),
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// Serialise: request line, headers with a correct Content-Length, empty
    /// line, body bytes verbatim.
    pub fn to_bytes(&self) -> Bytes {
        let start = format!("{} {} SIP/2.0", self.method, self.uri);
        write_message(&start, &self.headers, &self.body)
    }

    /// The header section.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The header section, mutable.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    /// The body bytes.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The Call-ID value.
    pub fn call_id(&self) -> Option<&str> {
        self.headers.call_id()
    }

    /// The CSeq header, parsed.
    pub fn cseq(&self) -> Option<CSeq> {
        self.headers.cseq()
    }

    /// The topmost Via, parsed.
    pub fn top_via(&self) -> Option<Via> {
        self.headers.top_via()
    }
}

impl Response {
    /// A response with the standard reason phrase, no headers, empty body.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            reason: reason_phrase(status).to_owned(),
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// A response to `req`: copies every Via (in order), From, To, Call-ID and
    /// CSeq; adds `tag=to_tag` to To when given and To has no tag yet.
    ///
    /// Record-Route (for 2xx to dialog-creating requests), Contact and any
    /// body are the caller's business.
    pub fn to_request(req: &Request, status: u16, to_tag: Option<&str>) -> Self {
        Self::to_headers(&req.headers, status, to_tag)
    }

    /// Like [`Response::to_request`] but from a bare header list, e.g. the
    /// one returned by [`salvage_for_error_response`] for a request that did
    /// not parse.
    pub fn to_headers(headers: &Headers, status: u16, to_tag: Option<&str>) -> Self {
        let mut resp = Response::new(status);
        // Values copied from a header list are clean already.
        let out = &mut resp.headers;
        for via in headers.get_all("Via") {
            out.push_clean("Via", via.to_owned());
        }
        if let Some(from) = headers.get("From") {
            out.push_clean("From", from.to_owned());
        }
        if let Some(to) = headers.get("To") {
            let to = match to_tag {
                Some(tag) => with_to_tag(to, tag),
                None => to.to_owned(),
            };
            out.push_clean("To", to);
        }
        if let Some(call_id) = headers.get("Call-ID") {
            out.push_clean("Call-ID", call_id.to_owned());
        }
        if let Some(cseq) = headers.get("CSeq") {
            out.push_clean("CSeq", cseq.to_owned());
        }
        resp
    }

    /// True for a 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Serialise: status line, headers with a correct Content-Length, empty
    /// line, body bytes verbatim.
    pub fn to_bytes(&self) -> Bytes {
        let start = format!("SIP/2.0 {:03} {}", self.status, self.reason);
        write_message(&start, &self.headers, &self.body)
    }

    /// The header section.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The header section, mutable.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    /// The body bytes.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The Call-ID value.
    pub fn call_id(&self) -> Option<&str> {
        self.headers.call_id()
    }

    /// The CSeq header, parsed.
    pub fn cseq(&self) -> Option<CSeq> {
        self.headers.cseq()
    }

    /// The topmost Via, parsed.
    pub fn top_via(&self) -> Option<Via> {
        self.headers.top_via()
    }
}

/// Append `;tag=tag` to a To value that has none. The value is extended
/// textually instead of re-serialised so the rest of the To header stays
/// byte-identical to what the peer sent (RFC 3261 §8.2.6.2).
fn with_to_tag(to: &str, tag: &str) -> String {
    let has_tag = match NameAddrRef::parse(to) {
        Ok(addr) => addr.params.get("tag").flatten().is_some(),
        // Unparsable To: fall back to a textual check so we never add a
        // second tag.
        Err(_) => to.to_ascii_lowercase().contains(";tag="),
    };
    let mut value = String::with_capacity(to.len() + 5 + tag.len());
    value.push_str(to);
    if !has_tag {
        value.push_str(";tag=");
        value.push_str(tag);
    }
    value
}

/// The standard reason phrase for `status`, or a generic one for its class.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        199 => "Early Dialog Terminated",
        200 => "OK",
        202 => "Accepted",
        204 => "No Notification",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        412 => "Conditional Request Failed",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        417 => "Unknown Resource-Priority",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        428 => "Use Identity Header",
        429 => "Provide Referrer Identity",
        433 => "Anonymity Disallowed",
        436 => "Bad Identity-Info",
        437 => "Unsupported Certificate",
        438 => "Invalid Identity Header",
        439 => "First Hop Lacks Outbound Support",
        440 => "Max-Breadth Exceeded",
        469 => "Bad Info Package",
        470 => "Consent Needed",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        493 => "Undecipherable",
        494 => "Security Agreement Required",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        580 => "Precondition Failure",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        607 => "Unwanted",
        _ => match status / 100 {
            1 => "Provisional",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            5 => "Server Error",
            6 => "Global Failure",
            _ => "Unknown",
        },
    }
}

impl Message {
    /// Parse one complete message (a UDP datagram) with the default
    /// [`ParseOptions`].
    ///
    /// Content-Length, if present, bounds the body (extra bytes are ignored;
    /// fewer is an error). Without it the body is the rest of the input.
    /// Accepts CRLF or bare LF line endings, leading CRLFs, folded
    /// (continuation) header lines, compact header names, non-UTF-8 bytes in
    /// header values (decoded lossily) and in the body (kept as raw bytes,
    /// never re-encoded). Via, From, To, Call-ID and CSeq are required; CSeq
    /// and the top Via must parse, and a request's CSeq method must match
    /// its method.
    pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
        Self::parse_with(buf, &ParseOptions::default())
    }

    /// [`Message::parse`] with explicit options.
    pub fn parse_with(buf: &[u8], opts: &ParseOptions) -> Result<Message, ParseError> {
        let (mut msg, body) = parse_head(buf, opts)?;
        let body = buf
            .get(body)
            .map(Bytes::copy_from_slice)
            .unwrap_or_default();
        *msg.body_mut() = body;
        Ok(msg)
    }

    /// [`Message::parse`] with the body as a zero-copy slice of `buf`
    /// (e.g. a datagram received into `BytesMut` and frozen).
    pub fn parse_bytes(buf: &Bytes) -> Result<Message, ParseError> {
        Self::parse_bytes_with(buf, &ParseOptions::default())
    }

    /// Like [`Message::parse_with`] but the body is a zero-copy slice of
    /// `buf` (used by the stream framer, which already owns the frame).
    pub fn parse_bytes_with(buf: &Bytes, opts: &ParseOptions) -> Result<Message, ParseError> {
        let (mut msg, body) = parse_head(buf, opts)?;
        // `parse_head` only returns in-bounds ranges; the emptiness fallback
        // just keeps this panic-free without relying on that.
        let body = if body.end <= buf.len() && body.start <= body.end {
            buf.slice(body)
        } else {
            Bytes::new()
        };
        *msg.body_mut() = body;
        Ok(msg)
    }

    /// Serialise; always writes a correct Content-Length (replacing any)
    /// computed from the body; body bytes are written verbatim.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }

    /// The header section.
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }

    /// The header section, mutable.
    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            Message::Request(r) => &mut r.headers,
            Message::Response(r) => &mut r.headers,
        }
    }

    /// The body bytes.
    pub fn body(&self) -> &Bytes {
        match self {
            Message::Request(r) => &r.body,
            Message::Response(r) => &r.body,
        }
    }

    fn body_mut(&mut self) -> &mut Bytes {
        match self {
            Message::Request(r) => &mut r.body,
            Message::Response(r) => &mut r.body,
        }
    }

    /// The Call-ID value.
    pub fn call_id(&self) -> Option<&str> {
        self.headers().call_id()
    }

    /// The CSeq header, parsed.
    pub fn cseq(&self) -> Option<CSeq> {
        self.headers().cseq()
    }

    /// The topmost Via, parsed.
    pub fn top_via(&self) -> Option<Via> {
        self.headers().top_via()
    }

    /// True for requests.
    pub fn is_request(&self) -> bool {
        matches!(self, Message::Request(_))
    }
}

impl From<Request> for Message {
    fn from(r: Request) -> Self {
        Message::Request(r)
    }
}

impl From<Response> for Message {
    fn from(r: Response) -> Self {
        Message::Response(r)
    }
}

/// Write start line, headers (with Content-Length replaced by the real body
/// length, at the position of the first Content-Length or at the end), empty
/// line and body.
fn write_message(start_line: &str, headers: &Headers, body: &Bytes) -> Bytes {
    let head_estimate: usize = headers
        .entries
        .iter()
        .map(|(n, v)| n.len().saturating_add(v.len()).saturating_add(4))
        .fold(start_line.len().saturating_add(32), usize::saturating_add);
    let mut out = BytesMut::with_capacity(head_estimate.saturating_add(body.len()));
    // The start line is built from our own fields; strip line breaks so a
    // bad URI or reason phrase cannot split it.
    out.put_slice(sanitize_value(start_line.to_owned()).as_bytes());
    out.put_slice(b"\r\n");
    let content_length = format!("Content-Length: {}\r\n", body.len());
    let mut wrote_length = false;
    for (name, value) in headers.iter() {
        if name.eq_ignore_ascii_case("Content-Length") {
            if !wrote_length {
                out.put_slice(content_length.as_bytes());
                wrote_length = true;
            }
            continue;
        }
        out.put_slice(name.as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    if !wrote_length {
        out.put_slice(content_length.as_bytes());
    }
    out.put_slice(b"\r\n");
    out.put_slice(body);
    out.freeze()
}

/// Locate the end of the header section in `buf`, scanning for the line
/// terminator that is followed by an empty line (`\n\n`, `\n\r\n`).
///
/// Returns `(head_len, body_start)`: `buf[..head_len]` holds the start line
/// and header lines including the last line's LF; the body starts at
/// `body_start`. Scanning starts at `from` so a stream framer can resume
/// where it stopped.
pub(crate) fn find_head_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let tail = buf.get(from..)?;
    // Every byte of every message passes here: LFs are found with memchr
    // and only they are looked at.
    for lf in memchr::memchr_iter(b'\n', tail) {
        let i = from + lf;
        match (buf.get(i + 1), buf.get(i + 2)) {
            (Some(b'\n'), _) => return Some((i + 1, i + 2)),
            (Some(b'\r'), Some(b'\n')) => return Some((i + 1, i + 3)),
            _ => {}
        }
    }
    None
}

/// Iterate the lines of a header section: yields `(line_number, offset,
/// bytes)` with the line terminator (LF and one preceding CR) removed.
/// Line numbers are 1-based; offsets are relative to `base`.
fn lines(head: &[u8], base: usize) -> impl Iterator<Item = (usize, usize, &[u8])> {
    let mut offset = base;
    let mut number = 0usize;
    let mut rest = Some(head);
    std::iter::from_fn(move || {
        let chunk = rest?;
        if chunk.is_empty() {
            rest = None;
            return None;
        }
        let (line, next) = match memchr::memchr(b'\n', chunk) {
            Some(lf) => (chunk.get(..lf)?, chunk.get(lf + 1..)),
            None => (chunk, None),
        };
        rest = next;
        let start = offset;
        offset = offset.saturating_add(line.len()).saturating_add(1);
        number += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        Some((number, start, line))
    })
}

/// Where `bytes` is without SP and HT at both ends. Both ends are char
/// boundaries of any UTF-8 text (SP and HT are ASCII), so text is trimmed
/// by the same span.
pub(crate) fn unblank_span(bytes: &[u8]) -> std::ops::Range<usize> {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |p| p + 1);
    start..end
}

/// Strip SP and HT from both ends.
fn trim_lws(bytes: &[u8]) -> &[u8] {
    bytes.get(unblank_span(bytes)).unwrap_or_default()
}

/// Split a header line at its first colon into trimmed `(name, value)`.
fn split_header_line(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = memchr::memchr(b':', line)?;
    let name = trim_lws(line.get(..colon)?);
    let value = trim_lws(line.get(colon + 1..)?);
    Some((name, value))
}

/// Number of leading CR/LF bytes; RFC 3261 §7.5 says to ignore them (they
/// are keepalives on streams and harmless in datagrams).
pub(crate) fn leading_crlf(buf: &[u8]) -> usize {
    buf.iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(buf.len())
}

/// Parse a decimal Content-Length value.
pub(crate) fn parse_content_length(value: &str) -> Option<usize> {
    let value = value.trim();
    if value.is_empty() || value.len() > 19 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Find the Content-Length of a header section: `Ok(None)` when absent,
/// an error when unparsable or when two values disagree (which would let
/// two hops frame the same bytes differently).
pub(crate) fn content_length_of<'a>(
    values: impl Iterator<Item = &'a str>,
) -> Result<Option<usize>, String> {
    let mut found: Option<usize> = None;
    for value in values {
        let n = parse_content_length(value).ok_or_else(|| value.to_owned())?;
        match found {
            Some(previous) if previous != n => {
                return Err(format!("{previous} and {n} (conflicting headers)"))
            }
            _ => found = Some(n),
        }
    }
    Ok(found)
}

/// Content-Length lines of a raw header section, found without parsing the
/// rest, so the stream framer can cut a frame even when another header is
/// malformed.
pub(crate) fn raw_content_lengths(head: &[u8]) -> Vec<String> {
    lines(head, 0)
        .skip(1)
        // Only a line that starts as Content-Length or `l` can be one.
        .filter(|(_, _, line)| matches!(line.first(), Some(b'c' | b'C' | b'l' | b'L')))
        .filter_map(|(_, _, line)| split_header_line(line))
        .filter(|(name, _)| {
            name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")
        })
        .map(|(_, value)| clean_wire_value(value))
        .collect()
}

enum StartLine {
    Request { method: Method, uri: String },
    Response { status: u16, reason: String },
}

/// Split off the first whitespace-delimited word.
fn next_word(s: &str) -> (&str, &str) {
    let s = s.trim_start_matches([' ', '\t']);
    match s.split_once([' ', '\t']) {
        Some((word, rest)) => (word, rest),
        None => (s, ""),
    }
}

fn start_line_error(reason: impl Into<String>) -> ParseError {
    ParseError::StartLine {
        reason: reason.into(),
    }
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    let is_response = line
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"));
    if is_response {
        let (version, rest) = next_word(line);
        if !version.eq_ignore_ascii_case("SIP/2.0") {
            return Err(start_line_error(format!(
                "unsupported version {version:?} in status line"
            )));
        }
        let (code, reason) = next_word(rest);
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(start_line_error(format!(
                "status code {code:?} is not three digits"
            )));
        }
        let status: u16 = code
            .parse()
            .map_err(|_| start_line_error(format!("status code {code:?}")))?;
        if !(100..=699).contains(&status) {
            return Err(start_line_error(format!(
                "status code {status} outside 100..=699"
            )));
        }
        Ok(StartLine::Response {
            status,
            reason: clean_wire_value(reason.as_bytes()),
        })
    } else {
        let (method, rest) = next_word(line);
        let (uri, rest) = next_word(rest);
        let (version, rest) = next_word(rest);
        if !is_token(method) {
            return Err(start_line_error(format!(
                "method {method:?} is not a token"
            )));
        }
        if uri.is_empty() {
            return Err(start_line_error("missing Request-URI"));
        }
        if uri.chars().any(char::is_control) {
            return Err(start_line_error("control character in Request-URI"));
        }
        if !version.eq_ignore_ascii_case("SIP/2.0") {
            return Err(start_line_error(format!(
                "unsupported or missing version {version:?} in request line"
            )));
        }
        if !rest.trim_matches([' ', '\t']).is_empty() {
            return Err(start_line_error("trailing text after SIP version"));
        }
        Ok(StartLine::Request {
            method: Method::parse(method),
            uri: uri.to_owned(),
        })
    }
}

/// Parse everything but the body; returns the message with an empty body
/// and the in-bounds byte range of the body within `buf`.
fn parse_head(
    buf: &[u8],
    opts: &ParseOptions,
) -> Result<(Message, std::ops::Range<usize>), ParseError> {
    if buf.len() > opts.max_size {
        return Err(ParseError::TooLarge {
            size: buf.len(),
            max: opts.max_size,
        });
    }
    let start = leading_crlf(buf);
    if start >= buf.len() {
        return Err(ParseError::Empty);
    }
    let (head_len, body_start) = match find_head_end(buf, start) {
        Some(found) => found,
        // Lenient for datagrams: a header section that ends with a complete
        // line but lacks the empty line is taken as a message with no body.
        None if buf.ends_with(b"\n") => (buf.len(), buf.len()),
        None => return Err(ParseError::UnterminatedHead { offset: buf.len() }),
    };
    let head = buf.get(start..head_len).unwrap_or_default();

    let mut line_iter = lines(head, start);
    let start_line = match line_iter.next() {
        Some((_, _, line)) => String::from_utf8_lossy(line),
        None => return Err(ParseError::Empty),
    };
    let start_line = parse_start_line(&start_line)?;

    let mut headers = Headers::new();
    for (number, offset, line) in line_iter {
        if line.is_empty() {
            // Cannot happen before the head end, but stop cleanly if it does.
            break;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            // Folded line (RFC 3261 §7.3.1): its content continues the
            // previous header's value, joined by a single space.
            let more = clean_wire_value(line);
            let Some(value) = headers.last_value_mut() else {
                return Err(ParseError::Header {
                    line: number,
                    reason: format!("continuation line at byte {offset} before any header"),
                });
            };
            if !more.is_empty() {
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(&more);
            }
            continue;
        }
        let Some((name, value)) = split_header_line(line) else {
            return Err(ParseError::Header {
                line: number,
                reason: format!("no ':' in header line at byte {offset}"),
            });
        };
        if name.is_empty() || !name.iter().all(|b| is_token_byte(*b)) {
            return Err(ParseError::Header {
                line: number,
                reason: format!(
                    "invalid header name {:?} at byte {offset}",
                    String::from_utf8_lossy(name)
                ),
            });
        }
        let name = String::from_utf8_lossy(name);
        headers.push(&name, clean_wire_value(value));
    }

    let available = buf.len().saturating_sub(body_start);
    let body = match content_length_of(headers.get_all("Content-Length"))
        .map_err(|value| ParseError::ContentLength { value })?
    {
        Some(declared) if declared > available => {
            return Err(ParseError::BodyTruncated {
                declared,
                available,
            })
        }
        Some(declared) => body_start..body_start + declared,
        None => body_start..buf.len(),
    };

    let is_response = matches!(start_line, StartLine::Response { .. });
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        if name == "Via" && is_response && opts.allow_response_without_via {
            continue;
        }
        if !headers.contains(name) {
            return Err(ParseError::MissingHeader(name));
        }
    }
    let cseq_value = headers.get("CSeq").unwrap_or_default();
    let cseq = CSeq::parse(cseq_value).map_err(|e| ParseError::InvalidHeader {
        name: "CSeq",
        reason: e.to_string(),
    })?;
    if let Some(first_line) = headers.get("Via") {
        let first = crate::sip::header::first_comma_value(first_line).unwrap_or_default();
        crate::sip::header::ViaRef::parse(first).map_err(|e| ParseError::InvalidHeader {
            name: "Via",
            reason: e.to_string(),
        })?;
    }

    let msg = match start_line {
        StartLine::Request { method, uri } => {
            check_request_syntax(&uri, &headers, body.len())?;
            if cseq.method != method {
                return Err(ParseError::InvalidHeader {
                    name: "CSeq",
                    reason: format!(
                        "method {} does not match request method {}",
                        cseq.method, method
                    ),
                });
            }
            Message::Request(Request {
                method,
                uri,
                headers,
                body: Bytes::new(),
            })
        }
        StartLine::Response { status, reason } => Message::Response(Response {
            status,
            reason,
            headers,
            body: Bytes::new(),
        }),
    };
    Ok((msg, body))
}

/// Headers RFC 3261 §7.3.1 allows only once in a request (their grammar is
/// not a comma-separated list); two of them make the request ambiguous.
const SINGLE_HEADERS: [&str; 5] = ["Call-ID", "CSeq", "From", "To", "Max-Forwards"];

/// The request checks RFC 3261 makes strict: a SIP Request-URI, From and To
/// that parse as name-addr/addr-spec, no repeated single-valued header, a
/// numeric Max-Forwards and a Content-Type for any body. What old cameras
/// get wrong but RFC 3261 tolerates (no branch, compact or folded headers,
/// leading zeros in numbers) is accepted elsewhere.
fn check_request_syntax(uri: &str, headers: &Headers, body_len: usize) -> Result<(), ParseError> {
    SipUriRef::parse(uri).map_err(ParseError::RequestUri)?;
    for name in SINGLE_HEADERS {
        if headers.get_all(name).nth(1).is_some() {
            return Err(ParseError::Duplicate(name));
        }
    }
    for name in ["From", "To"] {
        NameAddrRef::parse(headers.get(name).unwrap_or_default()).map_err(|e| {
            ParseError::InvalidHeader {
                name,
                reason: e.to_string(),
            }
        })?;
    }
    if let Some(value) = headers.get("Max-Forwards") {
        if value.is_empty() || value.len() > 9 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::MaxForwards {
                value: value.chars().take(40).collect(),
            });
        }
    }
    if body_len > 0 && !headers.contains("Content-Type") {
        return Err(ParseError::BodyWithoutContentType { len: body_len });
    }
    Ok(())
}

/// Best effort for replying 400 to a message that failed to parse: scan the
/// header lines for Via (all of them), From, To, Call-ID and CSeq (first
/// of each) and return them if Via, Call-ID and CSeq were all found.
/// Never panics; ignores folding and anything malformed.
pub fn salvage_for_error_response(buf: &[u8]) -> Option<Headers> {
    let start = leading_crlf(buf);
    let rest = buf.get(start..)?;
    let head_len = find_head_end(rest, 0).map_or(rest.len(), |(h, _)| h);
    let head = rest.get(..head_len)?;
    let mut out = Headers::new();
    for (_, _, line) in lines(head, 0).skip(1) {
        if matches!(line.first(), Some(b' ' | b'\t')) {
            continue;
        }
        let Some((name, value)) = split_header_line(line) else {
            continue;
        };
        let name = String::from_utf8_lossy(name);
        let name = expand_compact(&name);
        let Some(wanted) = ["Via", "From", "To", "Call-ID", "CSeq"]
            .into_iter()
            .find(|w| w.eq_ignore_ascii_case(name))
        else {
            continue;
        };
        if wanted == "Via" || !out.contains(wanted) {
            out.push(wanted, clean_wire_value(value));
        }
    }
    (out.contains("Via") && out.contains("Call-ID") && out.contains("CSeq")).then_some(out)
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

    const REGISTER_AUTH: &[u8] = b"REGISTER sip:34020000002000000001@3402000000 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1371463273\r\n\
From: <sip:34020000001320000001@3402000000>;tag=2043466181\r\n\
To: <sip:34020000001320000001@3402000000>\r\n\
Call-ID: 1011047669\r\n\
CSeq: 2 REGISTER\r\n\
Contact: <sip:34020000001320000001@192.168.1.64:5060>\r\n\
Authorization: Digest username=\"34020000001320000001\", realm=\"3402000000\", nonce=\"44010b73623249f6916a6acf7c316b8e\", uri=\"sip:34020000002000000001@3402000000\", response=\"e4ca3fdc5869fa1c544ea7af60014444\", algorithm=MD5\r\n\
Max-Forwards: 70\r\n\
User-Agent: IP Camera\r\n\
Expires: 3600\r\n\
Content-Length: 0\r\n\r\n";

    /// A keepalive MESSAGE whose body holds GB2312 text (浙江 = D5 E3 BD AD,
    /// 杭州 = BA BC D6 DD) plus C9 E3 CF F1 (摄像) bytes.
    fn gb2312_message() -> Vec<u8> {
        let mut body: Vec<u8> = Vec::new();
        body.extend_from_slice(
            b"<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>43</SN>\r\n<DeviceID>34020000001320000001</DeviceID>\r\n<Name>",
        );
        body.extend_from_slice(&[
            0xC9, 0xE3, 0xCF, 0xF1, 0xD5, 0xE3, 0xBD, 0xAD, 0xBA, 0xBC, 0xD6, 0xDD,
        ]);
        body.extend_from_slice(b"</Name>\r\n<Status>OK</Status>\r\n</Notify>\r\n");
        let mut msg = format!(
            "MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1798384525\r\n\
From: <sip:34020000001320000001@3402000000>;tag=1553404447\r\n\
To: <sip:34020000002000000001@3402000000>\r\n\
Call-ID: 1520307893\r\n\
CSeq: 20 MESSAGE\r\n\
Content-Type: Application/MANSCDP+xml\r\n\
Max-Forwards: 70\r\n\
User-Agent: IP Camera\r\n\
Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        msg.extend_from_slice(&body);
        msg
    }

    #[test]
    fn parses_hikvision_register_with_authorization() {
        let msg = Message::parse(REGISTER_AUTH).unwrap();
        let Message::Request(req) = &msg else {
            panic!("expected request")
        };
        assert_eq!(req.method, Method::Register);
        assert_eq!(req.uri, "sip:34020000002000000001@3402000000");
        assert_eq!(msg.call_id(), Some("1011047669"));
        let cseq = msg.cseq().unwrap();
        assert_eq!((cseq.seq, cseq.method), (2, Method::Register));
        let via = msg.top_via().unwrap();
        assert_eq!(via.branch(), Some("z9hG4bK1371463273"));
        assert_eq!(via.rport(), Some(None));
        assert!(msg
            .headers()
            .get("authorization")
            .unwrap()
            .starts_with("Digest username="));
        assert_eq!(msg.headers().get("EXPIRES"), Some("3600"));
        assert!(msg.body().is_empty());
        // Serialisation is byte-identical for a canonical input.
        assert_eq!(&msg.to_bytes()[..], REGISTER_AUTH);
    }

    #[test]
    fn gb2312_body_survives_byte_for_byte() {
        let raw = gb2312_message();
        let shared = Bytes::from(raw.clone());
        assert_eq!(
            Message::parse_bytes(&shared).unwrap(),
            Message::parse(&raw).unwrap()
        );
        let msg = Message::parse(&raw).unwrap();
        assert!(msg.body().windows(4).any(|w| w == [0xC9, 0xE3, 0xCF, 0xF1]));
        assert_eq!(&msg.to_bytes()[..], &raw[..]);
    }

    #[test]
    fn compact_headers_and_lf_only() {
        let raw = b"MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\n\
v: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKabc\n\
f: <sip:34020000001320000001@3402000000>;tag=1\n\
t: <sip:34020000002000000001@3402000000>\n\
i: call-1@10.0.0.2\n\
CSeq: 1 MESSAGE\n\
c: Application/MANSCDP+xml\n\
l: 5\n\
\n\
hello-and-trailing";
        let msg = Message::parse(raw).unwrap();
        assert_eq!(msg.call_id(), Some("call-1@10.0.0.2"));
        assert_eq!(
            msg.headers().get("Content-Type"),
            Some("Application/MANSCDP+xml")
        );
        assert_eq!(msg.headers().get("c"), Some("Application/MANSCDP+xml"));
        assert_eq!(msg.headers().get("via"), msg.headers().get("v"));
        // Content-Length bounds the body; extra datagram bytes are ignored.
        assert_eq!(&msg.body()[..], b"hello");
        let names: Vec<&str> = msg.headers().iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "Via",
                "From",
                "To",
                "Call-ID",
                "CSeq",
                "Content-Type",
                "Content-Length"
            ]
        );
        let out = msg.to_bytes();
        assert!(out.starts_with(b"MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\r\nVia: "));
        assert!(out.ends_with(b"Content-Length: 5\r\n\r\nhello"));
    }

    #[test]
    fn folded_header_is_unfolded() {
        let raw = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1,\r\n\
\x20  SIP/2.0/TCP 10.0.0.9:5070;branch=z9hG4bK2\r\n\
From: <sip:a@b>;tag=x\r\n\
To: <sip:c@d>\r\n\
\t;tag=y\r\n\
Call-ID: abc\r\n\
CSeq: 7 INVITE\r\n\r\n";
        let msg = Message::parse(raw).unwrap();
        assert_eq!(msg.headers().get("To"), Some("<sip:c@d> ;tag=y"));
        let vias = crate::sip::header::vias(msg.headers()).unwrap();
        assert_eq!(vias.len(), 2);
        assert_eq!(vias[1].transport, "TCP");
        assert_eq!(vias[1].port, Some(5070));
    }

    #[test]
    fn non_utf8_header_value_is_lossy_and_message_still_parses() {
        let mut raw =
            b"MESSAGE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: \"".to_vec();
        raw.extend_from_slice(&[0xC9, 0xE3, 0xCF, 0xF1]);
        raw.extend_from_slice(
            b"\" <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: 1\r\nCSeq: 1 MESSAGE\r\n\r\n",
        );
        let msg = Message::parse(&raw).unwrap();
        let from = msg.headers().get("From").unwrap();
        assert!(from.contains('\u{FFFD}'));
        let addr = crate::sip::header::NameAddr::parse(from).unwrap();
        assert_eq!(addr.tag(), Some("1"));
    }

    #[test]
    fn required_headers_and_errors() {
        let base = "INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: 1\r\nCSeq: 1 INVITE\r\n";
        for (name, line) in [
            ("Via", "Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"),
            ("From", "From: <sip:a@b>;tag=1\r\n"),
            ("To", "To: <sip:x@y>\r\n"),
            ("Call-ID", "Call-ID: 1\r\n"),
            ("CSeq", "CSeq: 1 INVITE\r\n"),
        ] {
            let raw = format!("{}\r\n", base.replace(line, ""));
            assert_eq!(
                Message::parse(raw.as_bytes()),
                Err(ParseError::MissingHeader(name)),
                "{name}"
            );
        }
        let mismatch = format!("{}\r\n", base.replace("1 INVITE", "1 BYE"));
        assert!(matches!(
            Message::parse(mismatch.as_bytes()),
            Err(ParseError::InvalidHeader { name: "CSeq", .. })
        ));
        let truncated = format!("{base}Content-Length: 10\r\n\r\nabc");
        assert_eq!(
            Message::parse(truncated.as_bytes()),
            Err(ParseError::BodyTruncated {
                declared: 10,
                available: 3
            })
        );
        let bad_len = format!("{base}Content-Length: ten\r\n\r\n");
        assert!(matches!(
            Message::parse(bad_len.as_bytes()),
            Err(ParseError::ContentLength { .. })
        ));
        let conflicting = format!("{base}Content-Length: 1\r\nl: 2\r\n\r\nab");
        assert!(matches!(
            Message::parse(conflicting.as_bytes()),
            Err(ParseError::ContentLength { .. })
        ));
        let bad_line = format!("{base}NoColonHere\r\n\r\n");
        assert!(matches!(
            Message::parse(bad_line.as_bytes()),
            Err(ParseError::Header { line: 7, .. })
        ));
        assert_eq!(Message::parse(b""), Err(ParseError::Empty));
        assert_eq!(Message::parse(b"\r\n\r\n"), Err(ParseError::Empty));
        assert!(matches!(
            Message::parse(b"HELLO\r\n\r\n"),
            Err(ParseError::StartLine { .. })
        ));
        assert!(matches!(
            Message::parse(b"SIP/2.0 999 Nope\r\n\r\n"),
            Err(ParseError::StartLine { .. })
        ));
        assert!(matches!(
            Message::parse(b"INVITE sip:x SIP/2.0\r\nVia: x"),
            Err(ParseError::UnterminatedHead { .. })
        ));
        let big = vec![b'a'; MAX_MESSAGE_SIZE + 1];
        assert!(matches!(
            Message::parse(&big),
            Err(ParseError::TooLarge { .. })
        ));
    }

    #[test]
    fn response_without_via_is_opt_in() {
        let raw = b"SIP/2.0 200 OK\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>;tag=2\r\nCall-ID: 1\r\nCSeq: 1 INVITE\r\n\r\n";
        assert_eq!(Message::parse(raw), Err(ParseError::MissingHeader("Via")));
        let opts = ParseOptions {
            allow_response_without_via: true,
            ..ParseOptions::default()
        };
        let msg = Message::parse_with(raw, &opts).unwrap();
        assert!(msg.top_via().is_none());
    }

    #[test]
    fn response_to_request_copies_and_tags() {
        let Message::Request(req) = Message::parse(REGISTER_AUTH).unwrap() else {
            panic!()
        };
        let resp = Response::to_request(&req, 401, Some("abc"));
        assert_eq!(resp.reason, "Unauthorized");
        assert_eq!(
            resp.headers.get("To"),
            Some("<sip:34020000001320000001@3402000000>;tag=abc")
        );
        let again = Response::to_headers(&resp.headers, 200, Some("zzz"));
        assert_eq!(again.headers.get("To"), resp.headers.get("To"));
        let text = String::from_utf8(resp.to_bytes().to_vec()).unwrap();
        assert!(text.starts_with("SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1371463273\r\n"));
        assert!(text.ends_with("CSeq: 2 REGISTER\r\nContent-Length: 0\r\n\r\n"));
    }

    #[test]
    fn headers_editing() {
        let mut h = Headers::new();
        h.push("v", "SIP/2.0/UDP a;branch=z9hG4bK1");
        h.push("call-id", "x");
        h.push("Via", "SIP/2.0/UDP b;branch=z9hG4bK2");
        h.insert_first("Via", "SIP/2.0/UDP top;branch=z9hG4bK0");
        assert_eq!(h.get_all("VIA").count(), 3);
        assert_eq!(h.get("v"), Some("SIP/2.0/UDP top;branch=z9hG4bK0"));
        h.set("via", "only");
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            [("Via", "only"), ("Call-ID", "x")]
        );
        h.set("X-Custom", "1\r\nInjected: yes");
        assert_eq!(h.get("x-custom"), Some("1  Injected: yes"));
        h.remove("i");
        assert_eq!(h.len(), 2);
        assert!(!h.contains("Call-ID"));
    }

    #[test]
    fn salvage_finds_dialog_headers() {
        let raw = b"INVITE sip:x@y SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP g;branch=z9hG4bK0\r\nf: <sip:a@b>;tag=1\r\nCall-ID: 9\r\nCSeq: 1 BYE\r\nBroken line\r\n\r\n";
        assert!(Message::parse(raw).is_err());
        let h = salvage_for_error_response(raw).unwrap();
        assert_eq!(h.get_all("Via").count(), 2);
        assert_eq!(h.get("From"), Some("<sip:a@b>;tag=1"));
        let resp = Response::to_headers(&h, 400, None);
        assert_eq!(resp.headers.len(), 5);
        assert!(salvage_for_error_response(b"\x00\xff garbage").is_none());
    }

    #[test]
    fn method_round_trip() {
        for m in [
            "REGISTER",
            "INVITE",
            "ACK",
            "BYE",
            "CANCEL",
            "OPTIONS",
            "MESSAGE",
            "INFO",
            "SUBSCRIBE",
            "NOTIFY",
            "REFER",
            "UPDATE",
            "PRACK",
            "PUBLISH",
        ] {
            assert_eq!(Method::parse(m).as_str(), m);
            assert_eq!(Method::parse(m).to_string(), m);
        }
        assert_eq!(Method::parse("register"), Method::Other("register".into()));
    }

    #[test]
    fn head_end_variants() {
        assert_eq!(find_head_end(b"a\r\n\r\nb", 0), Some((3, 5)));
        assert_eq!(find_head_end(b"a\n\nb", 0), Some((2, 3)));
        assert_eq!(find_head_end(b"a\n\r\nb", 0), Some((2, 4)));
        assert_eq!(find_head_end(b"a\n\n", 0), Some((2, 3)));
        assert_eq!(find_head_end(b"a\r\n\r", 0), None);
        assert_eq!(find_head_end(b"", 5), None);
    }

    /// A request with the given Request-URI, extra header lines and body.
    fn odd_request(uri: &str, extra: &str, body: &str) -> Vec<u8> {
        format!(
            "OPTIONS {uri} SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK77\r\n\
From: <sip:34020000001320000001@3402000000>;tag=9\r\n\
To: <sip:34020000002000000001@3402000000>\r\n\
Call-ID: odd-1\r\n\
CSeq: 1 OPTIONS\r\n\
{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn strict_where_rfc3261_is_strict() {
        let good_uri = "sip:34020000002000000001@3402000000";
        let cases: &[(&str, &str, &str, &str)] = &[
            ("34020000002000000001@3402000000", "", "", "Request-URI"),
            (
                "xyz:34020000002000000001@3402000000",
                "",
                "",
                "unsupported scheme",
            ),
            (
                "<sip:34020000002000000001@3402000000>",
                "",
                "",
                "Request-URI",
            ),
            ("sip:34020000002000000001@10.0.0.1:99999", "", "", "port"),
            (good_uri, "Call-ID: odd-2\r\n", "", "more than one Call-ID"),
            (good_uri, "CSeq: 2 OPTIONS\r\n", "", "more than one CSeq"),
            (good_uri, "Max-Forwards: seventy\r\n", "", "Max-Forwards"),
            (good_uri, "", "hello", "without a Content-Type"),
        ];
        for (uri, extra, body, needle) in cases {
            let raw = odd_request(uri, extra, body);
            let err = Message::parse(&raw).expect_err(uri).to_string();
            assert!(err.contains(needle), "{uri} {extra}: {err}");
            assert!(salvage_for_error_response(&raw).is_some());
        }
        let froms = [
            "From: \"Cam <sip:34020000001320000001@3402000000>;tag=9",
            "From: <sip:34020000001320000001@3402000000;tag=9",
            "From: Cam sip:34020000001320000001@3402000000;tag=9",
        ];
        for from in froms {
            let raw = String::from_utf8(odd_request(good_uri, "", ""))
                .unwrap()
                .replace("From: <sip:34020000001320000001@3402000000>;tag=9", from);
            let err = Message::parse(raw.as_bytes()).expect_err(from);
            assert!(
                matches!(err, ParseError::InvalidHeader { name: "From", .. }),
                "{from}: {err}"
            );
        }
    }

    #[test]
    fn lenient_where_old_cameras_need_it() {
        let uri = "sip:34020000002000000001@3402000000";
        // No branch (RFC 2543), a zero-padded Content-Length, compact
        // names, and a Content-Type we do not take (the node answers 415).
        let raw = String::from_utf8(odd_request(uri, "c: text/plain\r\n", "hello"))
            .unwrap()
            .replace(";branch=z9hG4bK77", "")
            .replace("Content-Length: 5", "Content-Length: 0005");
        let msg = Message::parse(raw.as_bytes()).unwrap();
        assert_eq!(&msg.body()[..], b"hello");
        assert_eq!(msg.top_via().unwrap().branch(), None);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn token() -> impl Strategy<Value = String> {
            "[A-Za-z0-9][A-Za-z0-9.!%*_+`'~-]{0,15}"
        }

        fn header_value() -> impl Strategy<Value = String> {
            // Any printable text without leading/trailing blanks (the parser
            // trims those) and without line breaks (sanitised on insert).
            "[!-~]([ -~]{0,40}[!-~])?"
        }

        prop_compose! {
            fn arb_request()(
                method in token(),
                user in "[0-9]{20}",
                host in "[a-z0-9.]{1,20}",
                call_id in token(),
                seq in 0u32..=u32::MAX,
                extra in proptest::collection::vec((token(), header_value()), 0..6),
                body in proptest::collection::vec(any::<u8>(), 0..200),
            ) -> Request {
                let method = Method::parse(&method);
                let mut r = Request::new(method.clone(), format!("sip:{user}@{host}"));
                r.headers.push("Via", format!("SIP/2.0/UDP {host}:5060;rport;branch=z9hG4bK{call_id}"));
                r.headers.push("From", format!("<sip:{user}@{host}>;tag={call_id}"));
                r.headers.push("To", format!("<sip:{user}@{host}>"));
                r.headers.push("Call-ID", call_id);
                r.headers.push("CSeq", format!("{seq} {method}"));
                for (n, v) in extra {
                    // Content-Length is rewritten on output; single-valued
                    // headers would make the request illegal (tested apart).
                    let full = expand_compact(&n);
                    let single = ["Content-Length", "Content-Type"]
                        .iter()
                        .chain(SINGLE_HEADERS.iter())
                        .any(|h| h.eq_ignore_ascii_case(full));
                    if !single {
                        r.headers.push(&n, v);
                    }
                }
                if !body.is_empty() {
                    r.headers.push("Content-Type", "Application/MANSCDP+xml");
                }
                r.body = Bytes::from(body);
                r
            }
        }

        proptest! {
            /// The head's end is the first empty line (LF LF or LF CR LF),
            /// as a byte-by-byte search finds it.
            #[test]
            fn head_end_is_the_first_empty_line(
                buf in proptest::collection::vec(prop::sample::select(vec![b'a', b'\r', b'\n']), 0..40),
                from in 0usize..8,
            ) {
                let naive = (from..buf.len()).find_map(|i| match &buf[i..] {
                    [b'\n', b'\n', ..] => Some((i + 1, i + 2)),
                    [b'\n', b'\r', b'\n', ..] => Some((i + 1, i + 3)),
                    _ => None,
                });
                prop_assert_eq!(find_head_end(&buf, from), naive);
            }

            /// The fast header-value cleaner gives what the plain one does.
            #[test]
            fn header_values_clean_as_the_plain_way_does(
                value in proptest::collection::vec(prop_oneof![
                    4 => 0x20u8..0x7f,
                    1 => prop::sample::select(vec![b' ', b'\t', b'\r', b'\n', 0u8, 0xe4, 0xb8, 0xad, 0xff]),
                ], 0..64)
            ) {
                prop_assert_eq!(clean_wire_value(&value), clean_wire_value_slowly(&value));
            }

            #[test]
            fn parse_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..2048)) {
                let _ = Message::parse(&buf);
                let _ = salvage_for_error_response(&buf);
            }

            #[test]
            fn parse_never_panics_on_sip_like_input(
                (start, method) in prop::sample::select(vec![
                    ("INVITE sip:a@b SIP/2.0", "INVITE"),
                    ("SIP/2.0 200 OK", "INVITE"),
                    ("SIP/2.0 180 ", "BYE"),
                    ("MESSAGE  sip:[::1]:5060\tSIP/2.0", "MESSAGE"),
                ]),
                lines in proptest::collection::vec(
                    prop_oneof![
                        1 => "[ -~\t\r\x00\u{80}-\u{10FFFF}]{0,40}",
                        4 => ("[A-Za-z-]{1,12}", "[ -~\t\r\x00\u{80}-\u{FFFF}]{0,40}")
                            .prop_map(|(n, v)| format!("{n}:{v}")),
                        1 => "[ \t][ -~]{0,20}",
                        1 => "(l|Content-Length): *[0-9]{1,2}",
                    ],
                    0..12,
                ),
                sep in prop::sample::select(vec!["\r\n", "\n", "\r\n", "\n", "\r"]),
                body in proptest::collection::vec(any::<u8>(), 0..64),
            ) {
                let mut raw = format!(
                    "{start}{sep}Via: SIP/2.0/UDP h;branch=z9hG4bK1{sep}From: <sip:a@b>;tag=1{sep}To: <sip:a@b>{sep}Call-ID: x{sep}CSeq: 1 {method}{sep}"
                );
                for l in &lines { raw.push_str(l); raw.push_str(sep); }
                raw.push_str(sep);
                let mut raw = raw.into_bytes();
                raw.extend_from_slice(&body);
                if let Ok(msg) = Message::parse(&raw) {
                    // Serialising normalises once; after that it is a fixed point.
                    let once = msg.to_bytes();
                    let unlimited = ParseOptions { max_size: usize::MAX, ..Default::default() };
                    let reparsed = Message::parse_with(&once, &unlimited).unwrap();
                    prop_assert_eq!(reparsed.body(), msg.body());
                    prop_assert_eq!(&reparsed.to_bytes(), &once);
                }
                let _ = salvage_for_error_response(&raw);
            }

            #[test]
            fn request_round_trips(req in arb_request()) {
                let bytes = req.to_bytes();
                let parsed = Message::parse(&bytes).unwrap();
                let Message::Request(parsed) = parsed else { panic!("not a request") };
                prop_assert_eq!(&parsed.method, &req.method);
                prop_assert_eq!(&parsed.uri, &req.uri);
                prop_assert_eq!(&parsed.body, &req.body);
                let mut expected = req.headers.clone();
                expected.push("Content-Length", req.body.len().to_string());
                prop_assert_eq!(&parsed.headers, &expected);
                prop_assert_eq!(parsed.to_bytes(), bytes);
            }

            #[test]
            fn response_round_trips(req in arb_request(), status in 100u16..=699, tag in token()) {
                let mut resp = Response::to_request(&req, status, Some(&tag));
                resp.body = req.body.clone();
                let bytes = resp.to_bytes();
                let Message::Response(parsed) = Message::parse(&bytes).unwrap() else { panic!("not a response") };
                prop_assert_eq!(parsed.status, status);
                prop_assert_eq!(&parsed.reason, &resp.reason);
                prop_assert_eq!(&parsed.body, &resp.body);
                prop_assert_eq!(parsed.to_bytes(), bytes);
                let to = crate::sip::header::NameAddr::parse(parsed.headers.get("To").unwrap()).unwrap();
                prop_assert_eq!(to.tag(), Some(tag.as_str()));
            }
        }
    }
}
