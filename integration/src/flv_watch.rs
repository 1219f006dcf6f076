//! Watching HTTP-FLV as a player would, for tests and benchmarks: whether
//! a stream carries live video (not only a stale hub's cached GOP), the
//! longest stall, and how long a restarted node takes to give video again.

use std::io::Read;
use std::time::{Duration, Instant};

use topology::GbId;

use crate::harness::Cluster;

/// Read FLV from `url` for up to `within`, calling `on_video(elapsed,
/// timestamp_ms)` for each video tag until it returns true. True when it
/// did; false when the stream ended or time ran out first.
pub fn video_tags(
    url: &str,
    within: Duration,
    mut on_video: impl FnMut(Duration, u32) -> bool,
) -> bool {
    let start = Instant::now();
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(within))
        .build()
        .new_agent();
    let Ok(resp) = agent.get(url).call() else {
        return false;
    };
    let mut body = resp.into_body().into_reader();
    let mut flv = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 13; // FLV header (9) + PreviousTagSize0 (4)
    while start.elapsed() < within {
        let n = match body.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        flv.extend_from_slice(&buf[..n]);
        // Tags: type, size (3), timestamp (3 + 1 extended), stream id (3), data, previous size (4).
        while flv.len() >= at + 11 {
            let size = u32::from_be_bytes([0, flv[at + 1], flv[at + 2], flv[at + 3]]) as usize;
            if flv.len() < at + 11 + size + 4 {
                break;
            }
            let ts = u32::from_be_bytes([flv[at + 7], flv[at + 4], flv[at + 5], flv[at + 6]]);
            if flv[at] == 9 && on_video(start.elapsed(), ts) {
                return true;
            }
            at += 11 + size + 4;
        }
    }
    false
}

/// Watch `url` for up to `within`: when this one connection carries live
/// video (tags still arriving after the first 300 ms, the cached GOP's
/// burst, their timestamps advancing by 1 s), how long after connecting
/// its first video tag came. A hub whose source is gone hands out its
/// cache and then nothing, so it never counts.
pub fn first_video(url: &str, within: Duration) -> Option<Duration> {
    let mut first: Option<Duration> = None;
    let mut live: Option<u32> = None;
    let mut found = None;
    video_tags(url, within, |now, ts| {
        let start = *first.get_or_insert(now);
        if now < start + Duration::from_millis(300) {
            return false;
        }
        let ts0 = *live.get_or_insert(ts);
        if ts.saturating_sub(ts0) >= 1000 {
            found = Some(start);
            return true;
        }
        false
    });
    found
}

/// Watch `url` for `span`: the longest wait between two video tags after
/// the first, or `None` when the stream ended before `span` was up.
pub fn longest_gap(url: &str, span: Duration) -> Option<Duration> {
    let mut last: Option<Duration> = None;
    let mut gap = Duration::ZERO;
    video_tags(url, span + Duration::from_secs(5), |now, _| {
        if let Some(prev) = last {
            gap = gap.max(now - prev);
        }
        last = Some(now);
        now >= span
    })
    .then_some(gap)
}

/// Kill node `id`, start it again, and have a viewer of `url` retry every
/// 100 ms, as a player does, until it gets live video: how long after the
/// restart the first live frame came (`None` within 20 s).
pub fn restart_until_video(c: &mut Cluster, id: &GbId, url: &str) -> Option<Duration> {
    c.kill_node(id);
    c.start_node(id).ok()?;
    let restarted = Instant::now();
    while restarted.elapsed() < Duration::from_secs(20) {
        let attempt = restarted.elapsed();
        if let Some(first) = first_video(url, Duration::from_secs(4)) {
            return Some(attempt + first);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}
