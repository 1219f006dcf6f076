//! H.264 / H.265 Annex-B helpers: split into NAL units, read their types,
//! tell keyframes. Hand-written: it is a few lines on the hot path, and the
//! crates that do it (h264-reader) cover H.264 only.

/// NAL units of an Annex-B buffer (start codes removed, empty units skipped).
pub fn split_annex_b(data: &[u8]) -> Vec<&[u8]> {
    annex_b_units(data).collect()
}

/// NAL units of an Annex-B buffer, found lazily (start codes removed, empty
/// units skipped), so a caller looking for one type can stop early. Every
/// relayed frame is scanned, so start codes are found with `memchr`'s SIMD
/// substring search rather than byte by byte.
pub fn annex_b_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut codes = memchr::memmem::find_iter(data, &[0, 0, 1]);
    // Where the current unit starts: after the first start code.
    let mut start = codes.next().map(|i| i + 3);
    std::iter::from_fn(move || loop {
        let s = start?;
        let (end, next) = match codes.next() {
            Some(i) => (i, Some(i + 3)),
            None => (data.len(), None),
        };
        start = next;
        // A 4-byte start code leaves one zero byte behind: trim trailing
        // zeros (but not at the end of the buffer, where they are data).
        let mut e = end;
        if next.is_some() {
            while e > s && data.get(e - 1) == Some(&0) {
                e -= 1;
            }
        }
        match data.get(s..e) {
            Some(n) if !n.is_empty() => return Some(n),
            _ => continue,
        }
    })
}

/// H.264 nal_unit_type (5 IDR, 7 SPS, 8 PPS, 9 AUD).
pub fn h264_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1F)
}

/// H.265 nal_unit_type (16–21 IRAP, 32 VPS, 33 SPS, 34 PPS, 35 AUD).
pub fn h265_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| (b >> 1) & 0x3F)
}

/// True when an Annex-B access unit holds an IDR (H.264) or IRAP (H.265) picture.
pub fn is_keyframe(codec: super::frame::Codec, data: &[u8]) -> bool {
    use super::frame::Codec;
    annex_b_units(data).any(|n| match codec {
        Codec::H264 => h264_type(n) == Some(5),
        Codec::H265 => h265_type(n).is_some_and(|t| (16..=21).contains(&t)),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame::Codec;

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let au = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 9, 9,
        ];
        let n = split_annex_b(&au);
        assert_eq!(
            n,
            vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 9, 9][..]]
        );
        assert!(is_keyframe(Codec::H264, &au));
        assert!(!is_keyframe(Codec::H264, &[0, 0, 1, 0x41, 1]));
        // H.265 IDR_W_RADL (19) << 1 = 0x26.
        assert!(is_keyframe(
            Codec::H265,
            &[0, 0, 1, 0x40, 1, 0, 0, 1, 0x26, 1]
        ));
    }

    /// The byte-by-byte scan this module used before `memchr`: the oracle.
    fn split_slowly(data: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut i = 0;
        let mut start: Option<usize> = None;
        while i + 3 <= data.len() {
            if data[i..i + 3] == [0, 0, 1] {
                if let Some(s) = start {
                    let mut end = i;
                    while end > s && data[end - 1] == 0 {
                        end -= 1;
                    }
                    if end > s {
                        out.push(&data[s..end]);
                    }
                }
                i += 3;
                start = Some(i);
            } else {
                i += 1;
            }
        }
        if let Some(s) = start {
            if s < data.len() {
                out.push(&data[s..]);
            }
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn the_fast_split_matches_the_byte_by_byte_one(
            data in proptest::collection::vec(proptest::prop_oneof![
                3 => proptest::strategy::Just(0u8),
                1 => proptest::strategy::Just(1u8),
                2 => proptest::num::u8::ANY,
            ], 0..200)
        ) {
            proptest::prop_assert_eq!(split_annex_b(&data), split_slowly(&data));
        }
    }

    #[test]
    fn garbage_never_panics() {
        for len in 0..64 {
            let v: Vec<u8> = (0..len).map(|i| (i * 7 % 3) as u8).collect();
            let _ = split_annex_b(&v);
        }
    }
}
