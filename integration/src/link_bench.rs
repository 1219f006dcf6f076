//! Experiments on one link between two tiers, run in one process with
//! gbgate's own senders and receivers:
//!
//! * [`run`]: one camera over an impaired link, measured at the receiving
//!   side (the lossy-link test and benchmark);
//! * [`throughput`]: many cameras over one clean loopback link, with the
//!   process's CPU per Gbit/s delivered (QUIC next to RTP/UDP and RTP/TCP).
//!
//! In [`run`] a clip is played in real time into a source hub (the child's); its PS
//! leaves through gbgate's own sender, either as RTP over UDP
//! (`rtp_io::send`) or as QUIC groups on a real QUIC link between two
//! [`QuicLinks`] endpoints with certificates of a CA made for the run. An
//! [`ImpairProxy`] sits between child and parent. The parent receives with
//! gbgate's own receiver into a top hub, and a viewer there writes MPEG-TS
//! to a file, which ffmpeg decodes afterwards: the frames it decodes
//! without error are the intact ones.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use gbgate::streams::hub::{Format, Hub, Next};
use gbgate::streams::rtp_io::{self, LinkMode, MediaSocket, SendTarget};
use gbgate::transport::{Limits, QuicLinks, QuicSetup};
use tokio_util::sync::CancellationToken;
use topology::GbId;

use crate::impair::{ImpairProxy, Impairment};
use crate::streamer::Clip;

/// How the media crosses the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// RTP/PS over UDP, as GB/T 28181 sends it.
    RtpUdp,
    /// RTP/PS over TCP (RFC 4571), one connection per session.
    RtpTcp,
    /// RTP/PS in QUIC groups, one stream per GOP.
    Quic,
}

impl std::fmt::Display for LinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LinkKind::RtpUdp => "RTP/UDP",
            LinkKind::RtpTcp => "RTP/TCP",
            LinkKind::Quic => "QUIC",
        })
    }
}

/// What arrived at the top.
#[derive(Debug, Clone)]
pub struct LinkRun {
    /// The link.
    pub kind: LinkKind,
    /// Frames played into the source.
    pub sent: u64,
    /// Frames the receiver passed to the top hub.
    pub received: u64,
    /// Frames ffmpeg decoded from the top's MPEG-TS.
    pub decoded: u64,
    /// Decode errors ffmpeg reported.
    pub decode_errors: u64,
    /// The longest time without a new frame at the top.
    pub longest_freeze: Duration,
    /// Frame latency source → top, median.
    pub latency_p50: Duration,
    /// Frame latency, 95th percentile.
    pub latency_p95: Duration,
    /// Datagrams the proxy lost at random / dropped at the bottleneck, up.
    pub proxy_lost: u64,
    /// Bottleneck drops, up.
    pub proxy_queue_drops: u64,
    /// The QUIC connection's path at the end (RTT, window, losses), as
    /// quinn counts them; empty for RTP/UDP.
    pub quic_path: String,
}

impl LinkRun {
    /// Decoded frames as a share of the frames sent.
    pub fn intact_share(&self) -> f64 {
        self.decoded as f64 / self.sent.max(1) as f64
    }
}

const SSRC: u32 = 0x0100_0001;

/// The village links the lossy-link test and benchmark run: (loss, one-way
/// delay in ms).
pub const VILLAGE_LINKS: [(f64, u64); 2] = [(0.01, 30), (0.05, 100)];

/// Both directions of a lossy village link: `loss` and `delay_ms` each
/// way, jitter a tenth of the delay, an 8 Mbit/s bottleneck; fixed seeds,
/// so every run of a setting loses the same datagrams.
pub fn village_link(loss: f64, delay_ms: u64) -> (Impairment, Impairment) {
    let delay = Duration::from_millis(delay_ms);
    (
        Impairment::lossy(loss, delay, 8_000_000, 7),
        Impairment::lossy(loss, delay, 8_000_000, 8),
    )
}

