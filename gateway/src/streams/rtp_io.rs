//! RTP over the network, both ways: receiving PS from below into a hub,
//! and sending a hub's PS to a parent. UDP, or TCP with RFC 4571 framing,
//! this side connecting (`a=setup:active`) or listening (`passive`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::hub::{Hub, Next, Viewer};
use crate::media::ps::{packetize, PsDemuxer};
use crate::media::rtp::{put_rfc4571, ReorderBuffer, RtpPacket, TcpDeframer};
use crate::media::sdp::{MediaTransport, Setup};

/// RTP payload bytes per packet toward a parent (fits a 1,500-byte MTU).
const RTP_PAYLOAD: usize = 1400;
/// Fastest rate UDP media leaves toward a parent. The cached GOP a new
/// parent gets is otherwise one burst (a 2 s GOP at 4 Mbit/s is 700
/// packets), which a receiver with a default socket buffer drops; live
/// frames are far below this rate and are not delayed.
const UDP_BURST_BITS_PER_SEC: u64 = 100_000_000;

/// A token bucket for UDP sends: at most `rate` bits per second, with up
/// to 256 KiB at once.
struct Pacer {
    rate: u64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl Pacer {
    /// A whole keyframe goes out at once, as a camera sends it: a 100 KB
    /// IDR paced at 100 Mbit/s arrived 8 ms late per hop, 25 ms at the
    /// city, the largest gap between its frames. (Receivers here keep
    /// 4 MiB of socket buffer; 256 KiB is 185 packets.)
    const BURST: f64 = 256.0 * 1024.0 * 8.0;

    fn new(rate: u64) -> Pacer {
        Pacer {
            rate,
            tokens: Self::BURST,
            last: tokio::time::Instant::now(),
        }
    }

    /// Wait until `bytes` may be sent.
    async fn wait(&mut self, bytes: usize) {
        let need = bytes as f64 * 8.0;
        loop {
            let now = tokio::time::Instant::now();
            let refill = now.duration_since(self.last).as_secs_f64() * self.rate as f64;
            self.tokens = (self.tokens + refill).min(Self::BURST);
            self.last = now;
            if self.tokens >= need {
                self.tokens -= need;
                return;
            }
            let short = (need - self.tokens) / self.rate as f64;
            tokio::time::sleep(Duration::from_secs_f64(short)).await;
        }
    }
}

/// UDP packets that may wait for a missing one before it counts as lost:
/// at 4 Mbit/s about 30 ms, enough for the reordering a real network does.
const REORDER_WINDOW: usize = 16;
/// How long a passive TCP side waits for the peer to connect.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);

/// How media travels on one link, as this side sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// RTP over UDP.
    Udp,
    /// RTP over TCP; this side listens.
    TcpPassive,
    /// RTP over TCP; this side connects.
    TcpActive,
    /// RTP on the QUIC link to the other node, one stream per GOP.
    Quic,
}

impl From<topology::MediaTransport> for LinkMode {
    fn from(t: topology::MediaTransport) -> Self {
        match t {
            topology::MediaTransport::Udp => LinkMode::Udp,
            topology::MediaTransport::TcpPassive => LinkMode::TcpPassive,
            topology::MediaTransport::TcpActive => LinkMode::TcpActive,
        }
    }
}

impl LinkMode {
    /// The SDP transport and `a=setup` this side writes.
    pub fn sdp(self) -> (MediaTransport, Option<Setup>) {
        match self {
            LinkMode::Udp => (MediaTransport::Udp, None),
            LinkMode::TcpPassive => (MediaTransport::Tcp, Some(Setup::Passive)),
            LinkMode::TcpActive => (MediaTransport::Tcp, Some(Setup::Active)),
            LinkMode::Quic => (MediaTransport::Quic, None),
        }
    }

