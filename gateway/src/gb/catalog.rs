//! Catalog answers split over many MESSAGEs: splitting ours, reassembling
//! theirs. Pure and sans-IO (the caller passes the time).
//!
//! `SumNum` is the size of the whole answer, `DeviceList Num=` the size of
//! one part (doc §3 "Splitting"). Over UDP a part must stay under ~1300
//! bytes (RFC 3261 §18.1.1), so parts carry a handful of items each.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;

use crate::gb::charset::{self, Charset};
use crate::gb::manscdp::{self, CatalogItem, CatalogList, Root};

/// Most unique items one assembly keeps. A peer announcing a huge `SumNum`
/// and streaming items cannot grow memory past this; the city's whole
/// catalog (420,000 channels) fits several times over.
pub const MAX_ASSEMBLY_ITEMS: usize = 2_000_000;

/// Splits `items` into Catalog Response (Notify when `notify`) bodies, each
/// at most `budget` bytes once encoded in `charset`; an item too big for the
/// budget on its own goes alone in an oversized part. Every part carries
/// `SumNum = sum_num` and `DeviceList Num=` its own count. No items gives
/// one part with `Num="0"`.
///
/// Greedy packing in order. Each item is serialised and encoded exactly
/// once (linear in the input; 420,000 items are fine), and every part is
/// byte-identical to what [`manscdp::Manscdp::to_body`] writes for it.
pub fn split(
    notify: bool,
    sn: u32,
    device_id: &str,
    sum_num: u32,
    items: &[CatalogItem],
    budget: usize,
    charset: Charset,
) -> Vec<Bytes> {
    let root = if notify { Root::Notify } else { Root::Response };
    let mut head_text = String::new();
    manscdp::write_decl(&mut head_text, charset);
    manscdp::write_catalog_head(&mut head_text, root, sn, device_id, sum_num);
    let head = charset::encode(&head_text, charset);
    let mut tail = String::new();
    manscdp::write_list_close(&mut tail, root);
    // Head and tail do not depend on the part; only `Num`'s digits do.
    let fixed = head.len() + tail.len();

    let mut parts = Vec::new();
    let mut scratch = String::new();
    let mut encoded = Vec::new();
    // Items of the part being filled, already encoded, and their count.
    let mut pending: Vec<u8> = Vec::new();
    let mut count = 0usize;
    let flush = |pending: &mut Vec<u8>, count: &mut usize, parts: &mut Vec<Bytes>| {
        let mut open = String::new();
        manscdp::write_list_open(&mut open, *count);
        let mut body = Vec::with_capacity(fixed + open.len() + pending.len());
        body.extend_from_slice(&head);
        // `<DeviceList …>` and the tail are ASCII: the same in every charset.
        body.extend_from_slice(open.as_bytes());
        body.extend_from_slice(pending);
        body.extend_from_slice(tail.as_bytes());
        parts.push(Bytes::from(body));
        pending.clear();
        *count = 0;
    };
    for item in items {
        scratch.clear();
        manscdp::write_item(&mut scratch, item);
        encoded.clear();
        charset::encode_into(&scratch, charset, &mut encoded);
        let size_with = fixed + manscdp::list_open_len(count + 1) + pending.len() + encoded.len();
        if count > 0 && size_with > budget {
            flush(&mut pending, &mut count, &mut parts);
        }
        pending.extend_from_slice(&encoded);
        count += 1;
    }
    if count > 0 || parts.is_empty() {
        flush(&mut pending, &mut count, &mut parts);
    }
    parts
}

/// Reassembles one Catalog answer split over many MESSAGEs; keep one per
/// (peer, SN). Sans-IO: the caller passes `now` and drops assemblies idle
/// for too long, keeping what came ([`CatalogAssembly::into_items`]).
#[derive(Debug, Clone)]
pub struct CatalogAssembly {
    sum_num: u32,
    /// Unique items in order of first arrival.
    items: Vec<CatalogItem>,
    /// DeviceID → index in `items`.
    index: HashMap<String, usize>,
    /// Items that came without a DeviceID.
    without_id: usize,
    /// Items refused because [`MAX_ASSEMBLY_ITEMS`] was reached.
    overflow: usize,
    last_activity: Instant,
}

