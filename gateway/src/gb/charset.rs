//! Character sets of MANSCDP bodies.
//!
//! GB/T 28181-2016 §6.10 says signalling *should* be GB2312, but devices
//! declare GB2312 and send GBK, GB18030 or UTF-8, and sometimes declare UTF-8
//! and send GBK (doc §9 item 3). So decoding never trusts the declaration:
//! valid UTF-8 is taken as is, anything else is decoded as GB18030 (a
//! superset of GBK and GB2312). The declaration only decides which charset we
//! answer that peer in.

use std::borrow::Cow;

use bytes::Bytes;

/// How many leading bytes are searched for the XML declaration.
///
/// The declaration must come first; a little slack covers a BOM and the
/// leading blank lines some devices send.
const DECL_WINDOW: usize = 256;

/// The charset a body is written in, as named in its XML declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Charset {
    /// `encoding="GB2312"`; written as GBK (what every GB device means by it),
    /// characters outside GBK as `&#NNNN;` references.
    #[default]
    Gb2312,
    /// `encoding="UTF-8"`.
    Utf8,
}

impl Charset {
    /// The label written in the XML declaration: `GB2312` or `UTF-8`.
    pub fn as_xml_label(self) -> &'static str {
        match self {
            Charset::Gb2312 => "GB2312",
            Charset::Utf8 => "UTF-8",
        }
    }

    /// Maps an encoding label (`gb2312`, `GBK`, `gb18030`, `utf-8`, `utf8`, …,
    /// case-insensitive, WHATWG label set) to a charset; `None` for others.
    pub fn from_label(label: &str) -> Option<Charset> {
        let enc = encoding_rs::Encoding::for_label(label.trim().as_bytes())?;
        if enc == encoding_rs::UTF_8 {
            Some(Charset::Utf8)
        } else if enc == encoding_rs::GBK || enc == encoding_rs::GB18030 {
            Some(Charset::Gb2312)
        } else {
            None
        }
    }
}

/// The charset named by the XML declaration at the start of `body`, if any
/// and if it is one we know.
pub fn declared(body: &[u8]) -> Option<Charset> {
    let head = body.get(..body.len().min(DECL_WINDOW)).unwrap_or(body);
    let start = find(head, b"<?xml")?;
    let rest = head.get(start..)?;
    let end = find(rest, b"?>").unwrap_or(rest.len());
    let decl = rest.get(..end)?;
    let enc_at = find_ignore_case(decl, b"encoding")?;
    let after = decl.get(enc_at + b"encoding".len()..)?;
    // `encoding = "GB2312"`: skip blanks and `=`, then take the quoted label.
    let after = trim_ascii_start(after);
    let after = trim_ascii_start(after.strip_prefix(b"=")?);
    let (&quote, after) = after.split_first()?;
    if quote != b'"' && quote != b'\'' {
        return None;
    }
    let close = after.iter().position(|&b| b == quote)?;
    let label = std::str::from_utf8(after.get(..close)?).ok()?;
    Charset::from_label(label)
}

/// Decodes a body: valid UTF-8 is used as is (devices often declare GB2312
/// but send UTF-8); anything else is decoded as GB18030 (a superset of GBK
/// and GB2312; undecodable bytes become U+FFFD). One exception: a body that
/// declares a GB charset and is valid UTF-8 without any character from
/// U+0800 up (so no Chinese) is decoded as GB, because short GBK text is
/// often valid UTF-8 by accident.
///
/// Returns the text and the charset to answer this peer in: what the
/// declaration said, falling back to what was detected (UTF-8 only for
/// non-ASCII UTF-8 text, else GB2312, the standard's default).
pub fn decode(body: &[u8]) -> (String, Charset) {
    let (text, charset) = decode_cow(body);
    (text.into_owned(), charset)
}

/// [`decode`] without copying a body that is already valid UTF-8.
pub fn decode_cow(body: &[u8]) -> (Cow<'_, str>, Charset) {
    let declared = declared(body);
    let (text, detected) = match std::str::from_utf8(body) {
        Ok(s) if s.is_ascii() => (Cow::Borrowed(s), Charset::Gb2312),
        // Short GBK text can happen to be valid UTF-8 (GBK `C3 B7` is UTF-8
        // `÷`), but then it reads as Latin/Greek/Cyrillic only: UTF-8 Chinese
        // has three-byte characters (U+0800 and up). So a body declared GB
        // without any such character is taken as GB.
        Ok(s) if declared != Some(Charset::Gb2312) || s.chars().any(|c| c >= '\u{800}') => {
            (Cow::Borrowed(s), Charset::Utf8)
        }
        _ => {
            let (text, _had_errors) = encoding_rs::GB18030.decode_without_bom_handling(body);
            (text, Charset::Gb2312)
        }
    };
    (text, declared.unwrap_or(detected))
}