    /// This side's mode given the other side's SDP: its `passive` makes us
    /// active and the other way round (`actpass` or none: we connect).
    pub fn answering(transport: MediaTransport, setup: Option<Setup>) -> LinkMode {
        match (transport, setup) {
            (MediaTransport::Udp, _) => LinkMode::Udp,
            (MediaTransport::Tcp, Some(Setup::Active)) => LinkMode::TcpPassive,
            (MediaTransport::Tcp, _) => LinkMode::TcpActive,
            (MediaTransport::Quic, _) => LinkMode::Quic,
        }
    }
}

/// A bound media socket before the peer is known.
pub enum MediaSocket {
    /// A UDP socket.
    Udp(UdpSocket),
    /// A TCP listener (we are passive).
    Listener(TcpListener),
    /// We will connect (active); nothing is bound yet.
    Connect,
    /// Receiving groups from the QUIC link.
    Quic(crate::transport::quic::MediaInbox),
    /// Sending groups on the QUIC link to the parent.
    QuicSend(quinn::Connection),
}

impl MediaSocket {
    /// Bind on `ip` for `mode`.
    pub async fn bind(ip: IpAddr, mode: LinkMode) -> std::io::Result<MediaSocket> {
        Ok(match mode {
            LinkMode::Udp => {
                let s = socket2::Socket::new(
                    socket2::Domain::for_address(SocketAddr::new(ip, 0)),
                    socket2::Type::DGRAM,
                    Some(socket2::Protocol::UDP),
                )?;
                // A burst of a 4 Mbps keyframe is ~100 packets; give the
                // kernel room so a busy runtime does not drop them.
                let _ = s.set_recv_buffer_size(4 * 1024 * 1024);
                s.set_nonblocking(true)?;
                s.bind(&SocketAddr::new(ip, 0).into())?;
                MediaSocket::Udp(UdpSocket::from_std(s.into())?)
            }
            LinkMode::TcpPassive => MediaSocket::Listener(TcpListener::bind((ip, 0)).await?),
            LinkMode::TcpActive => MediaSocket::Connect,
            LinkMode::Quic => {
                return Err(std::io::Error::other(
                    "QUIC media uses the node's link, not a socket of its own",
                ))
            }
        })
    }

    /// The port to write in SDP (9, the discard port, for an active side,
    /// as RFC 4145 suggests).
    pub fn port(&self) -> u16 {
        match self {
            MediaSocket::Udp(s) => s.local_addr().map_or(0, |a| a.port()),
            MediaSocket::Listener(l) => l.local_addr().map_or(0, |a| a.port()),
            MediaSocket::Connect | MediaSocket::Quic(_) | MediaSocket::QuicSend(_) => 9,
        }
    }
}

/// Receive RTP/PS from below into `hub` until `stop`, or until the
/// connection (TCP) ends. `peer` is the sender's address from its SDP
/// (needed to connect when active). Returns why it stopped.
pub async fn receive(
    hub: Arc<Hub>,
    socket: MediaSocket,
    peer: SocketAddr,
    expected_ssrc: Option<u32>,
    stop: CancellationToken,
) -> String {
    let mut rx = Receiver {
        hub,
        demux: PsDemuxer::new(),
        expected_ssrc,
        mismatch_logged: false,
        frames: Vec::new(),
        source: None,
        reorder: None,
        drop_next_video: false,
        need_keyframe: false,
        trust_marker: true,
        marker_emitted: false,
        packets_received: metrics::counter!("gbgate_rtp_packets_received_total"),
    };
    metrics::gauge!("gbgate_rtp_streams_in").increment(1.0);
    let why = tokio::select! {
        _ = stop.cancelled() => "stopped".to_owned(),
        r = rx.run(socket, peer) => r,
    };
    metrics::gauge!("gbgate_rtp_streams_in").decrement(1.0);
    why
}

