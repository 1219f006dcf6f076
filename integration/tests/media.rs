//! The media plane end to end: live and playback video from a village
//! camera to viewers at the city, through four tiers of `gbgate`
//! processes (city ← county ← town ← village), checked with ffprobe and
//! ffmpeg, decoders we did not write.
//!
//! Needs `make clips` (the Makefile's `test` target runs it).
//!
//! With `GBGATE_TEST_LINKS=quic` every link between the tiers runs over
//! QUIC (certificates of a CA made for the run), with `mixed` the county's
//! to the city does (towns link over TCP, villages over UDP); `make test`
//! runs this file all three ways.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration::demo::TreeSpec;
use integration::harness::{test_clip as clip, Cluster, FleetSpec};
use topology::GbId;

/// A 4-tier chain with one camera streaming `media`; short timers.
fn chain(dir: &Path, base: u16, media: PathBuf, media_transport: &'static str) -> Cluster {
    let fleet = FleetSpec::one_camera(media);
    chain_of(dir, base, fleet, media_transport)
}

/// A 4-tier chain with `fleet` at the village; short timers.
fn chain_of(dir: &Path, base: u16, fleet: FleetSpec, media_transport: &'static str) -> Cluster {
    let spec = TreeSpec {
        media_transport,
        ..TreeSpec::media_chain(base, base + 3000)
    };
    let c = Cluster::start(dir, spec, fleet).expect("the chain starts");
    let city = c.tree.root().id;
    c.wait_for("the camera at the city", Duration::from_secs(20), |c| {
        c.catalog(&city)
            .map(|cat| {
                cat.iter()
                    .any(|e| e.device_id.get(10..13) == Some("131") && e.status == "ON")
            })
            .unwrap_or(false)
    })
    .expect("the catalog reaches the city");
    if let Some(links) = integration::demo::test_links() {
        // Every tier but the village accepts one child over QUIC; in a
        // mixed tree only the city does.
        let parents = if links == "quic" {
            &["city", "county", "town"][..]
        } else {
            &["city"]
        };
        for node in c.tree.nodes.iter().filter(|n| parents.contains(&n.level)) {
            let links = c.metric(&node.id, "gbgate_quic_links", "").unwrap_or(0.0);
            assert_eq!(links, 1.0, "{} has {links} QUIC links", node.name);
        }
    }
    c
}

fn camera(c: &Cluster) -> String {
    let city = c.tree.root().id;
    c.catalog(&city)
        .unwrap()
        .into_iter()
        .find(|e| e.device_id.get(10..13) == Some("131"))
        .unwrap()
        .device_id
}

fn tiers(c: &Cluster) -> Vec<GbId> {
    c.tree.nodes.iter().map(|n| n.id).collect()
}

#[derive(Debug, PartialEq)]
struct Probe {
    codec: String,
    width: u32,
    height: u32,
    rate: String,
    frames: u64,
}

/// ffprobe reads 5 s of the stream and counts its frames.
fn probe(url: &str) -> Probe {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-read_intervals", "%+5", "-count_frames"])
        .args(["-select_streams", "v:0", "-show_entries"])
        .args(["stream=codec_name,width,height,r_frame_rate,nb_read_frames"])
        .args(["-of", "default=noprint_wrappers=1", url])
        .output()
        .expect("ffprobe runs (apt install ffmpeg)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success() && err.trim().is_empty(),
        "ffprobe {url}: {err}\n{text}"
    );
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_default()
            .to_owned()
    };
    Probe {
        codec: field("codec_name"),
        width: field("width").parse().unwrap_or(0),
        height: field("height").parse().unwrap_or(0),
        rate: field("r_frame_rate"),
        frames: field("nb_read_frames").parse().unwrap_or(0),
    }
}

/// The static ffmpeg of imageio-ffmpeg (reads Enhanced-RTMP H.265 in FLV).
fn modern_ffmpeg() -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())",
        ])
        .output()
        .expect("python3 runs");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !path.is_empty(),
        "imageio-ffmpeg missing: `python3 -m pip install imageio-ffmpeg` (make deps)"
    );
    path
}

/// Decode 5 s of the stream with `ffmpeg`; returns (stream line, frames).
/// Any decoder error fails.
fn decode(ffmpeg: &str, url: &str) -> (String, u64) {
    let out = Command::new(ffmpeg)
        .args(["-nostdin", "-hide_banner", "-v", "info", "-i", url])
        .args(["-t", "5", "-map", "0:v:0", "-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{ffmpeg} {url} failed:\n{err}");
    let bad: Vec<&str> = err
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error") || l.contains("corrupt") || l.contains("invalid")
        })
        .collect();
    assert!(
        bad.is_empty(),
        "decode errors from {url}:\n{}",
        bad.join("\n")
    );
    let stream = err
        .lines()
        .find(|l| l.contains("Video:"))
        .unwrap_or_default()
        .to_owned();
    let frames = err
        .rsplit("frame=")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (stream, frames)
}

