//! RecordInfo answers split over many MESSAGEs, like catalogs (doc §3
//! "Splitting"): splitting ours, collecting theirs. Pure and sans-IO.

use std::time::Instant;

use crate::gb::charset::{self, Charset};
use crate::gb::manscdp::{self, Manscdp, RecordList};

/// Most records one assembly keeps: a peer announcing a huge `SumNum`
/// cannot grow memory past this. A year of hourly files is 8,760.
pub const MAX_RECORDS: usize = 100_000;

/// Splits `list` into parts whose bodies, encoded in `charset`, stay within
/// `budget` bytes; a record too big on its own goes alone in an oversized
/// part. Every part keeps the list's SN, DeviceID, Name and `SumNum`; no
/// records gives one empty part.
pub fn split(list: RecordList, budget: usize, charset: Charset) -> Vec<RecordList> {
    let RecordList {
        sn,
        device_id,
        name,
        sum_num,
        items,
    } = list;
    let empty = RecordList {
        sn,
        device_id,
        name,
        sum_num,
        items: Vec::new(),
    };
    // `Num`'s digits grow with the part; allow for up to 10 of them.
    let fixed = Manscdp::RecordInfoResponse(empty.clone())
        .to_body(charset)
        .len()
        + 9;
    let mut parts = Vec::new();
    let mut part = empty.clone();
    let mut size = fixed;
    let mut scratch = String::new();
    for item in items {
        scratch.clear();
        manscdp::write_record_item(&mut scratch, &item);
        let len = charset::encode(&scratch, charset).len();
        if !part.items.is_empty() && size + len > budget {
            parts.push(std::mem::replace(&mut part, empty.clone()));
            size = fixed;
        }
        size += len;
        part.items.push(item);
    }
    if !part.items.is_empty() || parts.is_empty() {
        parts.push(part);
    }
    parts
}

/// Reads a GB local time, `YYYY-MM-DDTHH:MM:SS` (no zone, as MANSCDP writes
/// times), as seconds since 1970-01-01T00:00:00 of the same clock. Only
/// differences and order of these seconds mean anything: no zone is implied.
pub fn parse_local_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u16> {
        let d = s.get(r)?;
        d.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| d.parse().ok())?
    };
    let month = time::Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::from(num(0..4)?),
        month,
        u8::try_from(num(8..10)?).ok()?,
    )
    .ok()?;
    let clock = time::Time::from_hms(
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(14..16)?).ok()?,
        u8::try_from(num(17..19)?).ok()?,
    )
    .ok()?;
    Some(
        time::PrimitiveDateTime::new(date, clock)
            .assume_utc()
            .unix_timestamp(),
    )
}

/// Writes seconds from [`parse_local_time`] back as `YYYY-MM-DDTHH:MM:SS`.
pub fn format_local_time(secs: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(secs).ok()?;
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    t.format(&fmt).ok()
}

/// Collects one RecordInfo answer split over many MESSAGEs, until `SumNum`
/// records are in. Sans-IO: the caller passes `now` and gives up on
/// assemblies idle too long, keeping what came.
#[derive(Debug, Clone)]
pub struct RecordAssembly {
    /// The first part's header, with the records so far.
    list: RecordList,
    /// Records refused because [`MAX_RECORDS`] was reached.
    overflow: usize,
    last_activity: Instant,
}

impl RecordAssembly {
    /// Starts with the first part received.
    pub fn new(first: RecordList, now: Instant) -> Self {
        let mut asm = RecordAssembly {
            list: RecordList {
                items: Vec::new(),
                ..first.clone()
            },
            overflow: 0,
            last_activity: now,
        };
        asm.add(first, now);
        asm
    }

    /// Adds a part's records (records have no key, so nothing is
    /// de-duplicated; SIP retransmissions never reach here). Returns true
    /// once complete.
    pub fn add(&mut self, part: RecordList, now: Instant) -> bool {
        self.last_activity = now;
        let room = MAX_RECORDS.saturating_sub(self.list.items.len());
        self.overflow += part.items.len().saturating_sub(room);
        self.list.items.extend(part.items.into_iter().take(room));
        self.is_complete()
    }

    /// True when `SumNum` records came (or `SumNum` is 0), or no more fit.
    pub fn is_complete(&self) -> bool {
        let sum = usize::try_from(self.list.sum_num).unwrap_or(usize::MAX);
        self.list.items.len() + self.overflow >= sum || self.list.items.len() >= MAX_RECORDS
    }