struct Receiver {
    hub: Arc<Hub>,
    demux: PsDemuxer,
    expected_ssrc: Option<u32>,
    mismatch_logged: bool,
    frames: Vec<crate::media::frame::Frame>,
    /// UDP: the address the stream comes from, latched on its first
    /// packet; packets from elsewhere (a device still sending to a port
    /// that was reused, or an injection) are dropped.
    source: Option<SocketAddr>,
    /// UDP only: puts reordered packets back in sequence.
    reorder: Option<ReorderBuffer>,
    /// After a loss: the access unit being assembled is damaged, and what
    /// follows cannot decode until the next keyframe. Without this a
    /// broken IDR would become the GOP cache every new viewer starts from.
    drop_next_video: bool,
    need_keyframe: bool,
    /// The RTP marker ends frames (a frame of latency less per hop) until
    /// the sender shows it sets it wrongly: data for a frame arriving after
    /// its marker.
    trust_marker: bool,
    /// The last packet's marker closed a frame.
    marker_emitted: bool,
    /// Looked up once: a registry lookup per packet was 4 % of a relay
    /// tier's CPU.
    packets_received: metrics::Counter,
}

impl Receiver {
    async fn run(&mut self, socket: MediaSocket, peer: SocketAddr) -> String {
        match socket {
            MediaSocket::Udp(s) => {
                self.reorder = Some(ReorderBuffer::new(REORDER_WINDOW));
                let mut buf = vec![0u8; 65_536];
                loop {
                    match s.recv_from(&mut buf).await {
                        Ok((n, from)) => {
                            if *self.source.get_or_insert(from) != from {
                                metrics::counter!("gbgate_rtp_foreign_packets_total").increment(1);
                                continue;
                            }
                            let data = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                            self.packet(data);
                        }
                        Err(e) => return format!("UDP receive failed: {e}"),
                    }
                }
            }
            MediaSocket::Listener(l) => {
                match tokio::time::timeout(ACCEPT_TIMEOUT, l.accept()).await {
                    Ok(Ok((stream, _))) => self.tcp(stream).await,
                    Ok(Err(e)) => format!("accepting the media connection failed: {e}"),
                    Err(_) => format!("the sender did not connect within {ACCEPT_TIMEOUT:?}"),
                }
            }
            MediaSocket::Connect => match TcpStream::connect(peer).await {
                Ok(stream) => self.tcp(stream).await,
                Err(e) => format!("connecting to the media sender {peer} failed: {e}"),
            },
            MediaSocket::Quic(mut inbox) => {
                use crate::transport::quic::MediaIn;
                while let Some(m) = inbox.recv().await {
                    match m {
                        MediaIn::Packet(p) => self.packet(p),
                        MediaIn::Discontinuity => {
                            // The last group was cut: its unfinished frame
                            // is garbage, and the next group starts at a
                            // keyframe with its own stream map.
                            self.demux = PsDemuxer::new();
                            self.need_keyframe = true;
                            self.marker_emitted = false;
                        }
                    }
                }
                "the QUIC link closed".into()
            }
            MediaSocket::QuicSend(_) => "a sending link cannot receive".into(),
        }
    }

