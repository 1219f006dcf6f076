//! Pieces of the MPEG-2 system layer (ISO/IEC 13818-1) that PS and TS share:
//! the 33-bit PTS/DTS field of a PES header, and the scan for a
//! `00 00 01 id` start code. One home, so the PS and TS muxers and
//! demuxers and the simulator's PS rewriter cannot drift apart.

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use bytes::{BufMut, BytesMut};

/// PTS, DTS and SCR are 33-bit counts of a 90 kHz clock.
pub const TS_MASK: u64 = (1 << 33) - 1;

/// Read the 5-byte PTS/DTS field at the start of `d` (marker bits are not
/// checked: cameras get them wrong).
pub fn read_ts(d: &[u8]) -> Option<u64> {
    match d {
        [a, b, c, e, f, ..] => Some(
            (u64::from(*a) >> 1 & 0x07) << 30
                | u64::from(*b) << 22
                | (u64::from(*c) >> 1) << 15
                | u64::from(*e) << 7
                | u64::from(*f) >> 1,
        ),
        _ => None,
    }
}

/// Append a 5-byte PTS/DTS field with its 4-bit prefix (`0010` PTS only,
/// `0011` PTS of a pair, `0001` DTS) and marker bits.
pub fn put_ts(out: &mut BytesMut, prefix: u8, ts: u64) {
    let ts = ts & TS_MASK;
    out.put_u8(prefix << 4 | ((ts >> 30) as u8 & 0x07) << 1 | 1);
    out.put_u8((ts >> 22) as u8);
    out.put_u8(((ts >> 15) as u8 & 0x7F) << 1 | 1);
    out.put_u8((ts >> 7) as u8);
    out.put_u8((ts as u8 & 0x7F) << 1 | 1);
}

/// Overwrite the 5-byte PTS/DTS field at `d[at..]` in place, keeping its
/// prefix; does nothing if `d` is too short.
pub fn rewrite_ts(d: &mut [u8], at: usize, ts: u64) {
    let ts = ts & TS_MASK;
    if let Some([a, b, c, e, f]) = d.get_mut(at..at.saturating_add(5)) {
        *a = (*a & 0xF0) | ((ts >> 30) as u8 & 0x07) << 1 | 1;
        *b = (ts >> 22) as u8;
        *c = ((ts >> 15) as u8 & 0x7F) << 1 | 1;
        *e = (ts >> 7) as u8;
        *f = (ts as u8 & 0x7F) << 1 | 1;
    }
}

/// First `00 00 01 id` at or after `from` whose id satisfies `ok`.
pub fn find_start(data: &[u8], from: usize, ok: fn(u8) -> bool) -> Option<usize> {
    let mut i = from;
    while i + 4 <= data.len() {
        match data.get(i..i + 4) {
            Some([0, 0, 1, id]) if ok(*id) => return Some(i),
            // Skip fast past bytes that cannot begin a start code.
            Some([_, _, b, _]) if *b > 1 => i += 3,
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_fields_round_trip_and_rewrite_keeps_the_prefix() {
        for ts in [0, 1, 90_000, TS_MASK, TS_MASK + 5] {
            let mut b = BytesMut::new();
            put_ts(&mut b, 0x3, ts);
            assert_eq!(read_ts(&b), Some(ts & TS_MASK));
            assert_eq!(b[0] >> 4, 0x3);
            let mut v = b.to_vec();
            rewrite_ts(&mut v, 0, 12_345);
            assert_eq!((read_ts(&v), v[0] >> 4), (Some(12_345), 0x3));
        }
        assert_eq!(read_ts(&[1, 2, 3, 4]), None);
        let mut short = [0u8; 4];
        rewrite_ts(&mut short, 0, 1);
        assert_eq!(short, [0; 4]);
    }

    #[test]
    fn start_codes_are_found_by_id() {
        let d = [9, 0, 0, 1, 0xE0, 0, 0, 1, 0xBA, 7];
        assert_eq!(find_start(&d, 0, |id| id == 0xBA), Some(5));
        assert_eq!(find_start(&d, 0, |_| true), Some(1));
        assert_eq!(find_start(&d, 6, |_| true), None);
    }
}