impl CatalogAssembly {
    /// Starts an assembly expecting `sum_num` items (the first part's
    /// `SumNum`).
    pub fn new(sum_num: u32, now: Instant) -> Self {
        CatalogAssembly {
            sum_num,
            items: Vec::new(),
            index: HashMap::new(),
            without_id: 0,
            overflow: 0,
            last_activity: now,
        }
    }

    /// Adds a part. Duplicates (same DeviceID, whitespace ignored) replace
    /// the earlier copy in place (last wins); order of parts does not matter.
    /// Items without DeviceID are counted (and count towards completion, so
    /// a broken item does not force a timeout) but dropped. Returns true
    /// once complete (see [`Self::is_complete`]).
    pub fn add(&mut self, list: CatalogList, now: Instant) -> bool {
        self.last_activity = now;
        for mut item in list.items {
            let id = item.device_id.trim();
            if id.is_empty() {
                self.without_id += 1;
                continue;
            }
            if id.len() != item.device_id.len() {
                item.device_id = id.to_owned();
            }
            if let Some(&at) = self.index.get(&item.device_id) {
                if let Some(slot) = self.items.get_mut(at) {
                    *slot = item;
                }
            } else if self.items.len() >= MAX_ASSEMBLY_ITEMS {
                self.overflow += 1;
            } else {
                self.index.insert(item.device_id.clone(), self.items.len());
                self.items.push(item);
            }
        }
        self.is_complete()
    }

    /// True when `SumNum` items are in (unique DeviceIDs plus items without
    /// one), or `SumNum` is 0.
    pub fn is_complete(&self) -> bool {
        let sum = usize::try_from(self.sum_num).unwrap_or(usize::MAX);
        self.items.len().saturating_add(self.without_id) >= sum
    }

    /// Unique DeviceIDs received so far.
    pub fn received(&self) -> usize {
        self.items.len()
    }

    /// Items received without a DeviceID (dropped).
    pub fn without_id(&self) -> usize {
        self.without_id
    }

    /// New items refused because [`MAX_ASSEMBLY_ITEMS`] was reached.
    pub fn overflow(&self) -> usize {
        self.overflow
    }

    /// `SumNum` this assembly waits for.
    pub fn sum_num(&self) -> u32 {
        self.sum_num
    }

    /// When the last part arrived (or the assembly started).
    pub fn last_activity(&self) -> Instant {
        self.last_activity
    }

