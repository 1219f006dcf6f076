//! The GB/T 28181 SDP profile (`s=Play|Playback|Download|Talk`, `u=`, `y=`
//! SSRC, `f=` media description, `TCP/RTP/AVP` with `a=setup`).
//!
//! Hand-written because the SDP crates drop or reject `y=` and `f=`
//! (docs/crates.md §7). Parsing is tolerant: CRLF or LF, unknown lines and
//! attributes ignored, only the first media section is read.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Errors from [`GbSdp::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SdpError {
    /// A line the profile requires is absent.
    #[error("SDP has no {0} line")]
    Missing(&'static str),
    /// A line or attribute the profile reads has an unusable value.
    #[error("SDP line {line}: bad {field} in {text:?}")]
    Invalid {
        /// 1-based line number.
        line: usize,
        /// Which field was bad (e.g. "m= port").
        field: &'static str,
        /// The offending line.
        text: String,
    },
}

/// The session kind, from `s=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionKind {
    /// Live view.
    Play,
    /// Recording playback (`u=` and `t=` set).
    Playback,
    /// Recording download (Playback plus `a=downloadspeed`).
    Download,
    /// Voice broadcast / talk (2016).
    Talk,
    /// Anything else, kept as written.
    Other(String),
}

impl SessionKind {
    /// The `s=` text.
    pub fn as_str(&self) -> &str {
        match self {
            SessionKind::Play => "Play",
            SessionKind::Playback => "Playback",
            SessionKind::Download => "Download",
            SessionKind::Talk => "Talk",
            SessionKind::Other(s) => s,
        }
    }

    /// Reads `s=` (case-insensitive for the known kinds).
    pub fn from_text(s: &str) -> SessionKind {
        match s.to_ascii_lowercase().as_str() {
            "play" => SessionKind::Play,
            "playback" => SessionKind::Playback,
            "download" => SessionKind::Download,
            "talk" => SessionKind::Talk,
            _ => SessionKind::Other(s.to_string()),
        }
    }
}

/// The media kind of the `m=` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaKind {
    /// `m=video` (PS carries audio too).
    #[default]
    Video,
    /// `m=audio` (Talk).
    Audio,
}

/// RTP transport, from the `m=` protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaTransport {
    /// `RTP/AVP`.
    Udp,
    /// `TCP/RTP/AVP` (RFC 4571 framing).
    Tcp,
    /// `QUIC/RTP/AVP`: on the QUIC link the SIP came over, one
    /// unidirectional stream per GOP (gbgate nodes only; the port is 9 and
    /// means nothing).
    Quic,
}

/// Media direction attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendonly` (the media sender's answer).
    SendOnly,
    /// `a=recvonly` (the receiver's offer).
    RecvOnly,
    /// `a=sendrecv` (Talk; also the RFC 4566 default when absent).
    SendRecv,
}

/// `a=setup` (RFC 4145) for TCP media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// This side connects.
    Active,
    /// This side listens.
    Passive,
    /// Either.
    ActPass,
}

/// A GB/T 28181 session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GbSdp {
    /// `o=` username (the sender's 20-digit ID).
    pub origin_user: String,
    /// `o=` address.
    pub origin_addr: String,
    /// `s=`.
    pub session: SessionKind,
    /// `u=` (`<channelID>:0` for Playback/Download).
    pub uri: Option<String>,
    /// `c=IN IP4` address.
    pub conn_addr: String,
    /// `t=` start and stop (Unix seconds; `0 0` for live).
    pub time: (u64, u64),
    /// `m=` media kind.
    pub media: MediaKind,
    /// `m=` port.
    pub media_port: u16,
    /// `m=` protocol.
    pub transport: MediaTransport,
    /// Payload types in `m=` order with their `a=rtpmap` encoding
    /// (e.g. `"PS/90000"`; empty when there is no rtpmap).
    pub payloads: Vec<(u8, String)>,
    /// Media direction.
    pub direction: Direction,
    /// `a=setup`.
    pub setup: Option<Setup>,
    /// `a=connection:new`.
    pub connection_new: bool,
    /// `y=` as a number (the RTP SSRC); `None` if absent or not a u32.
    pub ssrc: Option<u32>,
    /// `y=` as written.
    pub ssrc_text: Option<String>,
    /// `f=` verbatim.
    pub f: Option<String>,
    /// `a=downloadspeed`.
    pub download_speed: Option<u32>,
    /// `a=filesize`.
    pub file_size: Option<u64>,
    /// `a=streamnumber` (2022: main/sub stream).
    pub stream_number: Option<u32>,
}

