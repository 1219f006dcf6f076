//! Decision speed of the compiled index against casbin on the same rules.
//!
//! `cargo test --release -p policy --test bench -- --ignored --nocapture`
//!
//! Rules are generated like a province's sharing policy: users in departments,
//! departments under a small role tree, area prefixes at every civil-code
//! level, single channels, named groups, catalog groups, some denies and some
//! expiring grants. Before timing, the index and casbin must agree on a sample.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use policy::oracle::Oracle;
use policy::{Action, Outcome, Policy, Request, Subject};
use topology::GbId;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn percent(&mut self) -> usize {
        self.below(100)
    }
}

const PROVINCES: [&str; 4] = ["34", "35", "36", "37"];
const ACTIONS: [&str; 6] = ["catalog", "live", "playback", "download", "ptz", "talk"];

fn channel(rng: &mut Rng) -> String {
    // province, city, county, grassroots 00, industry 00, type 132 (camera), network 0, serial
    format!(
        "{}{:02}{:02}0000{}0{:06}",
        PROVINCES[rng.below(PROVINCES.len())],
        1 + rng.below(10),
        1 + rng.below(10),
        "132",
        rng.below(1000)
    )
}

fn catalog_group(rng: &mut Rng) -> String {
    let kind = if rng.below(2) == 0 { "215" } else { "216" };
    format!("3402000000{kind}0{:06}", rng.below(100))
}

fn area(rng: &mut Rng) -> String {
    let ch = channel(rng);
    let len = [2, 4, 6, 8, 10][rng.below(5)];
    format!("{}*", &ch[..len])
}

/// How many of each subject; all grow with the rule count, so each subject
/// holds about as many rules at 100,000 as at 10,000.
struct Shape {
    users: usize,
    depts: usize,
    roles: usize,
    nodes: usize,
}

const GROUPS: usize = 50;

fn node(i: usize) -> String {
    format!("node:3400000000200000{i:04}")
}

/// `total` rule lines split over `files` texts.
fn generate(total: usize, files: usize, rng: &mut Rng) -> (Vec<String>, Shape) {
    let shape = Shape {
        users: total / 20,
        depts: (total / 100).max(5),
        roles: (total / 500).max(2),
        nodes: (total / 1000).max(2),
    };
    let mut lines = Vec::with_capacity(total);
    for u in 0..shape.users {
        lines.push(format!("g, user:u{u}, dept:d{}", rng.below(shape.depts)));
    }
    for d in 0..shape.depts {
        lines.push(format!("g, dept:d{d}, role:r{}", rng.below(shape.roles)));
    }
    // A role tree: r1 and r2 under r0, r3 and r4 under r1, ...
    for r in 1..shape.roles {
        lines.push(format!("g, role:r{r}, role:r{}", r / 2));
    }
    for g in 0..GROUPS {
        for _ in 0..4 {
            let member = match rng.below(3) {
                0 => channel(rng),
                1 => area(rng),
                _ => catalog_group(rng),
            };
            lines.push(format!("g2, {member}, group:g{g}"));
        }
    }
    while lines.len() < total {
        let subject = match rng.percent() {
            0..60 => format!("dept:d{}", rng.below(shape.depts)),
            60..75 => format!("role:r{}", rng.below(shape.roles)),
            75..90 => format!("user:u{}", rng.below(shape.users)),
            _ => node(rng.below(shape.nodes)),
        };
        let object = match rng.percent() {
            0..50 => area(rng),
            50..75 => channel(rng),
            75..83 => format!("group:g{}", rng.below(GROUPS)),
            83..95 => format!("group:{}", catalog_group(rng)),
            _ => "*".to_owned(),
        };
        let action = if rng.below(5) == 0 {
            "*"
        } else {
            ACTIONS[rng.below(ACTIONS.len())]
        };
        // Denies are carve-outs: a camera, a catalog group or a county, never everything.
        let narrow = !object.ends_with('*') || object.len() > 5;
        let effect = if narrow && rng.below(10) == 0 {
            "deny"
        } else {
            "allow"
        };
        let mut line = format!("p, {subject}, {object}, {action}, {effect}");
        if rng.below(10) == 0 {
            let year = 2025 + rng.below(4);
            let _ = write!(line, ", {year}-0{}-01T00:00:00Z", 1 + rng.below(9));
        }
        lines.push(line);
    }
    // Shuffle so every file mixes kinds, as hand-written files do.
    for i in (1..lines.len()).rev() {
        let j = rng.below(i + 1);
        lines.swap(i, j);
    }
    let per = lines.len().div_ceil(files);
    let texts = lines
        .chunks(per)
        .map(|c| format!("# generated\n{}\n", c.join("\n")))
        .collect();
    (texts, shape)
}

struct Req {
    subject: Subject,
    channel: GbId,
    ancestors: Vec<GbId>,
    action: Action,
}

