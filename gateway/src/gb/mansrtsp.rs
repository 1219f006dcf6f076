//! MANSRTSP (`Application/MANSRTSP`) bodies: the RTSP-like playback control
//! commands of GB/T 28181 §9.8 and Annex B, carried in SIP INFO within a
//! playback (`s=Playback`) or download session. Pure parse and build, no I/O.
//!
//! What platforms send (WVP-GB28181-pro, ZLMediaKit-based platforms, NVRs):
//!
//! ```text
//! PLAY RTSP/1.0            resume            PAUSE RTSP/1.0
//! CSeq: 2                                    CSeq: 3
//! Range: npt=now-                            PauseTime: now
//!
//! PLAY RTSP/1.0            seek to 100 s     PLAY RTSP/1.0     speed ×2
//! CSeq: 4                                    CSeq: 5
//! Range: npt=100-                            Scale: 2.0
//!
//! TEARDOWN RTSP/1.0
//! CSeq: 6
//! ```
//!
//! The 2022 edition writes the protocol as `MANSRTSP/1.0`; both are read and
//! the one read is kept so an answer can mirror it.
//!
//! The parser is tolerant of what real senders do: LF-only line ends, header
//! names in any case, spaces around `:` and `=`, unknown headers, lines
//! without a colon, no final blank line, anything after the blank line, a
//! request URI between method and protocol, a `Range` without the `npt=`
//! unit. It is strict where a wrong guess would move the video: a `Range`,
//! `Scale` or `PauseTime` value it cannot read is an error, not ignored.
//! Bodies over [`MAX_BODY`] bytes are refused; no input makes it panic.

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::fmt::Write as _;

use thiserror::Error;

/// The SIP `Content-Type` of a MANSRTSP body.
pub const CONTENT_TYPE: &str = "Application/MANSRTSP";

/// Largest MANSRTSP body accepted, in bytes. Real ones are under 100.
pub const MAX_BODY: usize = 4096;

/// How much of a bad value an error message quotes.
const ERR_VALUE_CHARS: usize = 64;

/// Errors from [`parse`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MansRtspError {
    /// The body is larger than [`MAX_BODY`].
    #[error("MANSRTSP body of {0} bytes exceeds the {MAX_BODY}-byte limit")]
    TooLarge(usize),
    /// The body holds no request line (empty or blank).
    #[error("MANSRTSP body is empty")]
    Empty,
    /// The first line is not `METHOD [URI] RTSP/1.0` (or `MANSRTSP/1.0`).
    #[error("MANSRTSP request line {0:?} is not `METHOD RTSP/1.0`")]
    BadRequestLine(String),
    /// A method other than PLAY, PAUSE and TEARDOWN.
    #[error("MANSRTSP method {0:?} is not PLAY, PAUSE or TEARDOWN")]
    UnsupportedMethod(String),
    /// No `CSeq` header before the end of the headers.
    #[error("MANSRTSP request has no CSeq header")]
    MissingCSeq,
    /// A header the command depends on has a value that cannot be read.
    #[error("MANSRTSP header {name} has a bad value {value:?}")]
    BadHeader {
        /// The header: `CSeq`, `Range`, `Scale` or `PauseTime`.
        name: &'static str,
        /// The value as received (cut to 64 characters).
        value: String,
    },
}

/// The protocol token of the request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// `RTSP/1.0`: what GB/T 28181-2016 Annex B, WVP and most devices write.
    #[default]
    Rtsp,
    /// `MANSRTSP/1.0`: the wording of some GB/T 28181-2022 implementations.
    Mansrtsp,
}

impl Protocol {
    /// The token as written: `RTSP/1.0` or `MANSRTSP/1.0`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Rtsp => "RTSP/1.0",
            Protocol::Mansrtsp => "MANSRTSP/1.0",
        }
    }
}