fn bad(line: usize, field: &'static str, text: &str) -> SdpError {
    SdpError::Invalid {
        line,
        field,
        text: text.to_string(),
    }
}

fn num<T: FromStr>(v: &str, line: usize, field: &'static str, text: &str) -> Result<T, SdpError> {
    v.trim().parse().map_err(|_| bad(line, field, text))
}

impl GbSdp {
    /// Parses a GB SDP body.
    pub fn parse(text: &str) -> Result<GbSdp, SdpError> {
        let mut origin = None;
        let mut session = None;
        let mut uri = None;
        let mut conn = None;
        let mut time = (0, 0);
        let mut media = None;
        let mut rtpmaps: Vec<(u8, String)> = Vec::new();
        let mut direction = None;
        let mut setup = None;
        let mut connection_new = false;
        let mut ssrc_text = None;
        let mut f = None;
        let mut download_speed = None;
        let mut file_size = None;
        let mut stream_number = None;
        // Attributes of a second media section are not ours.
        let mut other_section = false;

        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let l = raw.trim_end_matches('\r').trim_start();
            let Some((key, val)) = l.split_once('=') else {
                continue;
            };
            let key = key.trim();
            match key {
                "o" => {
                    let t: Vec<&str> = val.split_whitespace().collect();
                    match (t.first(), t.last()) {
                        (Some(u), Some(a)) if t.len() >= 2 => {
                            origin = Some((u.to_string(), a.to_string()))
                        }
                        _ => return Err(bad(n, "o= origin", l)),
                    }
                }
                "s" => session = Some(SessionKind::from_text(val.trim())),
                "u" => uri = Some(val.trim().to_string()),
                // The first c= wins (session level, or the media section's).
                "c" if conn.is_none() => {
                    let a = val.split_whitespace().last();
                    conn = Some(a.ok_or_else(|| bad(n, "c= address", l))?.to_string());
                }
                "t" => {
                    let mut t = val.split_whitespace();
                    let a = num(t.next().unwrap_or(""), n, "t= start", l)?;
                    let b = num(t.next().unwrap_or("0"), n, "t= stop", l)?;
                    time = (a, b);
                }
                "m" => {
                    if media.is_some() {
                        other_section = true;
                        continue;
                    }
                    media = Some(parse_m(val, n, l)?);
                }
                "a" if !other_section => {
                    let (name, value) = match val.split_once(':') {
                        Some((a, b)) => (a.trim(), b.trim()),
                        None => (val.trim(), ""),
                    };
                    match name.to_ascii_lowercase().as_str() {
                        "recvonly" => direction = Some(Direction::RecvOnly),
                        "sendonly" => direction = Some(Direction::SendOnly),
                        "sendrecv" => direction = Some(Direction::SendRecv),
                        "setup" => {
                            setup = match value.to_ascii_lowercase().as_str() {
                                "active" => Some(Setup::Active),
                                "passive" => Some(Setup::Passive),
                                "actpass" => Some(Setup::ActPass),
                                _ => return Err(bad(n, "a=setup", l)),
                            }
                        }
                        "connection" => connection_new = value.eq_ignore_ascii_case("new"),
                        "rtpmap" => {
                            let (pt, enc) = value.split_once(' ').unwrap_or((value, ""));
                            let pt: u8 = num(pt, n, "a=rtpmap payload type", l)?;
                            if pt > 127 {
                                return Err(bad(n, "a=rtpmap payload type", l));
                            }
                            rtpmaps.push((pt, enc.trim().to_string()));
                        }
                        "downloadspeed" => {
                            download_speed = Some(num(value, n, "a=downloadspeed", l)?)
                        }
                        "filesize" => file_size = Some(num(value, n, "a=filesize", l)?),
                        "streamnumber" => stream_number = Some(num(value, n, "a=streamnumber", l)?),
                        _ => {}
                    }
                }
                "y" => ssrc_text = Some(val.trim().to_string()),
                // Verbatim: empty fields are meaningful slashes.
                "f" => f = Some(val.trim_end().to_string()),
                _ => {}
            }
        }

