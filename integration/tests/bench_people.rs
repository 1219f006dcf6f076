//! Benchmarks of what people wait for (run by `make bench`, release build;
//! ignored by `make test`): the console's tree over a 420,000-channel
//! city, and the availability report over 30 days of status changes. Each
//! first checks its run was valid (every count what was built), then
//! prints `bench:` lines with figures and a same-run baseline.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use gbgate::availability::{channel_times, county_of, group_rates};
use gbgate::catalog::tree::BranchKind;
use gbgate::catalog::{Catalog, Query};
use gbgate::gate::Gate;
use gbgate::gb::manscdp::CatalogItem;
use policy::audit::{AuditStore, SqliteStore, StatusChange};
use policy::{Policy, Subject};
use topology::GbId;

/// 7 counties × 6 towns × 10 NVRs × 1,000 channels = 420,000 channels; a
/// town is a branch of 10,000.
const COUNTIES: u32 = 7;
const TOWNS: u32 = 6;
const NVRS: u32 = 10;
const CHANNELS: u32 = 1_000;

fn town_code(county: u32, town: u32) -> String {
    format!("3501{:02}{:02}", county + 2, town + 1)
}

fn id(s: &str) -> GbId {
    GbId::parse(s).unwrap()
}

fn item(id: String, name: String, parent: Option<String>) -> CatalogItem {
    CatalogItem {
        device_id: id,
        name: Some(name),
        parent_id: parent,
        status: Some("ON".into()),
        manufacturer: Some("ACME".into()),
        ..CatalogItem::default()
    }
}

/// The city's catalog, each county's entries reported through its node.
fn city_catalog() -> Catalog {
    let mut c = Catalog::new(id("35010000002000000001"));
    for county in 0..COUNTIES {
        let mut items = Vec::new();
        for town in 0..TOWNS {
            let t = town_code(county, town);
            let platform = format!("{t}002000000001");
            items.push(item(platform.clone(), format!("Town {t}"), None));
            for n in 0..NVRS {
                let nvr = format!("{t}00118{n:07}");
                items.push(item(
                    nvr.clone(),
                    format!("NVR {t}-{n}"),
                    Some(platform.clone()),
                ));
                for ch in 0..CHANNELS {
                    let cam = format!("{t}00131{:07}", n * CHANNELS + ch);
                    items.push(item(cam, format!("Camera {t}-{n}-{ch}"), Some(nvr.clone())));
                }
            }
        }
        let source = id(&format!("3501{:02}00002000000001", county + 2));
        c.replace_from(source, items, true);
    }
    c
}

/// Median of `runs` timings of `f`, in milliseconds, and its last result.
fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut ms = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        last = Some(f());
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], last.unwrap())
}

#[test]
#[ignore = "benchmark: make bench"]
fn console_tree_over_420k_channels() {
    let built = Instant::now();
    let c = city_catalog();
    eprintln!(
        "bench:   built 420,000 channels in {:.1} s",
        built.elapsed().as_secs_f64()
    );
    let total = COUNTIES * TOWNS * NVRS * CHANNELS;
    let all = |_: GbId| true;

    // Validity: every level counts what was built.
    let (top_ms, top) = time(5, || c.region_children("", all));
    assert_eq!(top.iter().map(|b| b.cameras).sum::<u32>(), total, "top");
    let (county_ms, county) = time(5, || c.region_children("350102", all));
    assert_eq!(county.len() as u32, TOWNS);
    let (town_ms, town) = time(9, || c.region_children(&town_code(0, 0), all));
    assert_eq!(town.len(), 1, "the town's platform");
    assert_eq!(town[0].cameras, NVRS * CHANNELS, "a branch of 10,000");
    let platform = id(&town[0].key);
    let (platform_ms, nvrs) = time(9, || c.children_of(platform, all));
    assert_eq!(nvrs.len() as u32, NVRS);
    assert!(nvrs
        .iter()
        .all(|b| b.kind == BranchKind::Device && b.cameras == CHANNELS));
    let nvr = id(&nvrs[0].key);
    let (nvr_ms, cams) = time(9, || c.children_of(nvr, all));
    assert_eq!(cams.len() as u32, CHANNELS);
    let (search_ms, hits) = time(5, || c.search("camera 350107", 50, all));
    assert_eq!(hits.len(), 50);

    // Baseline, same run: the same NVR's channels as GET
    // /api/v1/catalog?parent= reads them (a walk of the whole map).
    let nvr_s = nvr.to_string();
    let (flat_ms, flat) = time(9, || {
        c.query(&Query {
            parent: Some(&nvr_s),
            limit: 10_000,
            ..Query::default()
        })
        .0
    });
    assert_eq!(flat.len() as u32, CHANNELS);

    // A department that may see one county (70,000 channels): every
    // camera read passes the gate.
    let policy = Policy::parse(&[("bench.csv", "p, dept:traffic, 350102*, *, allow\n")]).unwrap();
    let gate = Gate::new(Some(Arc::new(policy)));
    let traffic = Subject::Dept("traffic".into());
    let now = SystemTime::now();
    let shows = |i: GbId| gate.shows(&traffic, &i, &[], now);
    let (dept_top_ms, dept_top) = time(5, || c.region_children("", shows));
    assert_eq!(
        dept_top.iter().map(|b| b.cameras).sum::<u32>(),
        TOWNS * NVRS * CHANNELS
    );
    let (dept_town_ms, dept_town) = time(9, || c.region_children(&town_code(0, 0), shows));
    assert_eq!(dept_town[0].cameras, NVRS * CHANNELS);

    println!(
        "bench: console_tree channels={total} top_ms={top_ms:.1} county_ms={county_ms:.1} town_10k_ms={town_ms:.2} town_platform_children_ms={platform_ms:.2} nvr_1000_children_ms={nvr_ms:.2} search_ms={search_ms:.1} dept_top_ms={dept_top_ms:.1} dept_town_10k_ms={dept_town_ms:.2}"
    );
    println!(
        "bench:   baseline: the same NVR's 1,000 channels by a whole-map parent filter (/api/v1/catalog?parent=) {flat_ms:.1} ms; the tree's range read is {:.0}x faster",
        flat_ms / nvr_ms
    );
}