/// Play `clip` for `duration` across a link of `kind` impaired by `up` and
/// `down`; `work` holds the certificates and the recording.
pub async fn run(
    kind: LinkKind,
    clip: &Clip,
    up: Impairment,
    down: Impairment,
    duration: Duration,
    work: &Path,
) -> Result<LinkRun> {
    std::fs::create_dir_all(work)?;
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let stop = CancellationToken::new();
    let source = Hub::new("source".into(), 4);
    let top = Hub::new("top".into(), 4);
    let mut _keep: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let mut quic_conn: Option<quinn::Connection> = None;
    let proxy;
    match kind {
        LinkKind::RtpTcp => bail!("the impairment proxy carries UDP: RTP/UDP or QUIC"),
        LinkKind::RtpUdp => {
            let rx = MediaSocket::bind(ip, LinkMode::Udp).await?;
            let to = SocketAddr::new(ip, rx.port());
            proxy = ImpairProxy::start(SocketAddr::new(ip, 0), to, up, down).await?;
            tokio::spawn(rtp_io::receive(
                top.clone(),
                rx,
                to,
                Some(SSRC),
                stop.clone(),
            ));
            let tx = MediaSocket::bind(ip, LinkMode::Udp).await?;
            let source = source.clone();
            let target = SendTarget {
                socket: tx,
                peer: proxy.addr,
                ssrc: SSRC,
            };
            let s = stop.clone();
            tokio::spawn(async move {
                if let Ok(v) = source.join(Format::Ps, Duration::from_secs(30)).await {
                    rtp_io::send(v, target, s).await;
                }
            });
        }
        LinkKind::Quic => {
            let (parent_links, parent_addr, ids) = parent_up(work, ip, &stop)?;
            proxy = ImpairProxy::start(SocketAddr::new(ip, 0), parent_addr, up, down).await?;
            let (child_links, conn) =
                child_up(work, ip, &stop, ids, proxy.addr, Arc::default()).await?;
            let inbox = parent_links.expect_media(SSRC);
            tokio::spawn(rtp_io::receive(
                top.clone(),
                MediaSocket::Quic(inbox),
                parent_addr,
                Some(SSRC),
                stop.clone(),
            ));
            let source = source.clone();
            quic_conn = Some(conn.clone());
            let target = SendTarget {
                socket: MediaSocket::QuicSend(conn),
                peer: parent_addr,
                ssrc: SSRC,
            };
            let s = stop.clone();
            tokio::spawn(async move {
                if let Ok(v) = source.join(Format::Ps, Duration::from_secs(30)).await {
                    rtp_io::send(v, target, s).await;
                }
            });
            _keep.push(Box::new(parent_links));
            _keep.push(Box::new(child_links));
        }
    }

    // The top's viewer: frame arrivals and the MPEG-TS they make.
    let arrivals: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let recording = work.join(format!("top-{}.ts", kind).replace('/', "-"));
    let watcher = {
        let top = top.clone();
        let arrivals = arrivals.clone();
        let recording = recording.clone();
        tokio::spawn(async move {
            let mut ts = Vec::new();
            let Ok(mut v) = top.join(Format::Ts, Duration::from_secs(30)).await else {
                return ts;
            };
            while let Next::Data { bytes, pts, .. } = v.next().await {
                if let Some(p) = pts {
                    arrivals
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((p, Instant::now()));
                }
                ts.extend_from_slice(&bytes);
            }
            let _ = std::fs::write(&recording, &ts);
            ts
        })
    };

    // Play the clip in real time.
    let sent_at: HashMap<u64, Instant> = {
        let fps = u64::from(clip.fps().max(1));
        let frames = duration.as_secs() * fps;
        let start = tokio::time::Instant::now();
        let mut sent = HashMap::new();
        for (n, frame) in clip.frames_at(0).take(frames as usize).enumerate() {
            let due = start + Duration::from_micros(n as u64 * 1_000_000 / fps);
            tokio::time::sleep_until(due).await;
            sent.insert(frame.pts, Instant::now());
            source.push(frame);
        }
        sent
    };
    let end_of_play = Instant::now();
    let quic_path = quic_conn
        .as_ref()
        .map(|c| {
            let st = c.stats();
            format!(
                "rtt {:?}, cwnd {} B, sent {} packets, lost {} packets, congestion events {}",
                st.path.rtt,
                st.path.cwnd,
                st.path.sent_packets,
                st.path.lost_packets,
                st.path.congestion_events
            )
        })
        .unwrap_or_default();
    // What is still in flight: the link's delay and a retransmission or two.
    tokio::time::sleep(up.delay * 4 + Duration::from_secs(1)).await;
    source.end("the run is over");
    top.end("the run is over");
    stop.cancel();
    let _ = watcher.await;

    let arrivals = std::mem::take(
        &mut *arrivals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let mut latencies: Vec<Duration> = arrivals
        .iter()
        .filter_map(|(pts, at)| sent_at.get(pts).map(|s| at.saturating_duration_since(*s)))
        .collect();
    latencies.sort();
    let pct = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    let mut freeze = Duration::ZERO;
    let mut last = arrivals.first().map(|(_, t)| *t);
    for (_, t) in &arrivals {
        if let Some(l) = last {
            freeze = freeze.max(t.saturating_duration_since(l));
        }
        last = Some(*t);
    }
    if let Some(l) = last {
        freeze = freeze.max(end_of_play.saturating_duration_since(l));
    }
    let (decoded, decode_errors) = decode(&recording)?;
    Ok(LinkRun {
        kind,
        sent: sent_at.len() as u64,
        received: arrivals.len() as u64,
        decoded,
        decode_errors,
        longest_freeze: freeze,
        latency_p50: pct(0.5),
        latency_p95: pct(0.95),
        proxy_lost: proxy.up.lost.load(std::sync::atomic::Ordering::Relaxed),
        proxy_queue_drops: proxy
            .up
            .queue_drops
            .load(std::sync::atomic::Ordering::Relaxed),
        quic_path,
    })
}

/// Many cameras over one clean link.
#[derive(Debug, Clone)]
pub struct Throughput {
    /// The link.
    pub kind: LinkKind,
    /// Sessions (cameras) on it.
    pub sessions: usize,
    /// Elementary-stream bytes that reached the top hubs.
    pub bytes: u64,
    /// Over this long.
    pub seconds: f64,
    /// CPU the whole process (senders and receivers) used meanwhile.
    pub cpu_seconds: f64,
    /// Frames played into the source, and frames the top hubs got.
    pub frames_sent: u64,
    /// Frames received over all sessions.
    pub frames_received: u64,
}

impl Throughput {
    /// Delivered video, Mbit/s.
    pub fn mbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.seconds / 1e6
    }

    /// CPU seconds per Gbit delivered.
    pub fn cpu_seconds_per_gbit(&self) -> f64 {
        self.cpu_seconds / (self.bytes as f64 * 8.0 / 1e9)
    }
}