    async fn tcp(&mut self, mut stream: TcpStream) -> String {
        let _ = stream.set_nodelay(true);
        let mut deframer = TcpDeframer::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return "the sender closed the media connection".into(),
                Ok(n) => {
                    deframer.push(buf.get(..n).unwrap_or_default());
                    loop {
                        match deframer.next_packet() {
                            Ok(Some(p)) => self.packet(p),
                            Ok(None) => break,
                            Err(e) => {
                                metrics::counter!("gbgate_rtp_framing_errors_total").increment(1);
                                tracing::debug!(stream = %self.hub.name, error = %e, "RTP over TCP resynchronised");
                            }
                        }
                    }
                }
                Err(e) => return format!("media connection failed: {e}"),
            }
        }
    }

    fn packet(&mut self, data: Bytes) {
        self.packets_received.increment(1);
        let p = match RtpPacket::parse(data) {
            Ok(p) => p,
            Err(e) => {
                metrics::counter!("gbgate_rtp_parse_errors_total").increment(1);
                tracing::debug!(stream = %self.hub.name, error = %e, "bad RTP packet dropped");
                return;
            }
        };
        if let Some(want) = self.expected_ssrc {
            if p.ssrc != want {
                // Real devices get y= wrong; count it, keep the media.
                metrics::counter!("gbgate_rtp_ssrc_mismatch_total").increment(1);
                if !self.mismatch_logged {
                    self.mismatch_logged = true;
                    tracing::warn!(stream = %self.hub.name, expected = want, got = p.ssrc, "RTP SSRC differs from the SDP y= line; accepting it");
                }
            }
        }
        // UDP may reorder and duplicate: put packets back in order first.
        // (Over TCP they arrive in order.)
        let Some(reorder) = self.reorder.as_mut() else {
            return self.in_order(p, 0);
        };
        let r = reorder.push(p);
        if r.late {
            metrics::counter!("gbgate_rtp_late_packets_total").increment(1);
        }
        let mut lost = r.lost;
        for p in r.ready {
            self.in_order(p, std::mem::take(&mut lost));
        }
    }

    /// One packet in sequence order, `lost` packets after the previous one.
    fn in_order(&mut self, p: RtpPacket, lost: u64) {
        if lost > 0 {
            metrics::counter!("gbgate_rtp_lost_packets_total").increment(lost);
            tracing::debug!(stream = %self.hub.name, lost, "RTP loss; waiting for the next keyframe");
            self.drop_next_video = true;
            self.need_keyframe = true;
        }
        let skipped = self.demux.stats().bytes_skipped;
        self.demux.push(&p.payload);
        if self.demux.stats().bytes_skipped > skipped && self.marker_emitted {
            // Continuation data of a frame we already closed on its marker.
            self.trust_marker = false;
            metrics::counter!("gbgate_rtp_marker_distrusted_total").increment(1);
            tracing::warn!(stream = %self.hub.name, "RTP marker set inside frames; ending frames at the next frame instead");
        }
        self.marker_emitted = false;
        if p.marker && self.trust_marker {
            let before = self.demux.stats().frames_out;
            self.demux.end_of_frame();
            self.marker_emitted = self.demux.stats().frames_out > before;
        }
        while let Some(fault) = self.demux.next_fault() {
            // The demuxer reports each kind once: counted once per stream.
            metrics::counter!("gbgate_ps_demux_failures_total", "cause" => fault.cause())
                .increment(1);
            if self.hub.note_fault(fault) {
                tracing::warn!(stream = %self.hub.name, cause = %fault, "the source's PS could not be read");
            } else {
                tracing::debug!(stream = %self.hub.name, cause = %fault, "another fault in the source's PS");
            }
        }
        self.demux.drain(&mut self.frames);
        for f in self.frames.drain(..) {
            if f.codec.is_video() {
                if std::mem::take(&mut self.drop_next_video) {
                    continue;
                }
                if self.need_keyframe {
                    if !f.keyframe {
                        continue;
                    }
                    self.need_keyframe = false;
                }
            }
            self.hub.push(f);
        }
    }
}

/// A chunk of PS as RTP packets (PT 96, the marker on the last),
/// numbered on from `seq`, which is left after them.
pub fn rtp_packets(chunk: &Bytes, pts: u64, ssrc: u32, seq: &mut u16) -> Vec<RtpPacket> {
    let parts = packetize(chunk, RTP_PAYLOAD);
    let count = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, payload)| {
            let p = RtpPacket {
                marker: i + 1 == count,
                payload_type: 96,
                sequence: *seq,
                // RTP timestamps are the 90 kHz clock modulo 2^32.
                timestamp: pts as u32,
                ssrc,
                csrc: Vec::new(),
                payload,
            };
            *seq = seq.wrapping_add(1);
            p
        })
        .collect()
}

/// Where and how to send RTP to a parent.
pub struct SendTarget {
    /// The bound socket (UDP, or a listener when passive).
    pub socket: MediaSocket,
    /// The receiver's address from its SDP.
    pub peer: SocketAddr,
    /// The SSRC the receiver asked for (`y=`).
    pub ssrc: u32,
}

