//! Cutting SIP messages out of a byte stream (TCP, QUIC), RFC 3261 §18.3.
//!
//! Check-then-parse, in the style of mini-redis: bytes accumulate in a
//! buffer; once the empty line ending a header section is present, the
//! Content-Length header (mandatory on streams, compact `l:` accepted) says
//! how long the frame is; once all of it is buffered it is split off as one
//! [`Bytes`] and handed to [`Message::parse_bytes_with`].
//!
//! Framing and parsing are deliberately separate: a message whose frame
//! boundaries are known but whose content is bad is consumed and reported as
//! [`FrameError::Malformed`], so the connection survives and the caller can
//! answer 400. Only errors that lose the frame boundary are fatal.
//!
//! Wrong Content-Length values: if it is *larger* than the real body, the
//! framer simply waits for more bytes (the next message's bytes become this
//! body); the caller's idle/read timeout ends such a stall. If it is
//! *smaller*, the leftover body bytes are glued in front of the next message,
//! which then fails to parse and is reported as `Malformed` (or, if the
//! leftover itself contains an empty line, as a fatal missing
//! Content-Length). Either way the stream cannot be resynchronised reliably,
//! which is why the sender must get it right.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use bytes::{Buf, Bytes, BytesMut};

use crate::sip::message::{
    content_length_of, find_head_end, leading_crlf, raw_content_lengths, Message, ParseError,
    ParseOptions,
};

/// Why the framer could not produce a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A complete frame was cut but its content does not parse. The frame
    /// has been consumed; the stream is still in sync. Not fatal.
    #[error("malformed {}-byte message skipped: {error}", raw.len())]
    Malformed {
        /// The frame's bytes (head and body), e.g. for
        /// [`salvage_for_error_response`](crate::sip::message::salvage_for_error_response).
        raw: Bytes,
        /// Why it did not parse.
        error: ParseError,
    },
    /// More than `max` bytes arrived without an empty line ending the
    /// header section. Fatal.
    #[error("header section exceeds {max} bytes without an empty line")]
    HeadTooLarge {
        /// Configured message size limit.
        max: usize,
    },
    /// The header section plus the declared body exceed `max`. Fatal.
    #[error("Content-Length {declared} makes the message exceed the {max}-byte limit")]
    BodyTooLarge {
        /// Declared body length.
        declared: usize,
        /// Configured message size limit.
        max: usize,
    },
    /// The header section has no Content-Length, which streams require
    /// (RFC 3261 §18.3). Fatal: the end of the body is unknown.
    #[error("missing Content-Length header (mandatory on stream transports)")]
    MissingContentLength,
    /// Content-Length is not a number, or two of them disagree. Fatal.
    #[error("invalid Content-Length {value:?} on a stream")]
    ContentLength {
        /// The offending value(s).
        value: String,
    },
}

impl FrameError {
    /// True if the stream can no longer be framed and the connection must
    /// be closed. [`FrameError::Malformed`] is the only non-fatal error.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, FrameError::Malformed { .. })
    }
}

/// Reassembles SIP messages from stream chunks.
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    opts: ParseOptions,
    /// Offset from which to resume searching for the end of the header
    /// section, so byte-by-byte input is not rescanned quadratically.
    scanned: usize,
    /// Total length of the frame at the front, once its head is known.
    pending: Option<usize>,
    /// A fatal error is sticky: the stream position is lost for good.
    fatal: Option<FrameError>,
}

impl StreamFramer {
    /// A framer that accepts messages (head plus body) of up to
    /// `max_message` bytes; typically [`MAX_MESSAGE_SIZE`](crate::sip::message::MAX_MESSAGE_SIZE).
    pub fn new(max_message: usize) -> Self {
        Self::with_options(ParseOptions {
            max_size: max_message,
            ..ParseOptions::default()
        })
    }

    /// A framer using `opts` for parsing; `opts.max_size` is the frame limit.
    pub fn with_options(opts: ParseOptions) -> Self {
        Self {
            buf: BytesMut::new(),
            opts,
            scanned: 0,
            pending: None,
            fatal: None,
        }
    }