fn requests(n: usize, shape: &Shape, rng: &mut Rng) -> Vec<Req> {
    (0..n)
        .map(|_| {
            let subject = match rng.percent() {
                0..70 => format!("user:u{}", rng.below(shape.users)),
                70..85 => format!("dept:d{}", rng.below(shape.depts)),
                85..95 => node(rng.below(shape.nodes)),
                _ => format!("user:stranger{}", rng.below(100)),
            };
            let ancestors = (0..rng.below(4))
                .map(|_| GbId::parse(&catalog_group(rng)).expect("generated ID"))
                .collect();
            Req {
                subject: subject.parse().expect("generated subject"),
                channel: GbId::parse(&channel(rng)).expect("generated ID"),
                ancestors,
                action: Action::ALL[rng.below(Action::ALL.len())],
            }
        })
        .collect()
}

fn request(r: &Req) -> Request<'_> {
    Request {
        subject: &r.subject,
        channel: &r.channel,
        ancestors: &r.ancestors,
        action: r.action,
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn now() -> SystemTime {
    "2026-09-01T00:00:00Z"
        .parse::<policy::Expiry>()
        .expect("valid time")
        .to_system_time()
}

fn run(total: usize, casbin_samples: usize) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ total as u64);
    let (texts, shape) = generate(total, 8, &mut rng);
    let dir = std::env::temp_dir().join(format!("policy-bench-{}-{total}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let paths: Vec<PathBuf> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let p = dir.join(format!("rules{i}.csv"));
            std::fs::write(&p, t).expect("write rules");
            p
        })
        .collect();

    let t = Instant::now();
    let policy = match Policy::load(&paths) {
        Ok(p) => p,
        Err(e) => panic!("generated policy refused:\n{e}"),
    };
    let load = t.elapsed();
    std::fs::remove_dir_all(&dir).expect("clean up");
    let t = Instant::now();
    let mut oracle = Oracle::new(&policy).expect("casbin builds");
    let casbin_build = t.elapsed();
    let now = now();

    // Validity first: both must answer the same before either is timed.
    let sample = requests(casbin_samples, &shape, &mut rng);
    let mut casbin_times = Vec::with_capacity(sample.len());
    let mut allowed = 0;
    for r in &sample {
        let req = request(r);
        let ours = policy.decide(&req, now).outcome == Outcome::Allow;
        let t = Instant::now();
        let theirs = oracle.enforce(&req, now).expect("casbin answers");
        casbin_times.push(t.elapsed());
        assert_eq!(
            ours, theirs,
            "index and casbin disagree on {:?} {:?} {:?} {:?}",
            r.subject, r.channel, r.ancestors, r.action
        );
        allowed += usize::from(ours);
    }
    casbin_times.sort();

    let reqs = requests(200_000, &shape, &mut rng);
    let mut times = Vec::with_capacity(reqs.len());
    let mut allowed_big = 0usize;
    for r in &reqs {
        let req = request(r);
        let t = Instant::now();
        let d = policy.decide(&req, now);
        times.push(t.elapsed());
        allowed_big += usize::from(d.outcome == Outcome::Allow);
    }
    times.sort();
    // What the clock itself adds to each timed call.
    let mut empty: Vec<Duration> = (0..reqs.len())
        .map(|_| {
            let t = Instant::now();
            t.elapsed()
        })
        .collect();
    empty.sort();

    let (p50, p99) = (percentile(&times, 50), percentile(&times, 99));
    let (c50, c99) = (percentile(&casbin_times, 50), percentile(&casbin_times, 99));
    println!(
        "rules {} ({} subjects): load+compile {} files {:.1} ms; casbin Enforcer::new {:.1} ms",
        policy.rule_count(),
        policy.subjects().len(),
        paths.len(),
        load.as_secs_f64() * 1e3,
        casbin_build.as_secs_f64() * 1e3
    );
    println!(
        "  index decide:   p50 {:>9.3} us  p99 {:>9.3} us  ({} requests, {:.0}% allowed)",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        reqs.len(),
        100.0 * allowed_big as f64 / reqs.len() as f64
    );
    println!(
        "  (timer alone:   p50 {:>9.3} us, included above)",
        percentile(&empty, 50).as_secs_f64() * 1e6
    );
    println!(
        "  casbin enforce: p50 {:>9.3} us  p99 {:>9.3} us  ({} requests, {:.0}% allowed, all agree with the index)",
        c50.as_secs_f64() * 1e6,
        c99.as_secs_f64() * 1e6,
        sample.len(),
        100.0 * allowed as f64 / sample.len() as f64
    );
    println!(
        "  casbin/index: p50 {:.0}x, p99 {:.0}x",
        c50.as_secs_f64() / p50.as_secs_f64(),
        c99.as_secs_f64() / p99.as_secs_f64()
    );
    if total <= 10_000 && !cfg!(debug_assertions) {
        assert!(
            p50 <= Duration::from_micros(2),
            "decide p50 {p50:?} is over the 2 us target"
        );
    }
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn decide_vs_casbin() {
    run(10_000, 400);
    run(100_000, 40);
}