/// A normal play time (RFC 2326 §3.6): `now` or seconds from the start of
/// the recording being played back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NptTime {
    /// `now`: the current position (resume where paused, pause at once).
    Now,
    /// Seconds from the start of the playback range, finite and `>= 0`.
    /// `hh:mm:ss[.frac]` is read too and converted; seconds are written.
    Seconds(f64),
}

/// A `Range: npt=START-[END]` value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NptRange {
    /// Where to play from: `now` (resume) or a position (seek).
    pub start: NptTime,
    /// Where to stop, in seconds, if given (rare in GB/T 28181).
    pub end: Option<f64>,
}

/// One playback control command.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MansRtspCommand {
    /// `PLAY`: resume (`Range: npt=now-` or no Range), seek
    /// (`Range: npt=100-`) and/or change speed (`Scale: 2.0`).
    Play {
        /// The `Range` header, if present.
        range: Option<NptRange>,
        /// The `Scale` header, if present: playback speed, 1.0 normal,
        /// 0.25..4 (and negative for reverse play) in the wild.
        scale: Option<f64>,
    },
    /// `PAUSE`: hold the playback clock.
    Pause {
        /// The `PauseTime` header, if present (`now` in practice).
        pause_time: Option<NptTime>,
    },
    /// `TEARDOWN`: end the playback (platforms normally send BYE instead).
    Teardown,
}

impl MansRtspCommand {
    /// The method name as written: `PLAY`, `PAUSE` or `TEARDOWN`.
    pub fn method(&self) -> &'static str {
        match self {
            MansRtspCommand::Play { .. } => "PLAY",
            MansRtspCommand::Pause { .. } => "PAUSE",
            MansRtspCommand::Teardown => "TEARDOWN",
        }
    }

    /// For a PLAY with `Range: npt=S-`, the position `S` in seconds to seek
    /// to; `None` for `npt=now-`, no Range, and other commands.
    pub fn seek_seconds(&self) -> Option<f64> {
        match self {
            MansRtspCommand::Play {
                range:
                    Some(NptRange {
                        start: NptTime::Seconds(s),
                        ..
                    }),
                ..
            } => Some(*s),
            _ => None,
        }
    }
}

/// A parsed MANSRTSP request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MansRtsp {
    /// The command and its parameters.
    pub command: MansRtspCommand,
    /// The `CSeq` header.
    pub cseq: u32,
    /// The protocol token of the request line.
    pub protocol: Protocol,
}

impl MansRtsp {
    /// `PLAY` with `Range: npt=now-`: resume after a pause.
    pub fn resume(cseq: u32) -> MansRtsp {
        MansRtsp::new(
            cseq,
            MansRtspCommand::Play {
                range: Some(NptRange {
                    start: NptTime::Now,
                    end: None,
                }),
                scale: None,
            },
        )
    }

    /// `PLAY` with `Range: npt=SECONDS-`: seek.
    pub fn seek(cseq: u32, seconds: f64) -> MansRtsp {
        MansRtsp::new(
            cseq,
            MansRtspCommand::Play {
                range: Some(NptRange {
                    start: NptTime::Seconds(seconds),
                    end: None,
                }),
                scale: None,
            },
        )
    }

    /// `PLAY` with `Scale: SCALE`: change playback speed.
    pub fn scale(cseq: u32, scale: f64) -> MansRtsp {
        MansRtsp::new(
            cseq,
            MansRtspCommand::Play {
                range: None,
                scale: Some(scale),
            },
        )
    }

    /// `PAUSE` with `PauseTime: now`.
    pub fn pause(cseq: u32) -> MansRtsp {
        MansRtsp::new(
            cseq,
            MansRtspCommand::Pause {
                pause_time: Some(NptTime::Now),
            },
        )
    }

    /// `TEARDOWN`.
    pub fn teardown(cseq: u32) -> MansRtsp {
        MansRtsp::new(cseq, MansRtspCommand::Teardown)
    }