/// An HTTP viewer in a thread, counting the bytes it reads.
struct Reader {
    bytes: Arc<AtomicU64>,
    done: std::thread::JoinHandle<String>,
}

fn read_stream(url: String, stop_after: u64) -> Reader {
    let bytes = Arc::new(AtomicU64::new(0));
    let b = bytes.clone();
    let done = std::thread::spawn(move || {
        let resp = match ureq::get(&url).call() {
            Ok(r) => r,
            Err(e) => return format!("request failed: {e}"),
        };
        let mut body = resp.into_body().into_reader();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match body.read(&mut buf) {
                Ok(0) => return "end".into(),
                Ok(n) => {
                    if b.fetch_add(n as u64, Ordering::Relaxed) + n as u64 >= stop_after {
                        return "enough".into();
                    }
                }
                Err(e) => return format!("read failed: {e}"),
            }
        }
    });
    Reader { bytes, done }
}

#[test]
fn live_h264_reaches_the_city_as_flv_and_ts() {
    let dir = tempfile::tempdir().unwrap();
    let c = chain(dir.path(), 26000, clip("h264.h264"), "udp");
    let cam = camera(&c);
    let http = c.tree.root().http;
    for ext in ["flv", "ts"] {
        let url = format!("http://{http}/live/{cam}.{ext}");
        let p = probe(&url);
        assert_eq!(
            (p.codec.as_str(), p.width, p.height, p.rate.as_str()),
            ("h264", 640, 360, "25/1"),
            "{url}: {p:?}"
        );
        assert!(p.frames >= 125, "5 s of frames from {url}: {p:?}");
        let (stream, frames) = decode("ffmpeg", &url);
        assert!(
            stream.contains("h264") && stream.contains("640x360"),
            "{stream}"
        );
        assert!(frames >= 120, "{url}: decoded {frames} frames in 5 s");
        eprintln!("{ext}: {p:?}; decoded {frames} frames without errors");
    }
    if integration::demo::test_links().is_some() {
        let city = c.tree.root().id;
        let packets = c
            .metric(&city, "gbgate_quic_media_packets_total", "")
            .unwrap();
        assert!(
            packets > 1000.0,
            "media reached the city over QUIC: {packets} packets"
        );
    }
}

#[test]
fn live_h265_reaches_the_city_as_flv_and_ts() {
    let dir = tempfile::tempdir().unwrap();
    let c = chain(dir.path(), 26020, clip("h265.h265"), "udp");
    let cam = camera(&c);
    let http = c.tree.root().http;
    // TS: Debian's ffmpeg reads it.
    let ts = format!("http://{http}/live/{cam}.ts");
    let p = probe(&ts);
    assert_eq!(
        (p.codec.as_str(), p.width, p.height, p.rate.as_str()),
        ("hevc", 640, 360, "25/1"),
        "{p:?}"
    );
    assert!(p.frames >= 125, "{p:?}");
    // FLV, Enhanced RTMP (hvc1) and the legacy CodecID 12: ffmpeg ≥ 6.1.
    let modern = modern_ffmpeg();
    for q in ["", "?hevc=legacy"] {
        let url = format!("http://{http}/live/{cam}.flv{q}");
        let (stream, frames) = decode(&modern, &url);
        assert!(
            stream.contains("hevc") && stream.contains("640x360") && stream.contains("25 fps"),
            "{url}: {stream}"
        );
        assert!(frames >= 120, "{url}: decoded {frames} frames in 5 s");
        eprintln!("flv{q}: {stream}; {frames} frames");
    }
}