/// Encodes text for the wire. GB2312 is written as GBK (encoding_rs maps the
/// label `GB2312` to GBK); characters outside GBK become decimal numeric
/// character references `&#NNNN;`, which an XML parser turns back into the
/// character. Only call this on markup or escaped text, where such a
/// reference is legal.
pub fn encode(text: &str, charset: Charset) -> Bytes {
    match charset {
        Charset::Utf8 => Bytes::copy_from_slice(text.as_bytes()),
        Charset::Gb2312 => {
            let (bytes, _enc, _unmappable) = encoding_rs::GBK.encode(text);
            match bytes {
                Cow::Borrowed(b) => Bytes::copy_from_slice(b),
                Cow::Owned(v) => Bytes::from(v),
            }
        }
    }
}

/// Appends `text` encoded in `charset` to `out` (see [`encode`]); used to
/// build bodies piecewise without intermediate buffers.
pub fn encode_into(text: &str, charset: Charset, out: &mut Vec<u8>) {
    match charset {
        Charset::Utf8 => out.extend_from_slice(text.as_bytes()),
        Charset::Gb2312 => {
            let (bytes, _enc, _unmappable) = encoding_rs::GBK.encode(text);
            out.extend_from_slice(&bytes);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn find_ignore_case(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

fn trim_ascii_start(s: &[u8]) -> &[u8] {
    let skip = s.iter().take_while(|b| b.is_ascii_whitespace()).count();
    s.get(skip..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(Charset::default(), Charset::Gb2312);
        assert_eq!(Charset::Gb2312.as_xml_label(), "GB2312");
        assert_eq!(Charset::Utf8.as_xml_label(), "UTF-8");
        for l in ["GB2312", "gbk", "GB18030", " gb2312 "] {
            assert_eq!(Charset::from_label(l), Some(Charset::Gb2312), "{l}");
        }
        for l in ["UTF-8", "utf8"] {
            assert_eq!(Charset::from_label(l), Some(Charset::Utf8), "{l}");
        }
        assert_eq!(Charset::from_label("latin1"), None);
    }

    #[test]
    fn declaration_sniffing() {
        assert_eq!(
            declared(b"<?xml version=\"1.0\" encoding=\"GB2312\"?><a/>"),
            Some(Charset::Gb2312)
        );
        assert_eq!(
            declared(b"\xEF\xBB\xBF\r\n<?xml version='1.0' ENCODING = 'utf-8' ?>"),
            Some(Charset::Utf8)
        );
        assert_eq!(declared(b"<?xml version=\"1.0\"?><a/>"), None);
        assert_eq!(declared(b"<a/>"), None);
        assert_eq!(declared(b"<?xml encoding=\"GB2312"), None);
        assert_eq!(declared(b""), None);
    }

    #[test]
    fn decode_utf8_declared_gb2312_keeps_declaration() {
        let body = "<?xml version=\"1.0\" encoding=\"GB2312\"?><a>东门</a>";
        let (text, cs) = decode(body.as_bytes());
        assert_eq!(text, body);
        assert_eq!(cs, Charset::Gb2312);
    }

    #[test]
    fn decode_gbk_and_gb18030() {
        // 萳 is GBK-only (not in GB2312); 𠀀 needs a GB18030 four-byte sequence.
        let text = "<a>东门萳𠀀</a>";
        let (gb18030, _, _) = encoding_rs::GB18030.encode(text);
        let (decoded, cs) = decode(&gb18030);
        assert_eq!(decoded, text);
        assert_eq!(cs, Charset::Gb2312);
    }

    #[test]
    fn gbk_that_is_valid_utf8_by_accident() {
        // 梅 in GBK is C3 B7, which is also UTF-8 for ÷.
        let mut body = b"<?xml version=\"1.0\" encoding=\"GB2312\"?><a>".to_vec();
        body.extend_from_slice(b"\xC3\xB7</a>");
        assert!(std::str::from_utf8(&body).is_ok());
        let (text, cs) = decode(&body);
        assert!(text.contains("<a>梅</a>"), "{text}");
        assert_eq!(cs, Charset::Gb2312);
        // Undeclared, it stays UTF-8.
        assert_eq!(decode(b"<a>\xC3\xB7</a>").0, "<a>÷</a>");
    }

    #[test]
    fn detection_without_declaration() {
        assert_eq!(decode("<a>东</a>".as_bytes()).1, Charset::Utf8);
        assert_eq!(decode(b"<a>x</a>").1, Charset::Gb2312);
        assert_eq!(
            decode(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><a>\xB6\xAB</a>"),
            (
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a>东</a>".to_owned(),
                Charset::Utf8
            )
        );
    }

    #[test]
    fn encode_gbk_with_references() {
        let out = encode("东门萳𠀀", Charset::Gb2312);
        // 𠀀 (U+20000) is outside GBK, so it becomes a numeric reference.
        assert!(out.ends_with(b"&#131072;"), "{out:?}");
        let (back, _) = decode(&out);
        assert_eq!(back, "东门萳&#131072;");
        assert_eq!(&encode("东", Charset::Utf8)[..], "东".as_bytes());
        let mut v = b"x".to_vec();
        encode_into("东", Charset::Gb2312, &mut v);
        assert_eq!(v, b"x\xB6\xAB");
    }
}