#[test]
#[ignore = "benchmark: make bench"]
fn availability_report_420k_channels_30_days() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(dir.path().join("audit.db")).unwrap();
    let channels: Vec<String> = (0..COUNTIES * TOWNS)
        .flat_map(|t| {
            let town = town_code(t / TOWNS, t % TOWNS);
            (0..NVRS * CHANNELS).map(move |n| format!("{town}00131{n:07}"))
        })
        .collect();
    let day_ms: u64 = 86_400_000;
    let start = 1_780_000_000_000u64; // 2026-05-28, any fixed day
                                      // Day 0: every channel added ON. Then each day a tenth of them (a
                                      // different tenth each day) goes OFF for a known 1 to 60 minutes.
    let built = Instant::now();
    let mut expected_off_last_day: u64 = 0;
    let mut rows = 0usize;
    let mut batch = Vec::with_capacity(200_000);
    let flush = |batch: &mut Vec<StatusChange>, store: &mut SqliteStore| {
        store.record_status(batch).unwrap();
        batch.clear();
    };
    for ch in &channels {
        batch.push(StatusChange {
            at_ms: start,
            channel: ch.clone(),
            online: true,
            via: ch[..6].to_owned(),
            intact: Some(true),
        });
        if batch.len() == 200_000 {
            rows += batch.len();
            flush(&mut batch, &mut store);
        }
    }
    for day in 1..=30u64 {
        for (i, ch) in channels.iter().enumerate() {
            if (i as u64 + day) % 10 != 0 {
                continue;
            }
            let off_at = start + day * day_ms + (i as u64 * 7_919) % (day_ms - 3_600_000);
            let off_for = 60_000 * (1 + (i as u64 % 60));
            if day == 30 {
                expected_off_last_day += off_for;
            }
            for (at_ms, online) in [(off_at, false), (off_at + off_for, true)] {
                batch.push(StatusChange {
                    at_ms,
                    channel: ch.clone(),
                    online,
                    via: ch[..6].to_owned(),
                    intact: Some(online),
                });
            }
            if batch.len() >= 200_000 {
                rows += batch.len();
                flush(&mut batch, &mut store);
            }
        }
    }
    rows += batch.len();
    flush(&mut batch, &mut store);
    let insert_s = built.elapsed().as_secs_f64();

    // The last day's report, as `gbgate report availability --day` runs it.
    let from = start + 30 * day_ms;
    let to = from + day_ms;
    let t = Instant::now();
    let history = store.status_history(from, to).unwrap();
    let read_s = t.elapsed().as_secs_f64();
    let times = channel_times(&history, from, to);
    let rates = group_rates(&times, |t| county_of(&t.channel).into_iter().collect());
    let day_s = t.elapsed().as_secs_f64();
    // Validity: every channel, every minute off accounted for.
    assert_eq!(times.len(), channels.len());
    let known: u64 = times.iter().map(|t| t.known_ms).sum();
    let online: u64 = times.iter().map(|t| t.online_ms).sum();
    assert_eq!(known, channels.len() as u64 * day_ms);
    assert_eq!(
        known - online,
        expected_off_last_day,
        "offline time of the last day"
    );
    assert_eq!(rates.len() as u32, COUNTIES);

    // The whole 30 days in one window.
    let t = Instant::now();
    let history30 = store.status_history(start, to).unwrap();
    let times30 = channel_times(&history30, start, to);
    let month_s = t.elapsed().as_secs_f64();
    assert_eq!(times30.len(), channels.len());

    // Baseline, same run: reading every row of the table once, in the
    // order a report wants it.
    let t = Instant::now();
    let conn = store.connection();
    let mut stmt = conn
        .prepare("SELECT channel, at_ms, online, via FROM status_changes ORDER BY channel, at_ms")
        .unwrap();
    let mut rows_read = 0usize;
    let mut q = stmt.query([]).unwrap();
    while let Some(r) = q.next().unwrap() {
        let channel: String = r.get(0).unwrap();
        rows_read += usize::from(!channel.is_empty());
    }
    let scan_s = t.elapsed().as_secs_f64();
    assert_eq!(rows_read, rows);
    println!(
        "bench: availability_report channels={} changes={rows} insert_s={insert_s:.1} day_report_s={day_s:.2} (read {read_s:.2}) month_report_s={month_s:.2} rate_last_day={:.4}",
        channels.len(),
        online as f64 / known as f64
    );
    println!(
        "bench:   baseline: reading all {rows} rows in channel order {scan_s:.2} s; the day's report is {:.2}x that, the month's {:.2}x",
        day_s / scan_s.max(1e-9),
        month_s / scan_s.max(1e-9)
    );
}