#[test]
fn twenty_viewers_cost_one_stream_per_tier_and_leave_with_a_bye_after_the_linger() {
    let dir = tempfile::tempdir().unwrap();
    let c = chain(dir.path(), 26040, clip("h264.h264"), "udp");
    let cam = camera(&c);
    let city = c.tree.root().id;
    let village = c.tree.level("village")[0].id;
    let url = format!("http://{}/live/{cam}.flv", c.tree.root().http);
    // 20 viewers at once; each reads 200 KB (about 2 s of this clip).
    let readers: Vec<Reader> = (0..20).map(|_| read_stream(url.clone(), 200_000)).collect();
    c.wait_for("20 viewers at the city", Duration::from_secs(20), |c| {
        c.metric(&city, "gbgate_viewers", "").unwrap_or(0.0) >= 20.0
    })
    .expect("all 20 viewers join");
    for id in tiers(&c) {
        let invites = c.metric(&id, "gbgate_invites_sent_total", "").unwrap();
        let rtp_in = c.metric(&id, "gbgate_rtp_streams_in", "").unwrap();
        assert_eq!(
            (invites, rtp_in),
            (1.0, 1.0),
            "tier {id}: one INVITE down, one RTP stream in"
        );
    }
    for id in tiers(&c).iter().filter(|id| **id != city) {
        // The tier above is one viewer here: one RTP stream up.
        assert_eq!(
            c.metric(id, "gbgate_rtp_streams_out", "").unwrap(),
            1.0,
            "{id}"
        );
    }
    for r in readers {
        let how = r.done.join().unwrap();
        assert_eq!(
            how,
            "enough",
            "a viewer got {} bytes",
            r.bytes.load(Ordering::Relaxed)
        );
    }
    // All left: after the linger (2 s) the city closes and BYE travels down.
    let took = c
        .wait_for("BYE to reach the device", Duration::from_secs(20), |c| {
            c.metric(&village, "gbgate_byes_sent_total", "")
                .unwrap_or(0.0)
                >= 1.0
                && c.metric(&village, "gbgate_rtp_streams_in", "")
                    .unwrap_or(1.0)
                    == 0.0
        })
        .expect("the village hangs up on the camera");
    eprintln!("BYE reached the camera {took:?} after the viewers left (linger 2 s per tier)");
    let sim_log = std::fs::read_to_string(c.dir().join(format!("sim-{village}.log"))).unwrap();
    assert!(sim_log.contains("BYE: stream stopped"), "{sim_log}");
    for id in tiers(&c) {
        assert!(c.streams(&id).unwrap().is_empty(), "{id} still has streams");
    }
}

#[test]
fn ps_from_other_muxers_decodes_at_the_city() {
    // GStreamer's mpegpsmux writes a PSM; ffmpeg's vob muxer writes none.
    for (i, file) in ["gst.ps", "ffmpeg.vob"].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let c = chain(dir.path(), 26060 + 20 * i as u16, clip(file), "udp");
        let url = format!("http://{}/live/{}.ts", c.tree.root().http, camera(&c));
        let p = probe(&url);
        assert_eq!(
            (p.codec.as_str(), p.width, p.height),
            ("h264", 640, 360),
            "{file}: {p:?}"
        );
        assert!(p.frames >= 100, "{file}: {p:?}");
        let (_, frames) = decode("ffmpeg", &url);
        eprintln!("{file}: {p:?}, decoded {frames} frames without errors");
    }
}

#[test]
fn tcp_passive_and_tcp_active_media_links() {
    for (i, mode) in ["tcp-passive", "tcp-active"].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let c = chain(dir.path(), 26100 + 20 * i as u16, clip("h264.h264"), mode);
        let url = format!("http://{}/live/{}.flv", c.tree.root().http, camera(&c));
        let p = probe(&url);
        assert_eq!((p.codec.as_str(), p.width), ("h264", 640), "{mode}: {p:?}");
        assert!(p.frames >= 125, "{mode}: {p:?}");
        eprintln!("{mode}: {p:?}");
    }
}

