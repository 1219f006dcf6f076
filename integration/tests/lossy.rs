//! A weak village link: one 4 Mbit/s camera crosses a userspace impairment
//! proxy (seeded loss, delay, jitter, an 8 Mbit/s bottleneck) once as RTP
//! over UDP and once on a QUIC link, at 1 % loss / 30 ms and at 5 % loss /
//! 100 ms. ffmpeg decodes what reaches the top. The benchmark
//! (`tests/bench.rs`, `lossy_link`) runs the same longer and prints the
//! figures; this test checks each run delivered video and that QUIC
//! delivered more intact frames than RTP/UDP on the same seeded link.
//!
//! Needs `make clips`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use integration::link_bench::{run, village_link, LinkKind, VILLAGE_LINKS};
use integration::streamer::Clip;

fn clip() -> Clip {
    Clip::load(&integration::harness::test_clip("h264_4m.h264"), None, None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_delivers_more_intact_frames_than_rtp_over_udp_on_a_lossy_link() {
    let clip = clip();
    let dir = tempfile::tempdir().unwrap();
    for (loss, delay_ms) in VILLAGE_LINKS {
        let mut runs = Vec::new();
        for kind in [LinkKind::RtpUdp, LinkKind::Quic] {
            let (up, down) = village_link(loss, delay_ms);
            let work = dir.path().join(format!("{kind:?}-{delay_ms}"));
            let r = run(kind, &clip, up, down, Duration::from_secs(10), &work)
                .await
                .unwrap();
            eprintln!(
                "{:.0} % / {delay_ms} ms, {kind}: sent {}, received {}, decoded {} ({:.1} %), {} decode errors, longest freeze {:?}, latency p50 {:?} p95 {:?}; proxy lost {} and tail-dropped {}",
                loss * 100.0,
                r.sent,
                r.received,
                r.decoded,
                r.intact_share() * 100.0,
                r.decode_errors,
                r.longest_freeze,
                r.latency_p50,
                r.latency_p95,
                r.proxy_lost,
                r.proxy_queue_drops
            );
            if !r.quic_path.is_empty() {
                eprintln!("  QUIC path: {}", r.quic_path);
            }
            assert!(r.decoded > 0, "{kind}: no video reached the top");
            assert!(r.proxy_lost > 0, "{kind}: the proxy lost nothing");
            runs.push(r);
        }
        let (udp, quic) = (&runs[0], &runs[1]);
        assert!(
            quic.decoded > udp.decoded,
            "at {loss} loss / {delay_ms} ms QUIC decoded {} frames, RTP/UDP {}",
            quic.decoded,
            udp.decoded
        );
    }
}

/// The child's address changes mid-stream (its endpoint moves to a new
/// UDP socket, as after a NAT rebinding): the QUIC connection migrates, the
/// parent sees the new address on the same connection, video goes on, and
/// the link is not made again (so no new registration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_whose_address_changes_keeps_its_link_and_its_video() {
    let clip = clip();
    let dir = tempfile::tempdir().unwrap();
    let m = integration::link_bench::migration(&clip, Duration::from_secs(3), dir.path())
        .await
        .unwrap();
    eprintln!("{m:?}");
    assert_ne!(m.from, m.to, "the child moved");
    assert_eq!(
        m.parent_sees, m.to,
        "the parent's connection follows the child"
    );
    assert_eq!(m.link_ups, 1, "no redial");
    assert!(m.frames_before >= 50, "{m:?}");
    assert!(m.frames_after >= 60, "video went on after the move: {m:?}");
}