    fn new(cseq: u32, command: MansRtspCommand) -> MansRtsp {
        MansRtsp {
            command,
            cseq,
            protocol: Protocol::Rtsp,
        }
    }

    /// The wire form: request line, `CSeq`, then `Scale`, `Range` or
    /// `PauseTime` as present, CRLF line ends and a final blank line, e.g.
    /// `"PLAY RTSP/1.0\r\nCSeq: 4\r\nScale: 2.0\r\n\r\n"`.
    ///
    /// Integral scales are written with one decimal (`2.0`, as WVP does),
    /// other numbers in their shortest exact form (`0.5`, `100`, `12.25`),
    /// so [`parse`] gives back the same values. Non-finite numbers are
    /// written as Rust prints them and do not parse back.
    pub fn to_body(&self) -> String {
        let mut s = String::with_capacity(64);
        // Writing to a String cannot fail.
        let _ = write!(
            s,
            "{} {}\r\nCSeq: {}\r\n",
            self.command.method(),
            self.protocol.as_str(),
            self.cseq
        );
        match self.command {
            MansRtspCommand::Play { range, scale } => {
                if let Some(v) = scale {
                    s.push_str("Scale: ");
                    write_scale(&mut s, v);
                    s.push_str("\r\n");
                }
                if let Some(r) = range {
                    s.push_str("Range: npt=");
                    write_npt(&mut s, r.start);
                    s.push('-');
                    if let Some(e) = r.end {
                        let _ = write!(s, "{e}");
                    }
                    s.push_str("\r\n");
                }
            }
            MansRtspCommand::Pause { pause_time } => {
                if let Some(t) = pause_time {
                    s.push_str("PauseTime: ");
                    write_npt(&mut s, t);
                    s.push_str("\r\n");
                }
            }
            MansRtspCommand::Teardown => {}
        }
        s.push_str("\r\n");
        s
    }
}

fn write_scale(s: &mut String, v: f64) {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(s, "{v:.1}");
    } else {
        let _ = write!(s, "{v}");
    }
}

fn write_npt(s: &mut String, t: NptTime) {
    match t {
        NptTime::Now => s.push_str("now"),
        NptTime::Seconds(v) => {
            let _ = write!(s, "{v}");
        }
    }
}

fn quote(v: &str) -> String {
    v.chars().take(ERR_VALUE_CHARS).collect()
}

fn bad(name: &'static str, value: &str) -> MansRtspError {
    MansRtspError::BadHeader {
        name,
        value: quote(value),
    }
}

/// A decimal number: optional sign (if `signed`), digits, optional fraction;
/// at least one digit; no exponent, `inf` or `NaN`. Finite by construction
/// except for absurdly long inputs, which the body limit rules out, but it
/// is checked anyway.
fn decimal(v: &str, signed: bool) -> Option<f64> {
    let digits = if signed {
        v.strip_prefix(['+', '-']).unwrap_or(v)
    } else {
        v
    };
    let mut parts = digits.splitn(2, '.');
    let int = parts.next().unwrap_or_default();
    let frac = parts.next().unwrap_or_default();
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.len() + frac.len() == 0 || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    v.strip_prefix('+')
        .unwrap_or(v)
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
}

/// `now`, seconds, or `hh:mm:ss[.frac]`.
fn npt_time(v: &str) -> Option<NptTime> {
    let v = v.trim();
    if v.eq_ignore_ascii_case("now") {
        return Some(NptTime::Now);
    }
    npt_seconds(v).map(NptTime::Seconds)
}

fn npt_seconds(v: &str) -> Option<f64> {
    let v = v.trim();
    let mut fields = v.split(':');
    let (a, b, c) = (fields.next(), fields.next(), fields.next());
    if fields.next().is_some() {
        return None;
    }
    match (a, b, c) {
        (Some(s), None, None) => decimal(s, false),
        (Some(h), Some(m), Some(s)) => {
            let whole = |p: &str| {
                (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| p.parse::<f64>().ok())
                    .flatten()
            };
            let (h, m, s) = (whole(h)?, whole(m)?, decimal(s, false)?);
            if m >= 60.0 || s >= 60.0 {
                return None;
            }
            Some(h * 3600.0 + m * 60.0 + s).filter(|x| x.is_finite())
        }
        _ => None,
    }
}