#[test]
fn a_viewer_that_reads_nothing_does_not_delay_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let c = chain(dir.path(), 26140, clip("h264_4m.h264"), "udp");
    let cam = camera(&c);
    let city = c.tree.root().id;
    let http = c.tree.root().http;
    // A viewer that sends its request and then never reads.
    let mut stalled = std::net::TcpStream::connect(http).unwrap();
    std::io::Write::write_all(
        &mut stalled,
        format!("GET /live/{cam}.flv HTTP/1.1\r\nHost: {http}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    c.wait_for("the stalled viewer joins", Duration::from_secs(20), |c| {
        c.metric(&city, "gbgate_viewers", "").unwrap_or(0.0) >= 1.0
    })
    .unwrap();
    // And one that reads, but at 40 KB/s of a 500 KB/s stream.
    let stop_slow = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow = {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(16 * 1024).unwrap();
        sock.connect(&http.into()).unwrap();
        let mut s: std::net::TcpStream = sock.into();
        std::io::Write::write_all(
            &mut s,
            format!("GET /live/{cam}.flv HTTP/1.1\r\nHost: {http}\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let stop = stop_slow.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut total = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return (total, true),
                    Ok(n) => total += n as u64,
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (total, false)
        })
    };
    let rss_before = c.rss_kib(&city).unwrap();
    // Meanwhile others watch for 5 s of video each, in turn.
    let started = Instant::now();
    let mut rounds = 0;
    // Until the slow viewer has been skipped ahead (its socket buffers,
    // ~4 MB, and the hub's ring, ~5 s, fill first).
    while started.elapsed() < Duration::from_secs(90)
        && c.metric(&city, "gbgate_viewer_skips_total", "").unwrap() < 1.0
    {
        let t = Instant::now();
        let p = probe(&format!("http://{http}/live/{cam}.flv"));
        assert!(p.frames >= 125, "{p:?}");
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "5 s of video took {:?} next to a stalled viewer",
            t.elapsed()
        );
        rounds += 1;
    }
    let rss_after = c.rss_kib(&city).unwrap();
    let skips = c.metric(&city, "gbgate_viewer_skips_total", "").unwrap();
    eprintln!(
        "{rounds} viewers served next to a stalled one; city RSS {rss_before} → {rss_after} KiB; slow-viewer skips {skips}"
    );
    // Tens of MB of video went by; the stalled viewer may pin the ring and
    // socket buffers, not the stream.
    assert!(
        rss_after < rss_before + 24 * 1024,
        "city memory grew from {rss_before} to {rss_after} KiB"
    );
    eprintln!("city streams: {:?}", c.streams(&city).unwrap());
    drop(stalled);
    stop_slow.store(true, Ordering::Relaxed);
    let (read, dropped) = slow.join().unwrap();
    eprintln!("the slow viewer read {read} bytes; dropped by the node: {dropped}");
    assert!(
        skips >= 1.0,
        "the slow viewer was never skipped ahead or dropped"
    );
}

#[test]
fn a_camera_that_stops_sending_ends_viewers_and_closes_every_tier() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = chain(dir.path(), 26160, clip("h264.h264"), "udp");
    let cam = camera(&c);
    let village = c.tree.level("village")[0].id;
    let reader = read_stream(
        format!("http://{}/live/{cam}.flv", c.tree.root().http),
        u64::MAX,
    );
    c.wait_for("video flowing", Duration::from_secs(20), |_| {
        reader.bytes.load(Ordering::Relaxed) > 100_000
    })
    .unwrap();
    let killed = Instant::now();
    c.kill_fleet(&village);
    let how = reader.done.join().unwrap();
    let ended_after = killed.elapsed();
    assert_eq!(how, "end", "the viewer's response ends cleanly");
    assert!(
        ended_after < Duration::from_secs(15),
        "the viewer ended {ended_after:?} after the camera stopped (media timeout 3 s)"
    );
    c.wait_for("every tier closed its hub", Duration::from_secs(10), |c| {
        tiers(c).iter().all(|id| {
            c.streams(id).map(|s| s.is_empty()).unwrap_or(false)
                && c.metric(id, "gbgate_streams_open", "").unwrap_or(1.0) == 0.0
        })
    })
    .unwrap();
    eprintln!("the viewer ended {ended_after:?} after the camera went silent; all tiers closed");
}