        let (origin_user, origin_addr) = origin.ok_or(SdpError::Missing("o="))?;
        let (kind, media_port, transport, pts) = media.ok_or(SdpError::Missing("m="))?;
        let conn_addr = conn.ok_or(SdpError::Missing("c="))?;
        let mut payloads: Vec<(u8, String)> = pts.into_iter().map(|p| (p, String::new())).collect();
        for (pt, enc) in rtpmaps {
            match payloads.iter_mut().find(|(p, _)| *p == pt) {
                Some(slot) => slot.1 = enc,
                // An rtpmap for a PT missing from m=: keep it, devices do this.
                None => payloads.push((pt, enc)),
            }
        }
        // u32 parsing accepts leading zeros; 10 digits can exceed u32, in which
        // case only the text is kept.
        let ssrc = ssrc_text
            .as_deref()
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse().ok());

        Ok(GbSdp {
            origin_user,
            origin_addr,
            session: session.unwrap_or(SessionKind::Other(String::new())),
            uri,
            conn_addr,
            time,
            media: kind,
            media_port,
            transport,
            payloads,
            direction: direction.unwrap_or(Direction::SendRecv),
            setup,
            connection_new,
            ssrc,
            ssrc_text,
            f,
            download_speed,
            file_size,
            stream_number,
        })
    }

    /// True if the description offers MPEG-PS: an rtpmap encoding `PS`
    /// (any case), or PT 96 without an rtpmap (GB's default for 96).
    pub fn offers_ps(&self) -> bool {
        self.payloads.iter().any(|(pt, enc)| {
            let name = enc.split('/').next().unwrap_or("");
            name.eq_ignore_ascii_case("PS") || (*pt == 96 && enc.is_empty())
        })
    }
}

type MLine = (MediaKind, u16, MediaTransport, Vec<u8>);

fn parse_m(val: &str, n: usize, l: &str) -> Result<MLine, SdpError> {
    let mut t = val.split_whitespace();
    let kind = match t.next().map(str::to_ascii_lowercase).as_deref() {
        Some("audio") => MediaKind::Audio,
        Some(_) => MediaKind::Video,
        None => return Err(bad(n, "m= media", l)),
    };
    let port = num(t.next().unwrap_or(""), n, "m= port", l)?;
    let transport = match t.next().map(str::to_ascii_uppercase).as_deref() {
        Some("RTP/AVP") => MediaTransport::Udp,
        // RTP/AVP/TCP is a vendor spelling seen in the field.
        Some("TCP/RTP/AVP") | Some("RTP/AVP/TCP") => MediaTransport::Tcp,
        Some("QUIC/RTP/AVP") => MediaTransport::Quic,
        _ => return Err(bad(n, "m= protocol", l)),
    };
    let mut pts = Vec::new();
    for p in t {
        let pt: u8 = num(p, n, "m= payload type", l)?;
        if pt > 127 {
            return Err(bad(n, "m= payload type", l));
        }
        pts.push(pt);
    }
    Ok((kind, port, transport, pts))
}