/// Elementary-stream bytes and frames the hubs `tops` received so far.
fn arrived(tops: &[Arc<Hub>]) -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    tops.iter().fold((0, 0), |(b, f), t| {
        (
            b + t.stats.bytes_in.load(Relaxed),
            f + t.stats.frames_in.load(Relaxed),
        )
    })
}

/// CPU time this process has used (user + system), from /proc.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks as f64 / 100.0
}

/// `sessions` copies of `clip` (one source hub, one sender per session)
/// over one clean loopback link of `kind` for `duration`: what reached the
/// top hubs and what it cost.
pub async fn throughput(
    kind: LinkKind,
    clip: &Clip,
    sessions: usize,
    duration: Duration,
    work: &Path,
) -> Result<Throughput> {
    std::fs::create_dir_all(work)?;
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let stop = CancellationToken::new();
    let source = Hub::new("source".into(), sessions + 1);
    let mut tops = Vec::new();
    let mut quic = None;
    if kind == LinkKind::Quic {
        let (parent_links, parent_addr, ids) = parent_up(work, ip, &stop)?;
        let (child_links, conn) =
            child_up(work, ip, &stop, ids, parent_addr, Arc::default()).await?;
        quic = Some((parent_links, child_links, conn, parent_addr));
    }
    for i in 0..sessions {
        let ssrc = SSRC + i as u32;
        let top = Hub::new(format!("top-{i}"), 2);
        let (rx, tx, peer) = match (&quic, kind) {
            (Some((parent, _, conn, addr)), _) => (
                MediaSocket::Quic(parent.expect_media(ssrc)),
                MediaSocket::QuicSend(conn.clone()),
                *addr,
            ),
            (None, LinkKind::RtpTcp) => {
                let rx = MediaSocket::bind(ip, LinkMode::TcpPassive).await?;
                let peer = SocketAddr::new(ip, rx.port());
                (rx, MediaSocket::Connect, peer)
            }
            (None, _) => {
                let rx = MediaSocket::bind(ip, LinkMode::Udp).await?;
                let peer = SocketAddr::new(ip, rx.port());
                (rx, MediaSocket::bind(ip, LinkMode::Udp).await?, peer)
            }
        };
        tokio::spawn(rtp_io::receive(
            top.clone(),
            rx,
            peer,
            Some(ssrc),
            stop.clone(),
        ));
        let source = source.clone();
        let target = SendTarget {
            socket: tx,
            peer,
            ssrc,
        };
        let s = stop.clone();
        tokio::spawn(async move {
            if let Ok(v) = source.join(Format::Ps, Duration::from_secs(30)).await {
                rtp_io::send(v, target, s).await;
            }
        });
        tops.push(top);
    }
    let fps = u64::from(clip.fps().max(1));
    // A second of warm-up (connections, first keyframe), then measure.
    let frames = (duration.as_secs() + 1) * fps;
    let start = tokio::time::Instant::now();
    let mut measured_from = None;
    let mut sent = 0u64;
    for (n, frame) in clip.frames_at(0).take(frames as usize).enumerate() {
        let due = start + Duration::from_micros(n as u64 * 1_000_000 / fps);
        tokio::time::sleep_until(due).await;
        if n as u64 == fps {
            let (bytes, frames) = arrived(&tops);
            measured_from = Some((Instant::now(), process_cpu_seconds(), bytes, frames));
        }
        if measured_from.is_some() {
            sent += 1;
        }
        source.push(frame);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (t0, cpu0, bytes0, frames0) = measured_from.context("the run was too short")?;
    let (bytes, frames) = arrived(&tops);
    let out = Throughput {
        kind,
        sessions,
        bytes: bytes - bytes0,
        seconds: t0.elapsed().as_secs_f64(),
        cpu_seconds: process_cpu_seconds() - cpu0,
        frames_sent: sent * sessions as u64,
        frames_received: frames - frames0,
    };
    source.end("the run is over");
    stop.cancel();
    Ok(out)
}

/// Full QUIC handshakes (mutual TLS 1.3, the parent checking the child's
/// ID) a parent completes in `duration`, with `dialers` children dialling
/// one after another each; and the CPU the whole process (dialers too)
/// used. Returns (handshakes, seconds, cpu_seconds).
pub async fn handshakes(
    work: &Path,
    dialers: usize,
    duration: Duration,
) -> Result<(u64, f64, f64)> {
    std::fs::create_dir_all(work)?;
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let stop = CancellationToken::new();
    let (_parent_links, addr, (parent, child)) = parent_up(work, ip, &stop)?;
    let pki = work.join("pki");
    let tls = certs::client_config(
        &pki.join(certs::CA_CERT_FILE),
        &pki.join(format!("{child}.crt")),
        &pki.join(format!("{child}.key")),
    )?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))?;
    let client = quinn::ClientConfig::new(Arc::new(crypto));
    let name = format!("{parent}.gbgate");
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let t0 = Instant::now();
    let cpu0 = process_cpu_seconds();
    let mut tasks = Vec::new();
    for _ in 0..dialers {
        let mut endpoint = quinn::Endpoint::client(SocketAddr::new(ip, 0))?;
        endpoint.set_default_client_config(client.clone());
        let (count, name) = (count.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            while t0.elapsed() < duration {
                let Ok(connecting) = endpoint.connect(addr, &name) else {
                    break;
                };
                if let Ok(conn) = connecting.await {
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    conn.close(0u32.into(), b"");
                }
            }
            endpoint.wait_idle().await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let out = (
        count.load(std::sync::atomic::Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
        process_cpu_seconds() - cpu0,
    );
    stop.cancel();
    Ok(out)
}

/// What happened when a child's address changed mid-stream.
#[derive(Debug, Clone)]
pub struct Migration {
    /// The child's address before and after.
    pub from: SocketAddr,
    /// After the rebind.
    pub to: SocketAddr,
    /// The address the parent's connection reports at the end.
    pub parent_sees: SocketAddr,
    /// Frames at the top in the seconds before and after the move.
    pub frames_before: u64,
    /// After.
    pub frames_after: u64,
    /// Times the child's link came up (1: never redialled).
    pub link_ups: u64,
}

/// One camera over a QUIC link for `2 × half` seconds; half way the
/// child's endpoint moves to a new socket.
pub async fn migration(clip: &Clip, half: Duration, work: &Path) -> Result<Migration> {
    std::fs::create_dir_all(work)?;
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let stop = CancellationToken::new();
    let (parent_links, parent_addr, ids) = parent_up(work, ip, &stop)?;
    let link_ups = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (child_links, conn) = child_up(work, ip, &stop, ids, parent_addr, link_ups.clone()).await?;
    // A first SIP message opens the link's SIP stream at the parent, which
    // then lists the link.
    child_links.send(
        parent_addr,
        bytes::Bytes::from_static(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n"),
    );
    let from = child_links.local_addr().context("child address")?;
    let source = Hub::new("source".into(), 2);
    let top = Hub::new("top".into(), 2);
    tokio::spawn(rtp_io::receive(
        top.clone(),
        MediaSocket::Quic(parent_links.expect_media(SSRC)),
        parent_addr,
        Some(SSRC),
        stop.clone(),
    ));
    {
        let (source, s) = (source.clone(), stop.clone());
        let target = SendTarget {
            socket: MediaSocket::QuicSend(conn),
            peer: parent_addr,
            ssrc: SSRC,
        };
        tokio::spawn(async move {
            if let Ok(v) = source.join(Format::Ps, Duration::from_secs(30)).await {
                rtp_io::send(v, target, s).await;
            }
        });
    }
    let frames = || {
        top.stats
            .frames_in
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let fps = u64::from(clip.fps().max(1));
    let start = tokio::time::Instant::now();
    let total = 2 * half.as_secs() * fps;
    let mut at_move = 0;
    let mut to = from;
    for (n, frame) in clip.frames_at(0).take(total as usize).enumerate() {
        let due = start + Duration::from_micros(n as u64 * 1_000_000 / fps);
        tokio::time::sleep_until(due).await;
        if n as u64 == total / 2 {
            at_move = frames();
            child_links.rebind(SocketAddr::new(ip, 0))?;
            to = child_links.local_addr().context("child address")?;
        }
        source.push(frame);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let parent_sees = parent_links
        .connections()
        .first()
        .map(quinn::Connection::remote_address)
        .context("the parent has no connection")?;
    let out = Migration {
        from,
        to,
        parent_sees,
        frames_before: at_move,
        frames_after: frames() - at_move,
        link_ups: link_ups.load(std::sync::atomic::Ordering::Relaxed),
    };
    source.end("the run is over");
    stop.cancel();
    Ok(out)
}

/// Frames ffmpeg decodes from `ts`, and the errors it reports.
fn decode(ts: &Path) -> Result<(u64, u64)> {
    if !ts.exists() {
        return Ok((0, 0));
    }
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-nostats", "-i"])
        .arg(ts)
        .args(["-f", "null", "-progress", "pipe:1", "-"])
        .output()
        .context("running ffmpeg")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let frames = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("frame="))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .next_back()
        .unwrap_or(0);
    let errors = String::from_utf8_lossy(&out.stderr).lines().count() as u64;
    Ok((frames, errors))
}

/// A CA in `work` and certificates for a parent and a child.
fn quic_pair(work: &Path) -> Result<(GbId, GbId)> {
    let parent = GbId::parse("35010000002000000001")?;
    let child = GbId::parse("35010200002000000001")?;
    let pki = work.join("pki");
    let ca = if pki.join(certs::CA_CERT_FILE).exists() {
        certs::Ca::load(&pki)?
    } else {
        certs::Ca::init(&pki, "lossy-link CA", certs::Validity::days(30)?)?
    };
    for id in [parent, child] {
        if !ca.node_cert_path(&id).exists() {
            ca.issue(id, &[], certs::Validity::days(30)?)?;
        }
    }
    Ok((parent, child))
}

fn setup(
    work: &Path,
    node: GbId,
    parent: Option<(GbId, SocketAddr)>,
    child: Option<GbId>,
    ip: IpAddr,
) -> QuicSetup {
    let pki: PathBuf = work.join("pki");
    QuicSetup {
        node,
        listen: child.map(|_| SocketAddr::new(ip, 0)),
        bind_ip: ip,
        ca: pki.join(certs::CA_CERT_FILE),
        cert: pki.join(format!("{node}.crt")),
        key: pki.join(format!("{node}.key")),
        children: child.into_iter().collect(),
        parent,
        runtime: None,
    }
}

/// The parent's end of a QUIC link for the run, with a CA and
/// certificates in `work`: its links, its address, the two node IDs.
fn parent_up(
    work: &Path,
    ip: IpAddr,
    stop: &CancellationToken,
) -> Result<(QuicLinks, SocketAddr, (GbId, GbId))> {
    let (parent, child) = quic_pair(work)?;
    let links = start_links(setup(work, parent, None, Some(child), ip), stop.clone())?;
    let addr = links.local_addr().context("parent address")?;
    Ok((links, addr, (parent, child)))
}

/// The child's end, dialling `dial` (the parent, or a proxy before it);
/// its links and its connection once up. Counts its link-ups in `link_ups`.
async fn child_up(
    work: &Path,
    ip: IpAddr,
    stop: &CancellationToken,
    (parent, child): (GbId, GbId),
    dial: SocketAddr,
    link_ups: Arc<std::sync::atomic::AtomicU64>,
) -> Result<(QuicLinks, quinn::Connection)> {
    let links = start_counted(
        setup(work, child, Some((parent, dial)), None, ip),
        stop.clone(),
        link_ups,
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(c) = links.parent_connection() {
            return Ok((links, c));
        }
        if Instant::now() > deadline {
            bail!("the QUIC link did not come up");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Start links whose SIP events nobody needs (drained), until `stop`.
fn start_links(setup: QuicSetup, stop: CancellationToken) -> Result<QuicLinks> {
    start_counted(setup, stop, Arc::default())
}

/// Start links, counting the `Inbound::LinkUp` events they report.
fn start_counted(
    setup: QuicSetup,
    stop: CancellationToken,
    link_ups: Arc<std::sync::atomic::AtomicU64>,
) -> Result<QuicLinks> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            if matches!(ev, gbgate::node::Inbound::LinkUp { .. }) {
                link_ups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    Ok(QuicLinks::start(
        setup,
        tx,
        Limits {
            max_message: 65_535,
            max_connections: 16,
        },
        stop,
    )?)
}