/// Send a hub's PS (from `viewer`) as RTP to `target` until the hub ends,
/// the link fails or `stop`. Returns why it stopped.
pub async fn send(mut viewer: Viewer, target: SendTarget, stop: CancellationToken) -> String {
    metrics::gauge!("gbgate_rtp_streams_out").increment(1.0);
    let why = tokio::select! {
        _ = stop.cancelled() => "stopped".to_owned(),
        r = send_loop(&mut viewer, target) => r,
    };
    metrics::gauge!("gbgate_rtp_streams_out").decrement(1.0);
    why
}

enum Wire {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream),
}

async fn send_loop(viewer: &mut Viewer, target: SendTarget) -> String {
    let mut wire = match target.socket {
        MediaSocket::QuicSend(conn) => {
            return crate::transport::quic::send_groups(viewer, conn, target.ssrc).await
        }
        MediaSocket::Quic(_) => return "a receiving link cannot send".into(),
        MediaSocket::Udp(s) => Wire::Udp(s, target.peer),
        MediaSocket::Listener(l) => match tokio::time::timeout(ACCEPT_TIMEOUT, l.accept()).await {
            Ok(Ok((s, _))) => Wire::Tcp(s),
            Ok(Err(e)) => return format!("accepting the parent's media connection failed: {e}"),
            Err(_) => return format!("the parent did not connect within {ACCEPT_TIMEOUT:?}"),
        },
        MediaSocket::Connect => match TcpStream::connect(target.peer).await {
            Ok(s) => Wire::Tcp(s),
            Err(e) => {
                return format!(
                    "connecting to the parent's media port {} failed: {e}",
                    target.peer
                )
            }
        },
    };
    if let Wire::Tcp(s) = &wire {
        let _ = s.set_nodelay(true);
    }
    let mut seq: u16 = rand::random();
    let mut pace = Pacer::new(UDP_BURST_BITS_PER_SEC);
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut last_pts = viewer.first_pts().unwrap_or(0);
    let packets_sent = metrics::counter!("gbgate_rtp_packets_sent_total");
    let mut gso = true;
    loop {
        let (chunk, pts) = match viewer.next().await {
            Next::Data { bytes, pts, .. } => (bytes, pts),
            Next::End(reason) => return reason.to_string(),
        };
        let ts = pts.unwrap_or(last_pts);
        last_pts = ts;
        let packets = rtp_packets(&chunk, ts, target.ssrc, &mut seq);
        let count = packets.len() as u64;
        let sent = match &mut wire {
            Wire::Udp(s, to) => send_udp(s, *to, &packets, &mut pace, &mut out, &mut gso).await,
            // One write per frame: every packet framed into one buffer.
            Wire::Tcp(s) => {
                out.clear();
                for p in &packets {
                    if let Err(e) = put_rfc4571(&mut out, p) {
                        return format!("sending media to the parent failed: {e}");
                    }
                }
                s.write_all(&out).await
            }
        };
        if let Err(e) = sent {
            return format!("sending media to the parent failed: {e}");
        }
        packets_sent.increment(count);
    }
}

/// Packets per GSO send: 46 full RTP packets (1,412 bytes) stay under the
/// 64 KiB a UDP send may carry.
const GSO_SEGMENTS: usize = 46;

