//! The fan-out benchmark's instruments: a recording of what a node serves
//! over HTTP-FLV, the floor (a bare writer that sends those same bytes to
//! every socket, one write per frame, nothing else), and a fleet of viewers
//! on one thread that count every frame and the gaps between them.
//!
//! The floor is what this kernel allows for the job: gbgate's CPU per
//! delivered Gbit and its frame gaps are read against it, in the same run,
//! on the same core.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The FLV file header and the tags before the first frame (script data,
/// sequence headers), then frames from the first keyframe on.
#[derive(Debug, Clone)]
pub struct Recording {
    /// FLV header, PreviousTagSize0 and the non-frame tags a player needs first.
    pub head: Vec<u8>,
    /// Every tag from the first keyframe, each with its PreviousTagSize.
    pub frames: Vec<RecordedFrame>,
}

/// One tag as served.
#[derive(Debug, Clone)]
pub struct RecordedFrame {
    /// FLV timestamp, milliseconds.
    pub ts: u32,
    /// A video keyframe: where a new viewer may start.
    pub key: bool,
    /// The tag and its PreviousTagSize, as on the wire.
    pub tag: Vec<u8>,
}

/// What a tag is, from its first bytes (type and the first two body bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TagKind {
    /// A coded video frame; true for a keyframe.
    Frame(bool),
    /// Anything else: script data, sequence headers, audio.
    Other,
}

fn tag_kind(tag_type: u8, body: &[u8]) -> TagKind {
    if tag_type & 0x1F != 9 || body.is_empty() {
        return TagKind::Other;
    }
    let frame_type = (body[0] >> 4) & 0x07;
    let coded = if body[0] & 0x80 != 0 {
        // Enhanced RTMP: the packet type is the low nibble; 1 and 3 carry frames.
        matches!(body[0] & 0x0F, 1 | 3)
    } else {
        // AVC / legacy HEVC: AVCPacketType 1 is coded frames.
        body.get(1) == Some(&1)
    };
    if coded {
        TagKind::Frame(frame_type == 1)
    } else {
        TagKind::Other
    }
}

impl Recording {
    /// Split an FLV byte stream (as a player receives it, without HTTP
    /// framing) into the head and the frames from the first keyframe. An
    /// incomplete last tag is dropped.
    pub fn parse(flv: &[u8]) -> Result<Recording> {
        if flv.len() < 13 || &flv[..3] != b"FLV" {
            bail!("not an FLV stream");
        }
        let mut head = flv[..13].to_vec();
        let mut frames: Vec<RecordedFrame> = Vec::new();
        let mut at = 13;
        while flv.len() >= at + 11 {
            let size = u32::from_be_bytes([0, flv[at + 1], flv[at + 2], flv[at + 3]]) as usize;
            let end = at + 11 + size + 4;
            if flv.len() < end {
                break;
            }
            let ts = u32::from_be_bytes([flv[at + 7], flv[at + 4], flv[at + 5], flv[at + 6]]);
            let kind = tag_kind(flv[at], &flv[at + 11..at + 11 + size]);
            let tag = flv[at..end].to_vec();
            match kind {
                TagKind::Frame(key) if key || !frames.is_empty() => {
                    frames.push(RecordedFrame { ts, key, tag })
                }
                TagKind::Frame(_) => {}
                TagKind::Other if frames.is_empty() => head.extend_from_slice(&tag),
                TagKind::Other => frames.push(RecordedFrame {
                    ts,
                    key: false,
                    tag,
                }),
            }
            at = end;
        }
        if !frames.iter().any(|f| f.key) {
            bail!("no keyframe in {} bytes of FLV", flv.len());
        }
        Ok(Recording { head, frames })
    }

    /// Record `secs` of a live HTTP-FLV stream.
    pub fn capture(url: &str, secs: Duration) -> Result<Recording> {
        let resp = ureq::get(url)
            .call()
            .with_context(|| format!("GET {url}"))?;
        let mut r = resp.into_body().into_reader();
        let start = Instant::now();
        let mut flv = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        while start.elapsed() < secs {
            match r.read(&mut buf)? {
                0 => bail!("{url} ended after {} bytes", flv.len()),
                n => flv.extend_from_slice(&buf[..n]),
            }
        }
        Recording::parse(&flv)
    }