    /// Append bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Number of bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Next complete message, `Ok(None)` if more bytes are needed. Leading
    /// CR/LF bytes (RFC 5626 keepalive pings `\r\n\r\n` and pongs `\r\n`)
    /// are skipped.
    ///
    /// A message whose framing is known but whose content is malformed is
    /// consumed and returned as [`FrameError::Malformed`]; call again to
    /// continue. Errors with [`FrameError::is_fatal`] mean the connection
    /// must be closed; once one is returned, every later call returns it
    /// again.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        if let Some(fatal) = &self.fatal {
            return Err(fatal.clone());
        }
        let total = match self.pending {
            Some(total) => total,
            None => match self.frame_length() {
                Ok(Some(total)) => {
                    self.pending = Some(total);
                    total
                }
                Ok(None) => return Ok(None),
                Err(fatal) => {
                    self.fatal = Some(fatal.clone());
                    return Err(fatal);
                }
            },
        };
        if self.buf.len() < total {
            return Ok(None);
        }
        let frame = self.buf.split_to(total).freeze();
        self.pending = None;
        self.scanned = 0;
        match Message::parse_bytes_with(&frame, &self.opts) {
            Ok(msg) => Ok(Some(msg)),
            Err(error) => Err(FrameError::Malformed { raw: frame, error }),
        }
    }

    /// Skip keepalive CR/LFs, then work out the length of the frame at the
    /// front of the buffer if its header section is complete.
    fn frame_length(&mut self) -> Result<Option<usize>, FrameError> {
        let skip = leading_crlf(&self.buf);
        if skip > 0 {
            self.buf.advance(skip);
            self.scanned = self.scanned.saturating_sub(skip);
        }
        let max = self.opts.max_size;
        let Some((head_len, body_start)) = find_head_end(&self.buf, self.scanned) else {
            if self.buf.len() > max {
                return Err(FrameError::HeadTooLarge { max });
            }
            // The terminator may straddle the end of the buffer: resume a
            // few bytes back.
            self.scanned = self.buf.len().saturating_sub(3);
            return Ok(None);
        };
        if body_start > max {
            return Err(FrameError::HeadTooLarge { max });
        }
        let head = self.buf.get(..head_len).unwrap_or_default();
        let declared = content_length_of(raw_content_lengths(head).iter().map(String::as_str))
            .map_err(|value| FrameError::ContentLength { value })?
            .ok_or(FrameError::MissingContentLength)?;
        match body_start.checked_add(declared) {
            Some(total) if total <= max => Ok(Some(total)),
            _ => Err(FrameError::BodyTooLarge { declared, max }),
        }
    }
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
    use crate::sip::message::{Method, Request, MAX_MESSAGE_SIZE};

    fn request(seq: u32, body: &[u8]) -> Request {
        let mut r = Request::new(Method::Message, "sip:34020000002000000001@3402000000");
        r.headers.push(
            "Via",
            format!("SIP/2.0/TCP 10.0.0.2:5060;rport;branch=z9hG4bK{seq}"),
        );
        r.headers
            .push("From", "<sip:34020000001320000001@3402000000>;tag=1");
        r.headers
            .push("To", "<sip:34020000002000000001@3402000000>");
        r.headers.push("Call-ID", format!("call-{seq}"));
        r.headers.push("CSeq", format!("{seq} MESSAGE"));
        r.headers.push("Content-Type", "Application/MANSCDP+xml");
        r.body = Bytes::copy_from_slice(body);
        r
    }

    fn drain(framer: &mut StreamFramer) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(m) = framer.next_message().unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn two_messages_in_one_push() {
        let a = request(1, b"<Notify>\xC9\xE3</Notify>");
        let b = request(2, b"");
        let mut wire = a.to_bytes().to_vec();
        wire.extend_from_slice(&b.to_bytes());
        let mut f = StreamFramer::new(MAX_MESSAGE_SIZE);
        f.push(&wire);
        let got = drain(&mut f);
        assert_eq!(
            got,
            vec![Message::from(parsed(&a)), Message::from(parsed(&b))]
        );
        assert_eq!(f.buffered(), 0);
    }

    /// `req` as it looks after a round trip (Content-Length added).
    fn parsed(req: &Request) -> Request {
        match Message::parse(&req.to_bytes()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => panic!(),
        }
    }

    #[test]
    fn one_message_byte_by_byte_with_pings() {
        let a = request(7, b"0123456789");
        let mut wire = b"\r\n\r\n".to_vec();
        wire.extend_from_slice(&a.to_bytes());
        wire.extend_from_slice(b"\r\n\r\n\r\n");
        let mut f = StreamFramer::new(MAX_MESSAGE_SIZE);
        let mut got = Vec::new();
        for byte in &wire {
            f.push(std::slice::from_ref(byte));
            got.extend(drain(&mut f));
        }
        assert_eq!(got, vec![Message::from(parsed(&a))]);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn truncated_message_waits() {
        let wire = request(3, b"body").to_bytes();
        let mut f = StreamFramer::new(MAX_MESSAGE_SIZE);
        f.push(&wire[..wire.len() - 1]);
        assert_eq!(f.next_message(), Ok(None));
        assert_eq!(f.next_message(), Ok(None));
        f.push(&wire[wire.len() - 1..]);
        assert!(f.next_message().unwrap().is_some());
    }

    #[test]
    fn content_length_too_big_waits_then_absorbs_next() {
        let mut wire = request(1, b"abc").to_bytes().to_vec();
        let pos = find(&wire, b"Content-Length: 3").unwrap();
        wire[pos + 16] = b'9';
        let mut f = StreamFramer::new(MAX_MESSAGE_SIZE);
        f.push(&wire);
        // Declares 9 bytes, has 3: the framer waits.
        assert_eq!(f.next_message(), Ok(None));
        f.push(b"XYZ123");
        let m = f.next_message().unwrap().unwrap();
        assert_eq!(&m.body()[..], b"abcXYZ123");
    }

    #[test]
    fn content_length_too_small_makes_next_malformed_then_recovers() {
        let mut first = request(1, b"abcdef").to_bytes().to_vec();
        let pos = find(&first, b"Content-Length: 6").unwrap();
        first[pos + 16] = b'2';
        let mut wire = first;
        wire.extend_from_slice(&request(2, b"").to_bytes());
        wire.extend_from_slice(&request(3, b"ok").to_bytes());
        let mut f = StreamFramer::new(MAX_MESSAGE_SIZE);
        f.push(&wire);
        assert_eq!(f.next_message().unwrap().unwrap().body().as_ref(), b"ab");
        let err = f.next_message().unwrap_err();
        assert!(!err.is_fatal());
        let FrameError::Malformed { raw, error } = err else {
            panic!()
        };
        assert!(raw.starts_with(b"cdefMESSAGE"));
        // "cdefMESSAGE" is a valid method token, so what fails is the CSeq
        // method check; any parse error will do.
        assert!(
            matches!(error, ParseError::InvalidHeader { name: "CSeq", .. }),
            "{error}"
        );
        let third = f.next_message().unwrap().unwrap();
        assert_eq!(third.call_id(), Some("call-3"));
    }

    #[test]
    fn malformed_but_framed_is_not_fatal() {
        let mut f = StreamFramer::new(MAX_MESSAGE_SIZE);
        f.push(b"INVITE sip:x SIP/2.0\r\nl: 3\r\nBad Header Line\r\n\r\nabc");
        f.push(&request(5, b"").to_bytes());
        let err = f.next_message().unwrap_err();
        assert!(matches!(
            err,
            FrameError::Malformed {
                error: ParseError::Header { line: 3, .. },
                ..
            }
        ));
        assert!(f.next_message().unwrap().is_some());
    }

    #[test]
    fn missing_and_invalid_content_length_are_fatal_and_sticky() {
        let mut f = StreamFramer::new(MAX_MESSAGE_SIZE);
        f.push(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\r\n");
        let err = f.next_message().unwrap_err();
        assert_eq!(err, FrameError::MissingContentLength);
        assert!(err.is_fatal());
        f.push(&request(1, b"").to_bytes());
        assert_eq!(
            f.next_message().unwrap_err(),
            FrameError::MissingContentLength
        );

        let mut f = StreamFramer::new(MAX_MESSAGE_SIZE);
        f.push(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n");
        assert!(matches!(
            f.next_message(),
            Err(FrameError::ContentLength { .. })
        ));
        let mut f = StreamFramer::new(MAX_MESSAGE_SIZE);
        f.push(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\n");
        assert!(matches!(
            f.next_message(),
            Err(FrameError::ContentLength { .. })
        ));
    }

    #[test]
    fn huge_header_is_fatal() {
        let mut f = StreamFramer::new(MAX_MESSAGE_SIZE);
        f.push(b"MESSAGE sip:x SIP/2.0\r\nX-Big: ");
        let chunk = vec![b'a'; 10 * 1024];
        let mut result = Ok(None);
        for _ in 0..10 {
            f.push(&chunk);
            result = f.next_message();
            if result.is_err() {
                break;
            }
        }
        assert_eq!(
            result,
            Err(FrameError::HeadTooLarge {
                max: MAX_MESSAGE_SIZE
            })
        );
        assert!(result.unwrap_err().is_fatal());
    }

    #[test]
    fn big_body_is_fatal() {
        let mut f = StreamFramer::new(1000);
        f.push(b"MESSAGE sip:x SIP/2.0\r\nContent-Length: 5000\r\n\r\n");
        assert_eq!(
            f.next_message(),
            Err(FrameError::BodyTooLarge {
                declared: 5000,
                max: 1000
            })
        );
        let mut f = StreamFramer::new(1000);
        f.push(b"MESSAGE sip:x SIP/2.0\r\nContent-Length: 99999999999999999999\r\n\r\n");
        assert!(f.next_message().unwrap_err().is_fatal());
    }

    #[test]
    fn binary_garbage_ends_fatal_never_panics() {
        let mut f = StreamFramer::new(4096);
        let mut state = 0x1234_5678u32;
        let mut outcome = Ok(None);
        for _ in 0..100 {
            let chunk: Vec<u8> = (0..97)
                .map(|_| {
                    state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    // Avoid LF so no header-section end can appear.
                    ((state >> 16) as u8) | 0x80
                })
                .collect();
            f.push(&chunk);
            outcome = f.next_message();
            if outcome.is_err() {
                break;
            }
        }
        assert_eq!(outcome, Err(FrameError::HeadTooLarge { max: 4096 }));
    }

    /// Everything a framer yields for `pieces` pushed one by one, up to and
    /// including the first fatal error.
    fn outcomes(pieces: &[&[u8]], max: usize) -> Vec<Result<Message, FrameError>> {
        let mut f = StreamFramer::new(max);
        let mut out = Vec::new();
        for piece in pieces {
            f.push(piece);
            loop {
                match f.next_message() {
                    Ok(None) => break,
                    Err(e) if e.is_fatal() => {
                        out.push(Err(e));
                        return out;
                    }
                    Ok(Some(m)) => out.push(Ok(m)),
                    Err(e) => out.push(Err(e)),
                }
            }
        }
        out
    }

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn split_anywhere_yields_same_messages(
                bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..5),
                pings in proptest::collection::vec(0usize..3, 5),
                cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
            ) {
                let mut wire = Vec::new();
                let mut expected = Vec::new();
                for (i, body) in bodies.iter().enumerate() {
                    wire.extend(std::iter::repeat_n(b"\r\n".as_slice(), pings[i % pings.len()]).flatten());
                    let req = request(i as u32, body);
                    wire.extend_from_slice(&req.to_bytes());
                    expected.push(Message::from(parsed(&req)));
                }
                let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
                cuts.push(0);
                cuts.push(wire.len());
                cuts.sort_unstable();
                let mut f = StreamFramer::new(MAX_MESSAGE_SIZE);
                let mut got = Vec::new();
                for pair in cuts.windows(2) {
                    f.push(&wire[pair[0]..pair[1]]);
                    got.extend(drain(&mut f));
                }
                prop_assert_eq!(got, expected);
                prop_assert_eq!(f.buffered(), 0);
            }

            /// Framing decisions do not depend on how the bytes were chunked,
            /// for valid, malformed and unframeable input alike.
            #[test]
            fn chunking_does_not_change_outcomes(
                parts in proptest::collection::vec(prop::sample::select(vec![
                    "INVITE sip:a@b SIP/2.0\r\n", "SIP/2.0 200 OK\r\n", "Content-Length: 3\r\n", "l: 0\r\n",
                    "Via: SIP/2.0/TCP h;branch=z9hG4bK1\r\n", "From: <sip:a@b>;tag=1\r\n", "To: <sip:a@b>\r\n",
                    "Call-ID: 1\r\n", "CSeq: 1 INVITE\r\n", "\r\n", "\n", "abc", " folded\r\n", "\r",
                ]), 0..60),
                cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..30),
                max in 64usize..1024,
            ) {
                let wire = parts.concat().into_bytes();
                let whole = outcomes(&[&wire[..]], max);
                let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
                cuts.push(0);
                cuts.push(wire.len());
                cuts.sort_unstable();
                let pieces: Vec<&[u8]> = cuts.windows(2).map(|w| &wire[w[0]..w[1]]).collect();
                prop_assert_eq!(outcomes(&pieces, max), whole);
            }

            #[test]
            fn arbitrary_chunks_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20)) {
                let mut f = StreamFramer::new(1024);
                for chunk in &chunks {
                    f.push(chunk);
                    loop {
                        match f.next_message() {
                            Ok(Some(_)) | Err(FrameError::Malformed { .. }) => continue,
                            Ok(None) => break,
                            Err(e) => { prop_assert!(e.is_fatal()); break; }
                        }
                    }
                }
            }

            #[test]
            fn sip_like_chunks_never_panic(
                parts in proptest::collection::vec(prop::sample::select(vec![
                    "INVITE sip:a@b SIP/2.0\r\n", "SIP/2.0 200 OK\r\n", "Content-Length: 3\r\n", "l: 0\r\n",
                    "Via: SIP/2.0/TCP h;branch=z9hG4bK1\r\n", "From: <sip:a@b>;tag=1\r\n", "To: <sip:a@b>\r\n",
                    "Call-ID: 1\r\n", "CSeq: 1 INVITE\r\n", "\r\n", "\n", "abc", " folded\r\n", "\u{c9}\u{e3}",
                ]), 0..40),
            ) {
                let mut f = StreamFramer::new(2048);
                f.push(parts.concat().as_bytes());
                for _ in 0..50 {
                    match f.next_message() {
                        Ok(Some(_)) | Err(FrameError::Malformed { .. }) => {}
                        Ok(None) => break,
                        Err(e) => { prop_assert!(e.is_fatal()); break; }
                    }
                }
            }
        }
    }
}