/// Send a frame's RTP packets to `to`, paced. With `gso` (UDP generic
/// segmentation offload, Linux), up to [`GSO_SEGMENTS`] packets go down in
/// one `sendmsg` that the kernel cuts into datagrams, instead of one
/// `sendto` each; a kernel without it turns `gso` off for the stream. A
/// port nobody reads yet (ICMP refused) is not an error: the packets are
/// lost, the stream goes on.
async fn send_udp(
    s: &tokio::net::UdpSocket,
    to: SocketAddr,
    packets: &[RtpPacket],
    pace: &mut Pacer,
    out: &mut BytesMut,
    gso: &mut bool,
) -> std::io::Result<()> {
    let refused = |e: &std::io::Error| e.kind() == std::io::ErrorKind::ConnectionRefused;
    let mut rest = packets;
    // GSO cuts a buffer into equal segments (the last may be shorter): every
    // packet but a frame's last is full, so batches of the front qualify.
    while *gso && rest.len() > 1 {
        let take = rest.len().min(GSO_SEGMENTS);
        let (batch, after) = rest.split_at(take);
        out.clear();
        let mut segment = 0;
        let mut even = true;
        for (i, p) in batch.iter().enumerate() {
            let at = out.len();
            p.write(out);
            let len = out.len() - at;
            if i == 0 {
                segment = len;
            } else if len > segment || (len < segment && i + 1 < batch.len()) {
                even = false;
            }
        }
        let Ok(segment) = u16::try_from(segment) else {
            break;
        };
        if !even {
            break;
        }
        pace.wait(out.len()).await;
        match send_gso(s, to, out, segment).await {
            Ok(()) => rest = after,
            Err(e) if refused(&e) => rest = after,
            Err(e) => {
                // EIO/EINVAL/ENOPROTOOPT: no GSO here; send one by one.
                tracing::info!(error = %e, "UDP segmentation offload unavailable; sending packet by packet");
                *gso = false;
            }
        }
    }
    for p in rest {
        out.clear();
        p.write(out);
        pace.wait(out.len()).await;
        match s.send_to(out, to).await {
            Ok(_) => {}
            Err(e) if refused(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One `sendmsg` of `data` with a UDP_SEGMENT control message: the kernel
/// sends it as datagrams of `segment` bytes. Through `nix` (this crate
/// forbids `unsafe`; neither std nor tokio offers the control message).
async fn send_gso(
    s: &tokio::net::UdpSocket,
    to: SocketAddr,
    data: &[u8],
    segment: u16,
) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrStorage};
    use std::os::fd::AsRawFd;
    let addr = SockaddrStorage::from(to);
    let fd = s.as_raw_fd();
    loop {
        s.writable().await?;
        let sent = s.try_io(tokio::io::Interest::WRITABLE, || {
            let iov = [std::io::IoSlice::new(data)];
            let cmsg = [ControlMessage::UdpGsoSegments(&segment)];
            sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&addr))
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
        match sent {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame::{Codec, Frame};
    use crate::media::ps::PsMuxer;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::atomic::Ordering;

    #[tokio::test]
    async fn a_frame_sent_with_segmentation_arrives_as_the_same_datagrams() {
        let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket2::SockRef::from(&rx)
            .set_recv_buffer_size(4 << 20)
            .unwrap();
        let tx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let mut pace = Pacer::new(UDP_BURST_BITS_PER_SEC);
        let mut out = BytesMut::new();
        // A keyframe of 100 packets (three GSO sends), then a 1-packet frame.
        let mut seq = 0u16;
        let big = rtp_packets(&Bytes::from(vec![7u8; 100 * 1400 - 10]), 9000, 5, &mut seq);
        let small = rtp_packets(&Bytes::from_static(b"tiny"), 12600, 5, &mut seq);
        let mut gso = true;
        for frame in [&big, &small] {
            send_udp(&tx, to, frame, &mut pace, &mut out, &mut gso)
                .await
                .unwrap();
        }
        // Linux has had UDP_SEGMENT since 4.18: the batches went out whole.
        assert!(gso, "the segmentation path was taken");
        let mut buf = vec![0u8; 65_536];
        for (i, want) in big.iter().chain(small.iter()).enumerate() {
            let n = tokio::time::timeout(Duration::from_secs(5), rx.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            let got = RtpPacket::parse(Bytes::copy_from_slice(&buf[..n])).unwrap();
            assert_eq!(got.sequence, want.sequence, "datagram {i}");
            assert_eq!(got.payload, want.payload, "datagram {i}");
            assert_eq!(got.marker, want.marker, "datagram {i}");
        }
    }

    /// 10 frames at 25 fps, an IDR every 5, each about 3 RTP packets.
    fn packets() -> Vec<Bytes> {
        packets_with(|ps| ps)
    }

    /// [`packets`], each frame's PS changed by `damage` before it is cut.
    fn packets_with(damage: impl Fn(Bytes) -> Bytes) -> Vec<Bytes> {
        let mut mux = PsMuxer::new(Some(Codec::H264), None);
        let mut out = Vec::new();
        let mut seq = 1000u16;
        for i in 0..10u64 {
            let key = i % 5 == 0;
            let mut data = Vec::new();
            if key {
                data.extend_from_slice(&[0, 0, 0, 1, 0x67, 0x42, 0xC0, 0x1E, 0xDA]);
                data.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xCE, 0x3C, 0x80]);
                data.extend_from_slice(&[0, 0, 0, 1, 0x65]);
            } else {
                data.extend_from_slice(&[0, 0, 0, 1, 0x41]);
            }
            data.extend(std::iter::repeat_n(0xAB, 3000));
            let f = Frame {
                codec: Codec::H264,
                pts: i * 3600,
                dts: i * 3600,
                keyframe: key,
                data: Bytes::from(data),
            };
            let parts = packetize(&damage(mux.mux(&f)), RTP_PAYLOAD);
            let n = parts.len();
            for (k, payload) in parts.into_iter().enumerate() {
                let p = RtpPacket {
                    marker: k + 1 == n,
                    payload_type: 96,
                    sequence: seq,
                    timestamp: (i * 3600) as u32,
                    ssrc: 7,
                    csrc: Vec::new(),
                    payload,
                };
                seq = seq.wrapping_add(1);
                out.push(p.to_bytes());
            }
        }
        out
    }

    /// Send `wire` to a receiving hub over UDP; the frames the hub got.
    async fn deliver(wire: Vec<Bytes>) -> u64 {
        deliver_to_hub(wire)
            .await
            .stats
            .frames_in
            .load(Ordering::Relaxed)
    }

    /// Send `wire` to a receiving hub over UDP; the hub afterwards.
    async fn deliver_to_hub(wire: Vec<Bytes>) -> Arc<Hub> {
        let hub = Hub::new("t".into(), 4);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let socket = MediaSocket::bind(ip, LinkMode::Udp).await.unwrap();
        let to = SocketAddr::new(ip, socket.port());
        let stop = CancellationToken::new();
        let task = tokio::spawn(receive(hub.clone(), socket, to, Some(7), stop.clone()));
        let tx = UdpSocket::bind((ip, 0)).await.unwrap();
        for p in wire {
            tx.send_to(&p, to).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.cancel();
        task.await.unwrap();
        hub
    }

    #[tokio::test]
    async fn reordered_and_duplicated_packets_still_make_every_frame() {
        let mut wire = packets();
        for i in (1..wire.len() - 1).step_by(4) {
            wire.swap(i, i + 1);
        }
        let dup = wire[7].clone();
        wire.insert(9, dup);
        assert_eq!(deliver(wire).await, 10);
    }

    #[tokio::test]
    async fn a_packet_lost_inside_an_idr_drops_until_the_next_idr() {
        let mut wire = packets();
        wire.remove(1); // inside frame 0, the first IDR
                        // Frame 0 is damaged and 1–4 cannot decode without it: the hub gets
                        // frames 5–9 only, and never a broken keyframe.
        assert_eq!(deliver(wire).await, 5);
    }

    #[tokio::test]
    async fn pes_headers_without_flags_give_the_hub_the_cause() {
        // The frame's one video PES loses the two bytes after its length.
        let wire = packets_with(|ps| {
            let at = ps.windows(4).position(|w| w == [0, 0, 1, 0xE0]).unwrap();
            let len = u16::from_be_bytes([ps[at + 4], ps[at + 5]]) - 2;
            let mut out = ps[..at + 4].to_vec();
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&ps[at + 8..]);
            Bytes::from(out)
        });
        let hub = deliver_to_hub(wire).await;
        assert_eq!(hub.stats.frames_in.load(Ordering::Relaxed), 0);
        assert_eq!(
            hub.unreadable(),
            Some(crate::media::ps::PsFault::MissingPesFlags { stream_id: 0xE0 }.into())
        );
    }
}