    /// The FLV bytes again: head then frames.
    pub fn to_flv(&self) -> Vec<u8> {
        let mut out = self.head.clone();
        for f in &self.frames {
            out.extend_from_slice(&f.tag);
        }
        out
    }

    /// Coded frames per second, from the timestamps.
    pub fn fps(&self) -> f64 {
        let frames: Vec<u32> = self
            .frames
            .iter()
            .filter(|f| {
                let body = &f.tag[11..];
                tag_kind(f.tag[0], body) != TagKind::Other
            })
            .map(|f| f.ts)
            .collect();
        match (frames.first(), frames.last()) {
            (Some(a), Some(b)) if b > a => (frames.len() - 1) as f64 * 1000.0 / (b - a) as f64,
            _ => 25.0,
        }
    }

    /// Mean bit rate of the frames, bits per second.
    pub fn bits_per_second(&self) -> f64 {
        let bytes: usize = self.frames.iter().map(|f| f.tag.len()).sum();
        let span = self.span_ms().max(1) as f64 / 1000.0;
        bytes as f64 * 8.0 / span
    }

    /// Time from the first frame to one frame after the last.
    fn span_ms(&self) -> u32 {
        let first = self.frames.first().map_or(0, |f| f.ts);
        let last = self.frames.last().map_or(0, |f| f.ts);
        last - first + (1000.0 / self.fps()).round() as u32
    }
}

/// One HTTP/1.1 chunk: size line, data, CRLF (what hyper writes per frame).
fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// A viewer socket of the floor and what it still owes.
struct FloorViewer {
    sock: TcpStream,
    pending: Vec<u8>,
    started: bool,
}

impl FloorViewer {
    /// Write what is pending, then `frame`; what the socket does not take
    /// waits for the next frame (the floor never drops).
    fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            let n = write_some(&mut self.sock, &self.pending)?;
            self.pending.drain(..n);
            if !self.pending.is_empty() {
                self.pending.extend_from_slice(frame);
                return Ok(());
            }
        }
        let n = write_some(&mut self.sock, frame)?;
        self.pending.extend_from_slice(&frame[n..]);
        Ok(())
    }
}

