//! Benchmarks (run by `make bench`, release build; ignored by `make test`).
//! Each prints one `bench:` line with its figures; BENCHMARKS.md keeps the
//! latest results and the command that produced them.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;
use std::time::{Duration, Instant};

use integration::demo::TreeSpec;
use integration::harness::{bin_dir, Cluster, FleetSpec};

fn bench_spec(sip_base: u16, http_base: u16, counties: usize, transport: &'static str) -> TreeSpec {
    TreeSpec {
        counties,
        towns: 1,
        villages: 1,
        sip_base,
        http_base,
        keepalive_secs: 5,
        register_retry_secs: 1,
        t1_ms: 500,
        transport,
        ..TreeSpec::default()
    }
}

/// REGISTER with digest: 10,000 devices against one node, 200 in flight.
#[test]
#[ignore = "benchmark: make bench"]
fn register_rate_10k_devices() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start_nodes(
        dir.path(),
        bench_spec(55060, 58080, 0, "udp"),
        FleetSpec::default(),
    )
    .unwrap();
    let city = cluster.tree.root().clone();
    let out = Command::new(bin_dir().join("gbsim"))
        .args([
            "--server",
            &city.sip.to_string(),
            "--server-id",
            city.id.as_str(),
        ])
        .args([
            "--ipcs",
            "10000",
            "--nvrs",
            "0",
            "--window",
            "200",
            "--bench-register",
        ])
        .args(["--keepalive", "60"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("register_bench"))
        .unwrap();
    println!("bench: {line}");
    let topo = cluster.topology(&city.id).unwrap();
    assert_eq!(topo.devices.registered, 10_000);
    println!(
        "bench: register node_rss_kib={} after 10000 devices",
        cluster.rss_kib(&city.id).unwrap_or(0)
    );
}

/// Channels reaching the city through four tiers (village → town → county → city).
/// Logs stay in target/bench-logs/NAME after a run, to read when a figure looks wrong.
fn log_dir(name: &str) -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-logs")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn propagate(nvrs: usize, channels: usize, sip_base: u16, http_base: u16, transport: &'static str) {
    let dir = log_dir(&format!("propagate-{nvrs}x{channels}-{transport}"));
    let fleet = FleetSpec {
        ipcs: 0,
        nvrs,
        channels,
        media: None,
    };
    let mut cluster =
        Cluster::start_nodes(&dir, bench_spec(sip_base, http_base, 1, transport), fleet).unwrap();
    cluster
        .wait_for(
            "the chain to link",
            Duration::from_secs(30),
            Cluster::linked,
        )
        .unwrap();
    let city = cluster.tree.root().id;
    let village = cluster.tree.level("village")[0].id;
    let rss_before = cluster.rss_kib(&city).unwrap_or(0);
    let total = nvrs * channels;
    let start = Instant::now();
    cluster.start_fleet(&village).unwrap();
    let mut at_village = None;
    let took = cluster
        .wait_for("all channels at the city", Duration::from_secs(600), |c| {
            if at_village.is_none() {
                if let Ok(t) = c.topology(&village) {
                    if t.catalog.channels >= total {
                        at_village = Some(start.elapsed());
                    }
                }
            }
            c.topology(&city)
                .is_ok_and(|t| t.catalog.channels >= total && t.catalog.online >= total)
        })
        .unwrap();
    // Let allocator and maps settle before reading memory.
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = cluster.rss_kib(&city).unwrap_or(0);
    let topo = cluster.topology(&city).unwrap();
    let per_channel =
        (rss_after.saturating_sub(rss_before) as f64 * 1024.0) / topo.catalog.entries as f64;
    println!(
        "bench: propagate transport={transport} nvrs={nvrs} channels={total} at_village_s={:.2} at_city_s={:.2} city_entries={} city_rss_before_kib={rss_before} city_rss_after_kib={rss_after} bytes_per_entry={per_channel:.0}",
        at_village.map_or(f64::NAN, |d| d.as_secs_f64()),
        took.as_secs_f64(),
        topo.catalog.entries,
    );
    let m = cluster.metrics(&city).unwrap();
    for l in m.lines().filter(|l| {
        l.starts_with("gbgate_sip_retransmissions_total") || l.starts_with("gbgate_catalog_entries")
    }) {
        println!("bench:   city {l}");
    }
}

#[test]
#[ignore = "benchmark: make bench"]
fn propagate_100k_channels_udp() {
    propagate(100, 1000, 55160, 58180, "udp");
}

#[test]
#[ignore = "benchmark: make bench"]
fn propagate_100k_channels_tcp() {
    propagate(100, 1000, 55260, 58280, "tcp");
}

#[test]
#[ignore = "benchmark: make bench"]
fn propagate_420k_channels_udp() {
    propagate(420, 1000, 55360, 58380, "udp");
}

#[test]
#[ignore = "benchmark: make bench"]
fn propagate_420k_channels_tcp() {
    propagate(420, 1000, 55460, 58480, "tcp");
}