    /// The items in order of first arrival, de-duplicated (last copy wins).
    pub fn into_items(self) -> Vec<CatalogItem> {
        self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gb::manscdp::{parse, Manscdp};
    use proptest::prelude::*;
    use std::time::Duration;

    const PLATFORM: &str = "35010200002000000003";
    const UDP_BUDGET: usize = 1300;

    fn item(i: usize) -> CatalogItem {
        CatalogItem {
            device_id: format!("350102000013200{i:05}"),
            name: Some(format!("福州市鼓楼区东街口东门萳广场第{i}号高清球机摄像头")),
            manufacturer: Some("海康威视".into()),
            model: Some("DS-2DE7430IW".into()),
            owner: Some("0".into()),
            civil_code: Some("350102".into()),
            address: Some("福建省福州市鼓楼区八一七北路东街口天桥东侧".into()),
            parental: Some(0),
            parent_id: Some(PLATFORM.into()),
            register_way: Some(1),
            secrecy: Some(0),
            status: Some("ON".into()),
            longitude: Some(119.296_5),
            latitude: Some(26.074_2),
            ..CatalogItem::default()
        }
    }

    fn parse_list(body: &[u8]) -> CatalogList {
        match parse(body) {
            Ok((Manscdp::CatalogResponse(l) | Manscdp::CatalogNotify(l), _)) => l,
            other => panic!("{other:?}"),
        }
    }

    /// Deterministic Fisher–Yates with xorshift, so failures reproduce.
    fn shuffle<T>(v: &mut [T], mut seed: u64) {
        for i in (1..v.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let j = usize::try_from(seed % (i as u64 + 1)).unwrap_or(0);
            v.swap(i, j);
        }
    }

    #[test]
    fn split_respects_budget_and_round_trips() {
        let items: Vec<_> = (0..1000).map(item).collect();
        for cs in [Charset::Gb2312, Charset::Utf8] {
            let parts = split(false, 42, PLATFORM, 1000, &items, UDP_BUDGET, cs);
            assert!(parts.len() > 1);
            let mut back = Vec::new();
            for part in &parts {
                assert!(part.len() <= UDP_BUDGET, "{} bytes", part.len());
                let l = parse_list(part);
                assert_eq!(
                    (l.sn, l.sum_num, l.device_id.as_str()),
                    (42, 1000, PLATFORM)
                );
                let num = format!("<DeviceList Num=\"{}\">", l.items.len());
                assert!(part.windows(num.len()).any(|w| w == num.as_bytes()));
                back.extend(l.items);
            }
            assert_eq!(back, items);
        }
    }

    #[test]
    fn split_parts_equal_to_body() {
        let items: Vec<_> = (0..20).map(item).collect();
        let parts = split(true, 7, PLATFORM, 20, &items, UDP_BUDGET, Charset::Gb2312);
        let mut at = 0;
        for part in parts {
            let l = parse_list(&part);
            let n = l.items.len();
            let expected = Manscdp::CatalogNotify(CatalogList {
                sn: 7,
                device_id: PLATFORM.into(),
                sum_num: 20,
                items: items[at..at + n].to_vec(),
            });
            assert_eq!(part, expected.to_body(Charset::Gb2312));
            at += n;
        }
        assert_eq!(at, 20);
    }

    #[test]
    fn split_empty_and_oversized() {
        let parts = split(false, 1, PLATFORM, 0, &[], UDP_BUDGET, Charset::Gb2312);
        assert_eq!(parts.len(), 1);
        let l = parse_list(&parts[0]);
        assert_eq!((l.sum_num, l.items.len()), (0, 0));
        assert!(String::from_utf8_lossy(&parts[0]).contains("<DeviceList Num=\"0\">"));

        let mut big = item(1);
        big.address = Some("很长的地址".repeat(200));
        let items = vec![item(0), big, item(2)];
        let parts = split(false, 1, PLATFORM, 3, &items, UDP_BUDGET, Charset::Utf8);
        let counts: Vec<_> = parts.iter().map(|p| parse_list(p).items.len()).collect();
        assert_eq!(counts, [1, 1, 1]);
        assert!(parts[1].len() > UDP_BUDGET);
        // A budget below the envelope still makes progress, one item a part.
        let parts = split(false, 1, PLATFORM, 3, &items[..1], 10, Charset::Utf8);
        assert_eq!(parts.len(), 1);
    }

    fn parts_of(items: &[CatalogItem], size: usize) -> Vec<CatalogList> {
        items
            .chunks(size)
            .map(|c| CatalogList {
                sn: 5,
                device_id: PLATFORM.into(),
                sum_num: u32::try_from(items.len()).unwrap_or(u32::MAX),
                items: c.to_vec(),
            })
            .collect()
    }

    #[test]
    fn assembly_shuffled_with_duplicates() {
        let items: Vec<_> = (0..1000).map(item).collect();
        for size in [1, 8] {
            let mut parts = parts_of(&items, size);
            // Three duplicated parts; the copies carry a changed name (last wins).
            for k in [3, 50, 99] {
                let mut dup = parts[k].clone();
                for it in &mut dup.items {
                    it.status = Some("OFF".into());
                }
                parts.push(dup);
            }
            shuffle(&mut parts, 0x9E37_79B9_7F4A_7C15);
            let t0 = Instant::now();
            let mut asm = CatalogAssembly::new(1000, t0);
            let mut done_at = None;
            for (n, p) in parts.into_iter().enumerate() {
                let now = t0 + Duration::from_millis(n as u64);
                if asm.add(p, now) && done_at.is_none() {
                    done_at = Some(n);
                }
            }
            assert!(done_at.is_some() && asm.is_complete());
            assert_eq!(
                (asm.received(), asm.sum_num(), asm.without_id()),
                (1000, 1000, 0)
            );
            assert!(asm.last_activity() > t0);
            let got = asm.into_items();
            let mut ids: Vec<_> = got.iter().map(|i| i.device_id.clone()).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), 1000);
        }
    }

    #[test]
    fn assembly_last_copy_wins_in_first_position() {
        let t0 = Instant::now();
        let mut asm = CatalogAssembly::new(2, t0);
        let mut a = item(1);
        let b = item(2);
        asm.add(parts_of(&[a.clone()], 1).remove(0), t0);
        a.status = Some("OFF".into());
        asm.add(parts_of(&[b.clone(), a.clone()], 2).remove(0), t0);
        assert_eq!(asm.into_items(), vec![a, b]);
    }

    #[test]
    fn assembly_lost_part_and_missing_ids() {
        let items: Vec<_> = (0..1000).map(item).collect();
        let mut parts = parts_of(&items, 1);
        parts.remove(500);
        shuffle(&mut parts, 7);
        let t0 = Instant::now();
        let mut asm = CatalogAssembly::new(1000, t0);
        for p in parts {
            assert!(!asm.add(p, t0));
        }
        assert!(!asm.is_complete());
        assert_eq!(asm.received(), 999);
        assert_eq!(asm.into_items().len(), 999);

        // Items without DeviceID are dropped but count towards SumNum.
        let mut asm = CatalogAssembly::new(3, t0);
        let list = CatalogList {
            sn: 1,
            device_id: PLATFORM.into(),
            sum_num: 3,
            items: vec![item(1), CatalogItem::default(), item(2)],
        };
        assert!(asm.add(list, t0));
        assert_eq!((asm.received(), asm.without_id()), (2, 1));

        let asm = CatalogAssembly::new(0, t0);
        assert!(asm.is_complete());
    }

    #[test]
    fn hundred_thousand_items() {
        // Not a benchmark (no assertion on time); shows the order of cost.
        let items: Vec<_> = (0..100_000).map(item).collect();
        let t = Instant::now();
        let parts = split(
            false,
            1,
            PLATFORM,
            100_000,
            &items,
            64 * 1024,
            Charset::Gb2312,
        );
        let split_time = t.elapsed();
        let t = Instant::now();
        let mut asm = CatalogAssembly::new(100_000, t);
        for p in &parts {
            asm.add(parse_list(p), t);
        }
        let parse_time = t.elapsed();
        assert!(asm.is_complete());
        eprintln!(
            "100k items: split into {} parts in {split_time:?}, parsed+assembled in {parse_time:?}",
            parts.len()
        );
    }

    prop_compose! {
        fn small_item()(id in "[0-9]{1,20}", name in proptest::option::of("[a-zA-Z0-9东门萳𠀀&<> ]{0,40}"),
                        status in proptest::option::of("ON|OFF")) -> CatalogItem {
            CatalogItem {
                device_id: id,
                name: name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()),
                status,
                ..CatalogItem::default()
            }
        }
    }

    proptest! {
        #[test]
        fn split_parse_concat_is_identity(
            items in proptest::collection::vec(small_item(), 0..60),
            budget in 100usize..2000,
            notify: bool,
            utf8: bool,
        ) {
            let cs = if utf8 { Charset::Utf8 } else { Charset::Gb2312 };
            let sum = u32::try_from(items.len()).unwrap_or(u32::MAX);
            let parts = split(notify, 3, PLATFORM, sum, &items, budget, cs);
            let mut back = Vec::new();
            for p in &parts {
                let l = parse_list(p);
                // Only a lone item (or the empty answer) may exceed the budget.
                prop_assert!(p.len() <= budget || l.items.len() <= 1);
                prop_assert_eq!(l.sum_num, sum);
                back.extend(l.items);
            }
            prop_assert_eq!(back, items);
        }
    }
}