fn write_some(sock: &mut TcpStream, data: &[u8]) -> std::io::Result<usize> {
    match sock.write(data) {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

/// Read an HTTP request head and answer it with the response head a node
/// sends for `/live/*.flv`, then the recording's head as the first chunk.
fn floor_handshake(mut sock: TcpStream, head: &[u8]) -> std::io::Result<TcpStream> {
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = Vec::new();
    let mut b = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut b)?;
        if n == 0 || req.len() > 16 * 1024 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        req.extend_from_slice(&b[..n]);
    }
    // The same socket options as the node's HTTP listener.
    sock.set_nodelay(true)?;
    socket2::SockRef::from(&sock).set_send_buffer_size(256 * 1024)?;
    let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: video/x-flv\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    out.extend_from_slice(&chunk(head));
    sock.write_all(&out)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// The floor: serve `rec` on `listener` to every viewer that connects, in a
/// loop paced by the frames' timestamps, one `write` per frame per viewer
/// (from one prebuilt buffer per frame, shared by all). A new viewer starts
/// at the next keyframe. Runs until the process ends.
pub fn serve_floor(listener: TcpListener, rec: Recording) -> Result<()> {
    let (tx, rx) = mpsc::channel::<TcpStream>();
    let head = rec.head.clone();
    std::thread::spawn(move || {
        for sock in listener.incoming().flatten() {
            if let Ok(s) = floor_handshake(sock, &head) {
                if tx.send(s).is_err() {
                    return;
                }
            }
        }
    });
    let frames: Vec<(u32, bool, Vec<u8>)> = rec
        .frames
        .iter()
        .map(|f| (f.ts, f.key, chunk(&f.tag)))
        .collect();
    let first = frames[0].0;
    let span = Duration::from_millis(u64::from(rec.span_ms()));
    let mut viewers: Vec<FloorViewer> = Vec::new();
    let start = Instant::now();
    for lap in 0u32.. {
        for (ts, key, data) in &frames {
            let due = start + span * lap + Duration::from_millis(u64::from(ts - first));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            viewers.extend(rx.try_iter().map(|sock| FloorViewer {
                sock,
                pending: Vec::new(),
                started: false,
            }));
            viewers.retain_mut(|v| {
                if !v.started && !key {
                    return true;
                }
                v.started = true;
                v.send(data).is_ok()
            });
        }
    }
    Ok(())
}

/// What one viewer saw while the window was open.
#[derive(Debug, Clone, Default)]
pub struct ViewerStats {
    /// Coded video frames received in the window.
    pub frames: u64,
    /// Time between consecutive frames' arrival in the window, microseconds.
    pub gaps_us: Vec<u32>,
    /// The stream ended or failed before the viewers were stopped.
    pub ended: bool,
}

/// Viewers of one URL on one thread of their own, reading every byte.
pub struct Watch {
    /// Viewers that have received at least one frame.
    pub playing: Arc<AtomicUsize>,
    /// Body bytes received while the window was open.
    pub bytes: Arc<AtomicU64>,
    viewers: usize,
    window: Arc<AtomicBool>,
    stop: tokio_util::sync::CancellationToken,
    thread: std::thread::JoinHandle<Vec<ViewerStats>>,
}

impl Watch {
    /// Open one viewer of `http://{addr}{path}` for each of `paths`.
    pub fn start(addr: SocketAddr, paths: Vec<String>) -> Watch {
        let n = paths.len();
        let playing = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let window = Arc::new(AtomicBool::new(false));
        let stop = tokio_util::sync::CancellationToken::new();
        let (p, b, w, s) = (playing.clone(), bytes.clone(), window.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let buf = std::rc::Rc::new(std::cell::RefCell::new(vec![0u8; 256 * 1024]));
                let local = tokio::task::LocalSet::new();
                let mut tasks = Vec::with_capacity(n);
                for path in paths {
                    let v = Viewer {
                        playing: p.clone(),
                        bytes: b.clone(),
                        window: w.clone(),
                        buf: buf.clone(),
                    };
                    let req = format!(
                        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: gbgate-bench\r\n\r\n"
                    );
                    let stop = s.clone();
                    tasks.push(local.spawn_local(v.run(addr, req, stop)));
                }
                local
                    .run_until(async move {
                        let mut out = Vec::with_capacity(n);
                        for t in tasks {
                            out.push(t.await.ok().flatten());
                        }
                        out
                    })
                    .await
            })
            .into_iter()
            .map(|s| s.unwrap_or_default())
            .collect()
        });
        Watch {
            playing,
            bytes,
            viewers: n,
            window,
            stop,
            thread,
        }
    }

    /// Wait until every viewer plays, at most `within`; how many did if not.
    pub fn wait_playing(&self, within: Duration) -> Result<(), usize> {
        let t = Instant::now();
        loop {
            let playing = self.playing.load(Ordering::Relaxed);
            if playing >= self.viewers {
                return Ok(());
            }
            if t.elapsed() > within {
                return Err(playing);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Start counting frames, gaps and bytes.
    pub fn open_window(&self) {
        self.window.store(true, Ordering::Release);
    }

    /// Stop counting, close every viewer and return what each saw.
    pub fn finish(self) -> Vec<ViewerStats> {
        self.window.store(false, Ordering::Release);
        self.stop.cancel();
        self.thread.join().expect("viewer thread")
    }
}

/// Whether every viewer got every frame of a window `secs` long at `fps`
/// (3 frames allowed for the window's edges) and none ended early; what
/// was wrong otherwise.
pub fn every_frame(stats: &[ViewerStats], secs: f64, fps: f64) -> Result<(), String> {
    let expected = ((secs * fps) as u64).saturating_sub(3);
    let short = stats.iter().filter(|s| s.frames < expected).count();
    let ended = stats.iter().filter(|s| s.ended).count();
    if short == 0 && ended == 0 {
        return Ok(());
    }
    let least = stats.iter().map(|s| s.frames).min().unwrap_or(0);
    Err(format!(
        "{short} of {} viewers got fewer than {expected} frames (least {least}), {ended} ended early",
        stats.len()
    ))
}

/// One viewer: HTTP/1.1 chunked body, FLV tags counted as they complete.
struct Viewer {
    playing: Arc<AtomicUsize>,
    bytes: Arc<AtomicU64>,
    window: Arc<AtomicBool>,
    buf: std::rc::Rc<std::cell::RefCell<Vec<u8>>>,
}

/// Where a viewer is in the HTTP/1.1 chunked body.
enum Chunking {
    Head(Vec<u8>),
    Size(Vec<u8>),
    Data(usize),
    Crlf(usize),
}

/// Where a viewer is in the FLV stream.
struct FlvCursor {
    header_left: usize,
    tag: [u8; 13],
    have: usize,
    skip: usize,
}

impl FlvCursor {
    /// Feed body bytes; calls `frame` for each coded video frame whose first
    /// bytes arrived (a frame counts when its tag header and first body
    /// bytes arrive; it is then on its way, as a player sees it).
    fn feed(&mut self, mut data: &[u8], mut frame: impl FnMut()) {
        while !data.is_empty() {
            if self.header_left > 0 {
                let n = self.header_left.min(data.len());
                self.header_left -= n;
                data = &data[n..];
            } else if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
            } else {
                let n = (13 - self.have).min(data.len());
                self.tag[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                data = &data[n..];
                if self.have == 13 {
                    let size =
                        u32::from_be_bytes([0, self.tag[1], self.tag[2], self.tag[3]]) as usize;
                    // Two body bytes (or, for a shorter tag, PreviousTagSize
                    // bytes) are already read.
                    self.skip = size + 4 - 2;
                    if size >= 2 {
                        if let TagKind::Frame(_) = tag_kind(self.tag[0], &self.tag[11..13]) {
                            frame();
                        }
                    }
                    self.have = 0;
                }
            }
        }
    }
}

impl Viewer {
    async fn run(
        self,
        addr: SocketAddr,
        request: String,
        stop: tokio_util::sync::CancellationToken,
    ) -> Option<ViewerStats> {
        use tokio::io::AsyncWriteExt;
        let mut stats = ViewerStats::default();
        let mut sock = tokio::net::TcpStream::connect(addr).await.ok()?;
        sock.write_all(request.as_bytes()).await.ok()?;
        let mut chunking = Chunking::Head(Vec::new());
        let mut flv = FlvCursor {
            header_left: 13,
            tag: [0; 13],
            have: 0,
            skip: 0,
        };
        let mut last: Option<Instant> = None;
        let mut started = false;
        loop {
            tokio::select! {
                r = sock.readable() => if r.is_err() { break },
                _ = stop.cancelled() => return Some(stats),
            }
            let mut buf = self.buf.borrow_mut();
            let n = match sock.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => break,
            };
            let now = Instant::now();
            let window = self.window.load(Ordering::Acquire);
            let mut data = &buf[..n];
            let mut body_bytes = 0u64;
            let mut frames = 0u32;
            while !data.is_empty() {
                match &mut chunking {
                    Chunking::Head(h) => {
                        let take = data.len().min(4096);
                        h.extend_from_slice(&data[..take]);
                        if let Some(end) = h.windows(4).position(|w| w == b"\r\n\r\n") {
                            if !h.starts_with(b"HTTP/1.1 200") {
                                stats.ended = true;
                                return Some(stats);
                            }
                            let rest = h.len() - (end + 4);
                            data = &data[take - rest..];
                            chunking = Chunking::Size(Vec::new());
                        } else {
                            data = &data[take..];
                        }
                    }
                    Chunking::Size(line) => {
                        let nl = data.iter().position(|&c| c == b'\n');
                        let upto = nl.map_or(data.len(), |i| i + 1);
                        line.extend_from_slice(&data[..upto]);
                        data = &data[upto..];
                        if nl.is_some() {
                            let text = std::str::from_utf8(line).unwrap_or("").trim();
                            let size =
                                usize::from_str_radix(text.split(';').next().unwrap_or(""), 16)
                                    .ok()?;
                            if size == 0 {
                                stats.ended = true;
                                return Some(stats);
                            }
                            chunking = Chunking::Data(size);
                        }
                    }
                    Chunking::Data(left) => {
                        let take = (*left).min(data.len());
                        flv.feed(&data[..take], || frames += 1);
                        body_bytes += take as u64;
                        *left -= take;
                        data = &data[take..];
                        if *left == 0 {
                            chunking = Chunking::Crlf(2);
                        }
                    }
                    Chunking::Crlf(left) => {
                        let take = (*left).min(data.len());
                        *left -= take;
                        data = &data[take..];
                        if *left == 0 {
                            chunking = Chunking::Size(Vec::new());
                        }
                    }
                }
            }
            drop(buf);
            if frames > 0 && !started {
                started = true;
                self.playing.fetch_add(1, Ordering::Relaxed);
            }
            if window {
                self.bytes.fetch_add(body_bytes, Ordering::Relaxed);
                for _ in 0..frames {
                    stats.frames += 1;
                    if let Some(l) = last {
                        stats
                            .gaps_us
                            .push(now.duration_since(l).as_micros().min(u32::MAX as u128) as u32);
                    }
                    last = Some(now);
                }
            } else {
                last = None;
            }
        }
        stats.ended = true;
        Some(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(kind: u8, ts: u32, body: &[u8]) -> Vec<u8> {
        let size = body.len() as u32;
        let mut t = vec![kind];
        t.extend_from_slice(&size.to_be_bytes()[1..]);
        t.extend_from_slice(&ts.to_be_bytes()[1..]);
        t.push((ts >> 24) as u8);
        t.extend_from_slice(&[0, 0, 0]);
        t.extend_from_slice(body);
        t.extend_from_slice(&(11 + size).to_be_bytes());
        t
    }

    fn stream() -> Vec<u8> {
        let mut flv = b"FLV\x01\x01\0\0\0\x09\0\0\0\0".to_vec();
        flv.extend(tag(18, 0, b"meta"));
        flv.extend(tag(9, 0, &[0x17, 0, 0, 0, 0, 1]));
        flv.extend(tag(9, 0, &[0x27, 1, 0, 0, 0, 9])); // a P frame before any keyframe
        flv.extend(tag(9, 40, &[0x17, 1, 0, 0, 0, 9, 9]));
        flv.extend(tag(9, 80, &[0x27, 1, 0, 0, 0, 9]));
        flv.extend(tag(9, 120, &[0x27, 1, 0]));
        flv
    }

    #[test]
    fn a_recording_starts_at_the_first_keyframe_after_the_head() {
        let flv = stream();
        let rec = Recording::parse(&flv[..flv.len() - 3]).unwrap();
        assert_eq!(rec.head.len(), 13 + (11 + 4 + 4) + (11 + 6 + 4));
        let ts: Vec<_> = rec.frames.iter().map(|f| (f.ts, f.key)).collect();
        assert_eq!(ts, [(40, true), (80, false)], "the cut last tag is dropped");
        assert!((rec.fps() - 25.0).abs() < 0.01);
        assert!(Recording::parse(b"FLV\x01\x01\0\0\0\x09\0\0\0\0").is_err());
    }

    #[test]
    fn every_frame_needs_each_viewer_to_have_all_but_the_edges() {
        let v = |frames, ended| ViewerStats {
            frames,
            gaps_us: Vec::new(),
            ended,
        };
        assert!(every_frame(&[v(497, false), v(500, false)], 20.0, 25.0).is_ok());
        let short = every_frame(&[v(496, false), v(500, false)], 20.0, 25.0).unwrap_err();
        assert!(
            short.starts_with("1 of 2 viewers got fewer than 497"),
            "{short}"
        );
        assert!(
            every_frame(&[v(500, true)], 20.0, 25.0).is_err(),
            "ended early"
        );
    }

    #[test]
    fn the_cursor_counts_frames_however_the_bytes_are_split() {
        let flv = stream();
        for step in [1, 2, 5, 13, 64] {
            let mut c = FlvCursor {
                header_left: 13,
                tag: [0; 13],
                have: 0,
                skip: 0,
            };
            let mut frames = 0;
            for part in flv.chunks(step) {
                c.feed(part, || frames += 1);
            }
            assert_eq!(frames, 4, "split every {step} bytes");
        }
    }
}