#[test]
fn playback_through_the_cascade_with_pause_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let c = chain(dir.path(), 26180, clip("h264.h264"), "udp");

    let cam = camera(&c);
    let http = c.tree.root().http;
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    // The whole 6 s range, read by ffprobe to its end (the recording's end
    // ends the response): all of it arrives and decodes.
    let url = format!(
        "http://{http}/playback/{cam}.flv?start={start}&end={}",
        start + 6
    );
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=codec_name,width,nb_read_frames"])
        .args(["-of", "default=noprint_wrappers=1", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frames: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("nb_read_frames="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(text.contains("codec_name=h264"), "{text}");
    assert!(
        (140..=160).contains(&frames),
        "6 s at 25 fps from playback: {frames}"
    );
    // Pause, resume and seek in a second session of 12 s.
    let resp = ureq::get(&format!(
        "http://{http}/playback/{cam}.flv?start={start}&end={}",
        start + 12
    ))
    .call()
    .unwrap();
    let session: u64 = resp
        .headers()
        .get("x-playback-session")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("X-Playback-Session header");
    let bytes = Arc::new(AtomicU64::new(0));
    let b = bytes.clone();
    let reader = std::thread::spawn(move || {
        let mut body = resp.into_body().into_reader();
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = body.read(&mut buf) {
            if n == 0 {
                break;
            }
            b.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let control_with = |body: serde_json::Value| {
        ureq::post(&format!("http://{http}/api/v1/playback/{session}/control"))
            .send_json(body)
            .map(|r| r.status().as_u16())
    };
    let control = |action: &str| control_with(serde_json::json!({ "action": action }));
    assert_eq!(control("pause").unwrap(), 204);
    std::thread::sleep(Duration::from_millis(700));
    let paused_at = bytes.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(4)); // longer than the media timeout
    let while_paused = bytes.load(Ordering::Relaxed) - paused_at;
    assert_eq!(control("play").unwrap(), 204);
    std::thread::sleep(Duration::from_secs(2));
    let after_resume = bytes.load(Ordering::Relaxed) - paused_at - while_paused;
    eprintln!("paused: {while_paused} bytes in 4 s; resumed: {after_resume} bytes in 2 s");
    assert!(
        while_paused < 20_000,
        "{while_paused} bytes arrived while paused"
    );
    assert!(
        after_resume > 50_000,
        "only {after_resume} bytes after resuming"
    );
    // About 4 s of the 12 s range are played; seek to 11 s: the recording
    // ends about a second later instead of 8 s later.
    let seeked = Instant::now();
    assert_eq!(
        control_with(serde_json::json!({ "action": "play", "position": 11 })).unwrap(),
        204
    );
    reader.join().unwrap();
    let rest = seeked.elapsed();
    eprintln!("after the seek to 11 s the recording ended {rest:?} later");
    assert!(
        rest < Duration::from_secs(5),
        "the seek was not honoured: {rest:?}"
    );
    assert!(
        c.streams(&c.tree.root().id).unwrap().is_empty(),
        "the playback session closed at its end"
    );
}

/// Status and body of a GET that may fail (the body of an error too).
fn get_text(url: &str) -> (u16, String) {
    let mut r = ureq::get(url)
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap_or_default())
}

#[test]
fn a_ps_the_node_cannot_read_is_named_to_the_viewer_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    // GStreamer's PS (with a PSM), every video PES header missing its flags.
    let fleet = FleetSpec {
        strip_pes_flags: true,
        ..FleetSpec::one_camera(clip("gst.ps"))
    };
    let c = chain_of(dir.path(), 26200, fleet, "udp");
    let cam = camera(&c);
    let village = c.tree.level("village")[0];
    // The village demuxes the camera's PS: its viewer learns why there is
    // no picture, about a second after the fault, not at the 3 s media
    // timeout (the tiers above must hear it before their own fires).
    let asked = Instant::now();
    let (status, body) = get_text(&format!("http://{}/live/{cam}.flv", village.http));
    let waited = asked.elapsed();
    eprintln!("village viewer after {waited:?}: {status} {body}");
    assert_eq!(status, 502, "{body}");
    assert!(
        body.starts_with("the source's PS could not be read: missing PES flags"),
        "{body}"
    );
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    let village_body = body;
    let counted = |c: &Cluster| {
        c.metric(
            &village.id,
            "gbgate_ps_demux_failures_total",
            "cause=\"missing_pes_flags\"",
        )
        .unwrap()
    };
    assert_eq!(counted(&c), 1.0, "once per stream, not per packet");
    let log = std::fs::read_to_string(c.dir().join(format!("{}.log", village.id))).unwrap();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("the source's PS could not be read"))
        .collect();
    assert_eq!(warned.len(), 1, "logged once per stream: {warned:#?}");
    assert!(
        warned[0].contains(&format!("live/{cam}")) && warned[0].contains("missing PES flags"),
        "{}",
        warned[0]
    );
    // From the city, three tiers up, the viewer hears the same cause: the
    // village's BYE carries it as a Reason and each tier passes it on.
    let asked = Instant::now();
    let (status, body) = get_text(&format!("http://{}/live/{cam}.flv", c.tree.root().http));
    eprintln!("city viewer after {:?}: {status} {body}", asked.elapsed());
    assert_eq!(status, 502, "{body}");
    assert_eq!(
        body, village_body,
        "the city's viewer reads what the village's did"
    );
    // Counted where the PS is demuxed, not again at each tier it crosses.
    let city = c.tree.root().id;
    assert_eq!(
        c.metric(&city, "gbgate_ps_demux_failures_total", "")
            .unwrap(),
        0.0
    );
    c.wait_for(
        "the village's second stream",
        Duration::from_secs(10),
        |c| counted(c) == 2.0,
    )
    .unwrap();
}