impl fmt::Display for GbSdp {
    /// Canonical GB SDP, CRLF line ends, in the order of the doc §5 example.
    /// `y=` is written from `ssrc` as 10 zero-padded digits (from
    /// `ssrc_text` if only that is set).
    fn fmt(&self, w: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(w, "v=0\r\n")?;
        write!(
            w,
            "o={} 0 0 IN IP4 {}\r\n",
            self.origin_user, self.origin_addr
        )?;
        write!(w, "s={}\r\n", self.session.as_str())?;
        if let Some(u) = &self.uri {
            write!(w, "u={u}\r\n")?;
        }
        write!(w, "c=IN IP4 {}\r\n", self.conn_addr)?;
        write!(w, "t={} {}\r\n", self.time.0, self.time.1)?;
        let kind = match self.media {
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
        };
        let proto = match self.transport {
            MediaTransport::Udp => "RTP/AVP",
            MediaTransport::Tcp => "TCP/RTP/AVP",
            MediaTransport::Quic => "QUIC/RTP/AVP",
        };
        write!(w, "m={kind} {} {proto}", self.media_port)?;
        for (pt, _) in &self.payloads {
            write!(w, " {pt}")?;
        }
        write!(w, "\r\n")?;
        let dir = match self.direction {
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::SendRecv => "sendrecv",
        };
        write!(w, "a={dir}\r\n")?;
        for (pt, enc) in &self.payloads {
            if !enc.is_empty() {
                write!(w, "a=rtpmap:{pt} {enc}\r\n")?;
            }
        }
        if let Some(s) = self.setup {
            let s = match s {
                Setup::Active => "active",
                Setup::Passive => "passive",
                Setup::ActPass => "actpass",
            };
            write!(w, "a=setup:{s}\r\n")?;
        }
        if self.connection_new {
            write!(w, "a=connection:new\r\n")?;
        }
        if let Some(v) = self.download_speed {
            write!(w, "a=downloadspeed:{v}\r\n")?;
        }
        if let Some(v) = self.file_size {
            write!(w, "a=filesize:{v}\r\n")?;
        }
        if let Some(v) = self.stream_number {
            write!(w, "a=streamnumber:{v}\r\n")?;
        }
        match (self.ssrc, &self.ssrc_text) {
            (Some(s), _) => write!(w, "y={s:010}\r\n")?,
            (None, Some(t)) => write!(w, "y={t}\r\n")?,
            (None, None) => {}
        }
        if let Some(f) = &self.f {
            write!(w, "f={f}\r\n")?;
        }
        Ok(())
    }
}