/// `npt=START-[END]`, unit optional, parameters after `;` ignored.
fn npt_range(v: &str) -> Option<NptRange> {
    let v = v.split(';').next().unwrap_or_default().trim();
    let spec = match v.split_once('=') {
        Some((unit, spec)) if unit.trim().eq_ignore_ascii_case("npt") => spec,
        Some(_) => return None,
        None => v,
    };
    let (start, end) = spec.split_once('-')?;
    let start = npt_time(start)?;
    let end = end.trim();
    let end = if end.is_empty() {
        None
    } else {
        Some(npt_seconds(end)?)
    };
    Some(NptRange { start, end })
}

/// Parses a MANSRTSP body (see the module documentation for what is
/// tolerated).
pub fn parse(body: &[u8]) -> Result<MansRtsp, MansRtspError> {
    if body.len() > MAX_BODY {
        return Err(MansRtspError::TooLarge(body.len()));
    }
    let text = String::from_utf8_lossy(body);
    // A byte-order mark counts as blank (some senders put one first).
    let mut lines = text
        .split('\n')
        .map(|l| l.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}'));
    let request = lines
        .by_ref()
        .find(|l| !l.is_empty())
        .ok_or(MansRtspError::Empty)?;

    let tokens: Vec<&str> = request.split_ascii_whitespace().collect();
    let (method, proto) = match tokens.as_slice() {
        [m] => (*m, None),
        [m, p] | [m, _, p] => (*m, Some(*p)),
        _ => return Err(MansRtspError::BadRequestLine(quote(request))),
    };
    let protocol = match proto {
        None => Protocol::Rtsp,
        Some(p) => {
            let p = p.to_ascii_uppercase();
            if p.starts_with("MANSRTSP/") {
                Protocol::Mansrtsp
            } else if p.starts_with("RTSP/") {
                Protocol::Rtsp
            } else {
                return Err(MansRtspError::BadRequestLine(quote(request)));
            }
        }
    };

    let (mut cseq, mut range, mut scale, mut pause) = (None, None, None, None);
    for line in lines {
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        // The first of a repeated header wins.
        let slot = if name.eq_ignore_ascii_case("CSeq") {
            &mut cseq
        } else if name.eq_ignore_ascii_case("Range") {
            &mut range
        } else if name.eq_ignore_ascii_case("Scale") {
            &mut scale
        } else if name.eq_ignore_ascii_case("PauseTime") {
            &mut pause
        } else {
            continue;
        };
        slot.get_or_insert(value);
    }

    let cseq = cseq.ok_or(MansRtspError::MissingCSeq)?;
    let cseq = cseq.parse::<u32>().map_err(|_| bad("CSeq", cseq))?;
    let command = if method.eq_ignore_ascii_case("PLAY") {
        MansRtspCommand::Play {
            range: range
                .map(|v| npt_range(v).ok_or_else(|| bad("Range", v)))
                .transpose()?,
            scale: scale
                .map(|v| decimal(v, true).ok_or_else(|| bad("Scale", v)))
                .transpose()?,
        }
    } else if method.eq_ignore_ascii_case("PAUSE") {
        MansRtspCommand::Pause {
            pause_time: pause
                .map(|v| npt_time(v).ok_or_else(|| bad("PauseTime", v)))
                .transpose()?,
        }
    } else if method.eq_ignore_ascii_case("TEARDOWN") {
        MansRtspCommand::Teardown
    } else {
        return Err(MansRtspError::UnsupportedMethod(quote(method)));
    };
    Ok(MansRtsp {
        command,
        cseq,
        protocol,
    })
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

    fn play(range: Option<NptRange>, scale: Option<f64>) -> MansRtspCommand {
        MansRtspCommand::Play { range, scale }
    }

    fn from(start: NptTime) -> Option<NptRange> {
        Some(NptRange { start, end: None })
    }

    #[test]
    fn builds_what_platforms_send() {
        assert_eq!(
            MansRtsp::resume(2).to_body(),
            "PLAY RTSP/1.0\r\nCSeq: 2\r\nRange: npt=now-\r\n\r\n"
        );
        assert_eq!(
            MansRtsp::pause(3).to_body(),
            "PAUSE RTSP/1.0\r\nCSeq: 3\r\nPauseTime: now\r\n\r\n"
        );
        assert_eq!(
            MansRtsp::scale(4, 2.0).to_body(),
            "PLAY RTSP/1.0\r\nCSeq: 4\r\nScale: 2.0\r\n\r\n"
        );
        assert_eq!(
            MansRtsp::scale(4, 0.5).to_body(),
            "PLAY RTSP/1.0\r\nCSeq: 4\r\nScale: 0.5\r\n\r\n"
        );
        assert_eq!(
            MansRtsp::seek(5, 100.0).to_body(),
            "PLAY RTSP/1.0\r\nCSeq: 5\r\nRange: npt=100-\r\n\r\n"
        );
        assert_eq!(
            MansRtsp::teardown(6).to_body(),
            "TEARDOWN RTSP/1.0\r\nCSeq: 6\r\n\r\n"
        );
        let both = MansRtsp {
            command: play(
                Some(NptRange {
                    start: NptTime::Seconds(12.5),
                    end: Some(30.0),
                }),
                Some(-1.0),
            ),
            cseq: 7,
            protocol: Protocol::Mansrtsp,
        };
        assert_eq!(
            both.to_body(),
            "PLAY MANSRTSP/1.0\r\nCSeq: 7\r\nScale: -1.0\r\nRange: npt=12.5-30\r\n\r\n"
        );
    }

    #[test]
    fn parses_what_platforms_send() {
        // WVP: no final blank line.
        let m = parse(b"PLAY RTSP/1.0\r\nCSeq: 2\r\nRange: npt=now-\r\n").unwrap();
        assert_eq!(m, MansRtsp::resume(2));
        assert_eq!(m.command.seek_seconds(), None);
        let m = parse(b"PAUSE RTSP/1.0\r\nCSeq: 3\r\nPauseTime: now").unwrap();
        assert_eq!(m, MansRtsp::pause(3));
        let m = parse(b"PLAY RTSP/1.0\r\nCSeq: 4\r\nScale: 2.0\r\n\r\n").unwrap();
        assert_eq!(m, MansRtsp::scale(4, 2.0));
        let m = parse(b"PLAY RTSP/1.0\r\nCSeq: 5\r\nRange: npt=100-\r\n\r\n").unwrap();
        assert_eq!(m, MansRtsp::seek(5, 100.0));
        assert_eq!(m.command.seek_seconds(), Some(100.0));
        let m = parse(b"TEARDOWN MANSRTSP/1.0\r\nCSeq: 6\r\n\r\n").unwrap();
        assert_eq!(m.command, MansRtspCommand::Teardown);
        assert_eq!(m.protocol, Protocol::Mansrtsp);
        // Scale and Range together, as some platforms send a seek.
        let m = parse(b"PLAY RTSP/1.0\r\nCSeq: 2\r\nScale: 1.0\r\nRange: npt=35.5-\r\n").unwrap();
        assert_eq!(m.command, play(from(NptTime::Seconds(35.5)), Some(1.0)));
    }

    #[test]
    fn tolerates_sloppy_senders() {
        let body = b"\r\n\xEF\xBB\xBFpause rtsp/1.0\nCSEQ : 9\nX-Junk: 1\nnot a header\n\
                     pausetime:NOW\n\nGARBAGE \xFF\xFE\x00 Range: npt=1-\n";
        let m = parse(body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.cseq, 9);
        assert_eq!(
            m.command,
            MansRtspCommand::Pause {
                pause_time: Some(NptTime::Now)
            }
        );
        // Request URI, spaces, no npt unit, a parameter, hh:mm:ss.
        let m = parse(
            b"PLAY rtsp://10.0.0.1/x RTSP/1.0\r\nCSeq:   11  \r\nRange:  01:02:03.5 - ;time=x\r\n",
        )
        .unwrap();
        assert_eq!(m.command, play(from(NptTime::Seconds(3723.5)), None));
        // No Range at all: plain resume.
        let m = parse(b"PLAY RTSP/1.0\r\nCSeq: 1\r\n").unwrap();
        assert_eq!(m.command, play(None, None));
        // No protocol token.
        let m = parse(b"TEARDOWN\r\nCSeq: 1\r\n").unwrap();
        assert_eq!(m.protocol, Protocol::Rtsp);
        // Garbage headers after the blank line are not read.
        let m = parse(b"PLAY RTSP/1.0\r\nCSeq: 1\r\n\r\nScale: nope\r\n").unwrap();
        assert_eq!(m.command, play(None, None));
        // First repeated header wins.
        let m = parse(b"PLAY RTSP/1.0\nCSeq: 1\nScale: 4\nScale: 8\n").unwrap();
        assert_eq!(m.command, play(None, Some(4.0)));
        // npt end.
        let m = parse(b"PLAY RTSP/1.0\nCSeq: 1\nRange: npt=10-20.5\n").unwrap();
        assert_eq!(
            m.command,
            play(
                Some(NptRange {
                    start: NptTime::Seconds(10.0),
                    end: Some(20.5)
                }),
                None
            )
        );
    }

    #[test]
    fn rejects_what_it_cannot_act_on() {
        assert_eq!(parse(b""), Err(MansRtspError::Empty));
        assert_eq!(parse(b"\r\n \r\n"), Err(MansRtspError::Empty));
        assert_eq!(
            parse(&vec![b'a'; MAX_BODY + 1]),
            Err(MansRtspError::TooLarge(MAX_BODY + 1))
        );
        assert_eq!(
            parse(b"PLAY RTSP/1.0\r\nRange: npt=now-\r\n"),
            Err(MansRtspError::MissingCSeq)
        );
        assert!(matches!(
            parse(b"OPTIONS RTSP/1.0\r\nCSeq: 1\r\n"),
            Err(MansRtspError::UnsupportedMethod(m)) if m == "OPTIONS"
        ));
        assert!(matches!(
            parse(b"PLAY HTTP/1.1\r\nCSeq: 1\r\n"),
            Err(MansRtspError::BadRequestLine(_))
        ));
        assert!(matches!(
            parse(b"PLAY a b RTSP/1.0\r\nCSeq: 1\r\n"),
            Err(MansRtspError::BadRequestLine(_))
        ));
        for (body, name) in [
            (&b"PLAY RTSP/1.0\r\nCSeq: x\r\n"[..], "CSeq"),
            (b"PLAY RTSP/1.0\r\nCSeq: -1\r\n", "CSeq"),
            (b"PLAY RTSP/1.0\r\nCSeq: 1\r\nScale: inf\r\n", "Scale"),
            (b"PLAY RTSP/1.0\r\nCSeq: 1\r\nScale: NaN\r\n", "Scale"),
            (b"PLAY RTSP/1.0\r\nCSeq: 1\r\nScale: 1e3\r\n", "Scale"),
            (b"PLAY RTSP/1.0\r\nCSeq: 1\r\nScale: .\r\n", "Scale"),
            (
                b"PLAY RTSP/1.0\r\nCSeq: 1\r\nRange: clock=20240101T000000Z-\r\n",
                "Range",
            ),
            (b"PLAY RTSP/1.0\r\nCSeq: 1\r\nRange: npt=-5\r\n", "Range"),
            (b"PLAY RTSP/1.0\r\nCSeq: 1\r\nRange: npt=-1-\r\n", "Range"),
            (
                b"PLAY RTSP/1.0\r\nCSeq: 1\r\nRange: npt=00:61:00-\r\n",
                "Range",
            ),
            (b"PLAY RTSP/1.0\r\nCSeq: 1\r\nRange: npt=now\r\n", "Range"),
            (
                b"PAUSE RTSP/1.0\r\nCSeq: 1\r\nPauseTime: later\r\n",
                "PauseTime",
            ),
        ] {
            match parse(body) {
                Err(MansRtspError::BadHeader { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
        // Bad values are quoted, but only so much of them.
        let long = format!("PLAY RTSP/1.0\r\nCSeq: 1\r\nScale: {}\r\n", "x".repeat(500));
        match parse(long.as_bytes()) {
            Err(MansRtspError::BadHeader { value, .. }) => assert_eq!(value.len(), 64),
            other => panic!("{other:?}"),
        }
    }

    fn arb_seconds() -> impl Strategy<Value = f64> {
        prop_oneof![(0u32..100_000).prop_map(f64::from), 0.0f64..1e9, Just(0.0)]
    }

    fn arb_npt() -> impl Strategy<Value = NptTime> {
        prop_oneof![Just(NptTime::Now), arb_seconds().prop_map(NptTime::Seconds)]
    }

    fn arb_command() -> impl Strategy<Value = MansRtspCommand> {
        let scale = prop_oneof![
            (-64i32..=64).prop_map(f64::from),
            -64.0f64..64.0,
            Just(0.25),
        ];
        let range = (arb_npt(), proptest::option::of(arb_seconds()))
            .prop_map(|(start, end)| NptRange { start, end });
        prop_oneof![
            (proptest::option::of(range), proptest::option::of(scale))
                .prop_map(|(range, scale)| MansRtspCommand::Play { range, scale }),
            proptest::option::of(arb_npt())
                .prop_map(|pause_time| MansRtspCommand::Pause { pause_time }),
            Just(MansRtspCommand::Teardown),
        ]
    }

    proptest! {
        #[test]
        fn build_parse_round_trip(
            command in arb_command(),
            cseq in any::<u32>(),
            mans in any::<bool>(),
            lf_only in any::<bool>(),
        ) {
            let protocol = if mans { Protocol::Mansrtsp } else { Protocol::Rtsp };
            let m = MansRtsp { command, cseq, protocol };
            let mut body = m.to_body();
            if lf_only {
                body = body.replace("\r\n", "\n");
            }
            prop_assert_eq!(parse(body.as_bytes()), Ok(m));
        }

        #[test]
        fn never_panics_on_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&data);
        }

        #[test]
        fn never_panics_on_near_misses(
            method in prop_oneof![
                Just("PLAY".to_owned()),
                Just("PAUSE".to_owned()),
                Just("TEARDOWN".to_owned()),
                "[A-Za-z]{0,8}",
            ],
            headers in proptest::collection::vec(
                (prop_oneof![
                    Just("CSeq".to_owned()),
                    Just("Range".to_owned()),
                    Just("Scale".to_owned()),
                    Just("PauseTime".to_owned()),
                    "[ -~]{0,6}",
                 ],
                 "[ -~]{0,24}"),
                0..6),
        ) {
            let mut body = format!("{method} RTSP/1.0\r\n");
            for (n, v) in headers {
                body.push_str(&format!("{n}:{v}\r\n"));
            }
            if let Ok(m) = parse(body.as_bytes()) {
                // Whatever parses must build and parse to itself.
                prop_assert_eq!(parse(m.to_body().as_bytes()), Ok(m));
            }
        }
    }
}