    /// When the last part arrived.
    pub fn last_activity(&self) -> Instant {
        self.last_activity
    }

    /// Records received so far.
    pub fn received(&self) -> usize {
        self.list.items.len()
    }

    /// The whole answer: the first part's header and every record so far.
    pub fn into_list(self) -> RecordList {
        self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gb::manscdp::{parse, RecordItem};
    use std::time::Duration;

    fn record(i: u32) -> RecordItem {
        RecordItem {
            device_id: "35010200001320000101".into(),
            name: Some("东门摄像机".into()),
            file_path: Some(format!("/录像/{i}.ps")),
            start_time: Some(format!("2024-05-01T{:02}:00:00", i % 24)),
            end_time: Some(format!("2024-05-01T{:02}:59:59", i % 24)),
            secrecy: Some(0),
            record_type: Some("time".into()),
            file_size: Some(1 << 30),
            ..RecordItem::default()
        }
    }

    fn list(n: u32) -> RecordList {
        RecordList {
            sn: 7,
            device_id: "35010200001320000101".into(),
            name: Some("东门".into()),
            sum_num: n,
            items: (0..n).map(record).collect(),
        }
    }

    #[test]
    fn split_fits_the_budget_and_reassembles() {
        for cs in [Charset::Gb2312, Charset::Utf8] {
            let parts = split(list(50), 1000, cs);
            assert!(parts.len() > 5, "{}", parts.len());
            let t0 = Instant::now();
            let mut asm: Option<RecordAssembly> = None;
            let mut done = false;
            for p in parts {
                let body = Manscdp::RecordInfoResponse(p).to_body(cs);
                assert!(body.len() <= 1000, "{} bytes", body.len());
                let (Manscdp::RecordInfoResponse(back), _) = parse(&body).expect("parses") else {
                    panic!("not a record answer")
                };
                assert_eq!(back.sum_num, 50);
                done = match asm.as_mut() {
                    Some(a) => a.add(back, t0),
                    None => {
                        let a = RecordAssembly::new(back, t0);
                        let c = a.is_complete();
                        asm = Some(a);
                        c
                    }
                };
            }
            assert!(done);
            assert_eq!(asm.expect("parts").into_list(), list(50));
        }
    }

    #[test]
    fn local_times() {
        let t = parse_local_time("2024-05-01T08:30:00").expect("valid");
        assert_eq!(parse_local_time("2024-05-01T09:30:01"), Some(t + 3601));
        assert_eq!(format_local_time(t).as_deref(), Some("2024-05-01T08:30:00"));
        assert_eq!(
            parse_local_time("2024-03-01T00:00:00").map(|m| m - 86_400),
            parse_local_time("2024-02-29T00:00:00")
        );
        for bad in [
            "",
            "2024-05-01 08:30:00",
            "2024-05-01T08:30",
            "2024-13-01T00:00:00",
            "2023-02-29T00:00:00",
            "2024-05-01T24:00:00",
            "2024-05-01T08:30:0x",
            "+024-05-01T08:30:00",
            "2024-05-01T08:30:00Z",
            "２０２４-05-01T08:30:00",
        ] {
            assert_eq!(parse_local_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn empty_and_oversized() {
        let parts = split(list(0), 100, Charset::Utf8);
        assert_eq!(parts.len(), 1);
        assert!(parts[0].items.is_empty());
        assert!(RecordAssembly::new(parts[0].clone(), Instant::now()).is_complete());
        // Each record alone is over the budget: one per part, none lost.
        let parts = split(list(3), 10, Charset::Utf8);
        assert_eq!(
            parts.iter().map(|p| p.items.len()).collect::<Vec<_>>(),
            [1, 1, 1]
        );
    }

    #[test]
    fn incomplete_until_sum_num_and_bounded() {
        let t0 = Instant::now();
        let mut first = list(2);
        first.sum_num = 5;
        let mut asm = RecordAssembly::new(first.clone(), t0);
        assert!(!asm.is_complete());
        let t1 = t0 + Duration::from_secs(1);
        assert!(!asm.add(first.clone(), t1));
        assert_eq!((asm.received(), asm.last_activity()), (4, t1));
        assert!(asm.add(first, t1));
        // A huge SumNum cannot grow memory past MAX_RECORDS.
        let mut huge = list(1);
        huge.sum_num = u32::MAX;
        huge.items = vec![record(0); MAX_RECORDS + 10];
        let asm = RecordAssembly::new(huge, t0);
        assert!(asm.is_complete());
        assert_eq!(asm.received(), MAX_RECORDS);
    }
}