/// Builds a `y=` SSRC per GB/T 28181 §5: digit 1 is `0` live / `1` history,
/// digits 2–6 are digits 4–8 of the 10-digit SIP domain, digits 7–10 the
/// per-domain sequence (`seq % 10000`). Returns the numeric SSRC and its
/// 10-digit text. A short or non-numeric domain contributes `0` for each
/// missing digit rather than failing, since the SSRC must still be unique
/// per sequence.
pub fn ssrc_for(live: bool, domain: &str, seq: u16) -> (u32, String) {
    let mut text = String::with_capacity(10);
    text.push(if live { '0' } else { '1' });
    let digits = domain.as_bytes();
    for i in 3..8 {
        let c = digits
            .get(i)
            .copied()
            .filter(u8::is_ascii_digit)
            .unwrap_or(b'0');
        text.push(char::from(c));
    }
    text.push_str(&format!("{:04}", seq % 10000));
    // At most 1_999_999_999 < u32::MAX.
    let value = text.parse().unwrap_or(0);
    (value, text)
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DOC: &str = "v=0\r\n\
o=35010200002000000003 0 0 IN IP4 10.0.0.5\r\n\
s=Play\r\n\
c=IN IP4 10.0.0.5\r\n\
t=0 0\r\n\
m=video 30002 TCP/RTP/AVP 96 98 99\r\n\
a=recvonly\r\n\
a=rtpmap:96 PS/90000\r\n\
a=rtpmap:98 H264/90000\r\n\
a=rtpmap:99 H265/90000\r\n\
a=setup:passive\r\n\
a=connection:new\r\n\
y=0102000001\r\n\
f=v/2/5/25/1/4096a/1/8/1\r\n";

    #[test]
    fn doc_example() {
        let s = GbSdp::parse(DOC).unwrap();
        assert_eq!(s.origin_user, "35010200002000000003");
        assert_eq!(s.origin_addr, "10.0.0.5");
        assert_eq!(s.session, SessionKind::Play);
        assert_eq!(s.conn_addr, "10.0.0.5");
        assert_eq!(s.time, (0, 0));
        assert_eq!(s.media, MediaKind::Video);
        assert_eq!(s.media_port, 30002);
        assert_eq!(s.transport, MediaTransport::Tcp);
        assert_eq!(
            s.payloads,
            vec![
                (96, "PS/90000".to_string()),
                (98, "H264/90000".to_string()),
                (99, "H265/90000".to_string())
            ]
        );
        assert_eq!(s.direction, Direction::RecvOnly);
        assert_eq!(s.setup, Some(Setup::Passive));
        assert!(s.connection_new);
        assert_eq!(s.ssrc, Some(102_000_001));
        assert_eq!(s.ssrc_text.as_deref(), Some("0102000001"));
        assert_eq!(s.f.as_deref(), Some("v/2/5/25/1/4096a/1/8/1"));
        assert!(s.offers_ps());
        // Canonical output of the doc example is the doc example.
        assert_eq!(s.to_string(), DOC);
        // LF-only works the same.
        assert_eq!(GbSdp::parse(&DOC.replace("\r\n", "\n")).unwrap(), s);
    }

    #[test]
    fn playback_offer() {
        let t = "v=0\no=34020000002000000001 0 0 IN IP4 192.168.1.2\ns=Playback\n\
u=34020000001320000001:0\nc=IN IP4 192.168.1.2\nt=1700000000 1700003600\n\
m=video 6000 RTP/AVP 96\na=recvonly\na=rtpmap:96 PS/90000\na=downloadspeed:4\n\
a=streamnumber:1\nx=unknown\ny=1102000007\n";
        let s = GbSdp::parse(t).unwrap();
        assert_eq!(s.session, SessionKind::Playback);
        assert_eq!(s.uri.as_deref(), Some("34020000001320000001:0"));
        assert_eq!(s.time, (1_700_000_000, 1_700_003_600));
        assert_eq!(s.transport, MediaTransport::Udp);
        assert_eq!(s.download_speed, Some(4));
        assert_eq!(s.stream_number, Some(1));
        assert_eq!(s.ssrc, Some(1_102_000_007));
        assert_eq!(s.f, None);
        assert!(!s.to_string().contains("f="));
        assert_eq!(GbSdp::parse(&s.to_string()).unwrap(), s);
    }

    #[test]
    fn udp_answer_sendonly() {
        let t = "v=0\r\no=34020000001320000001 0 0 IN IP4 192.168.1.64\r\ns=Play\r\n\
c=IN IP4 192.168.1.64\r\nt=0 0\r\nm=video 15060 RTP/AVP 96\r\na=sendonly\r\n\
a=rtpmap:96 PS/90000\r\na=filesize:123456789\r\ny=0100000001\r\nf=\r\n";
        let s = GbSdp::parse(t).unwrap();
        assert_eq!(s.direction, Direction::SendOnly);
        assert_eq!(s.transport, MediaTransport::Udp);
        assert_eq!(s.media_port, 15060);
        assert_eq!(s.setup, None);
        assert_eq!(s.file_size, Some(123_456_789));
        assert_eq!(s.ssrc, Some(100_000_001));
        assert_eq!(s.f.as_deref(), Some(""));
    }

    #[test]
    fn tolerant_and_errors() {
        // No rtpmap: PT 96 still means PS; rtpmap for a PT not in m= kept.
        let t = "o=a 0 0 IN IP4 1.2.3.4\nc=IN IP4 1.2.3.4\nm=video 1 RTP/AVP/TCP 96\n\
a=rtpmap:8 PCMA/8000\ny=9999999999\nm=audio 2 RTP/AVP 0\na=sendonly\n";
        let s = GbSdp::parse(t).unwrap();
        assert!(s.offers_ps());
        assert_eq!(s.transport, MediaTransport::Tcp);
        assert_eq!(
            s.payloads,
            vec![(96, String::new()), (8, "PCMA/8000".into())]
        );
        assert_eq!(s.direction, Direction::SendRecv);
        assert_eq!(s.ssrc, None);
        assert_eq!(s.ssrc_text.as_deref(), Some("9999999999"));
        assert_eq!(s.session, SessionKind::Other(String::new()));

        let no96 = "o=a 0 0 IN IP4 1.2.3.4\nc=IN IP4 1.2.3.4\nm=video 1 RTP/AVP 98\n\
a=rtpmap:98 H264/90000\n";
        assert!(!GbSdp::parse(no96).unwrap().offers_ps());
        let ps_lower = no96.replace("H264", "ps");
        assert!(GbSdp::parse(&ps_lower).unwrap().offers_ps());

        assert_eq!(GbSdp::parse(""), Err(SdpError::Missing("o=")));
        assert!(matches!(
            GbSdp::parse("o=a 0 0 IN IP4 x\nc=IN IP4 x\nm=video 99999 RTP/AVP 96\n"),
            Err(SdpError::Invalid {
                line: 3,
                field: "m= port",
                ..
            })
        ));
        assert!(matches!(
            GbSdp::parse("o=a 0 0 IN IP4 x\nc=IN IP4 x\nm=video 9 SCTP 96\n"),
            Err(SdpError::Invalid {
                field: "m= protocol",
                ..
            })
        ));
    }

    #[test]
    fn ssrc_vectors() {
        assert_eq!(
            ssrc_for(true, "3501020000", 1),
            (102_000_001, "0102000001".to_string())
        );
        assert_eq!(
            ssrc_for(false, "3402000000", 9999),
            (1_200_009_999, "1200009999".to_string())
        );
        assert_eq!(ssrc_for(true, "3501020000", 10_001).1, "0102000001");
        assert_eq!(
            ssrc_for(false, "35", 7),
            (1_000_000_007, "1000000007".into())
        );
    }

    fn token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9.:_-]{1,20}"
    }

    fn arb_sdp() -> impl Strategy<Value = GbSdp> {
        let session = prop_oneof![
            Just(SessionKind::Play),
            Just(SessionKind::Playback),
            Just(SessionKind::Download),
            Just(SessionKind::Talk),
            "[A-Za-z]{1,12}"
                .prop_filter("known kind", |s| {
                    !matches!(
                        s.to_ascii_lowercase().as_str(),
                        "play" | "playback" | "download" | "talk"
                    )
                })
                .prop_map(SessionKind::Other),
        ];
        let payloads =
            prop::collection::btree_map(0u8..128, "([A-Za-z0-9]{1,10}/[0-9]{4,5})?", 1..5)
                .prop_map(|m| m.into_iter().collect::<Vec<_>>());
        (
            (
                token(),
                token(),
                session,
                prop::option::of(token()),
                token(),
            ),
            (
                any::<(u64, u64)>(),
                any::<bool>(),
                any::<u16>(),
                any::<bool>(),
                payloads,
            ),
            (
                prop_oneof![
                    Just(Direction::SendOnly),
                    Just(Direction::RecvOnly),
                    Just(Direction::SendRecv)
                ],
                prop::option::of(prop_oneof![
                    Just(Setup::Active),
                    Just(Setup::Passive),
                    Just(Setup::ActPass)
                ]),
                any::<bool>(),
                prop::option::of(any::<u32>()),
                prop::option::of("[av0-9/]{0,30}"),
            ),
            (
                prop::option::of(any::<u32>()),
                prop::option::of(any::<u64>()),
                prop::option::of(any::<u32>()),
            ),
        )
            .prop_map(|(a, b, c, d)| GbSdp {
                origin_user: a.0,
                origin_addr: a.1,
                session: a.2,
                uri: a.3,
                conn_addr: a.4,
                time: b.0,
                media: if b.1 {
                    MediaKind::Audio
                } else {
                    MediaKind::Video
                },
                media_port: b.2,
                transport: if b.3 {
                    MediaTransport::Tcp
                } else {
                    MediaTransport::Udp
                },
                payloads: b.4,
                direction: c.0,
                setup: c.1,
                connection_new: c.2,
                ssrc: c.3,
                ssrc_text: c.3.map(|s| format!("{s:010}")),
                f: c.4,
                download_speed: d.0,
                file_size: d.1,
                stream_number: d.2,
            })
    }

    proptest! {
        #[test]
        fn round_trip(s in arb_sdp()) {
            let text = s.to_string();
            prop_assert_eq!(GbSdp::parse(&text).unwrap(), s.clone());
            prop_assert_eq!(GbSdp::parse(&text.replace("\r\n", "\n")).unwrap(), s);
        }

        #[test]
        fn parse_never_panics(t in "(([a-z]=[ -~]{0,30})?\r?\n){0,20}") {
            let _ = GbSdp::parse(&t);
        }
    }
}
