//! HTTP viewers written by one task per hub and format, straight to their
//! sockets.
//!
//! A viewer served through hyper costs a task wake-up, a trip through the
//! connection's state machine and a body poll per frame; with a thousand
//! viewers of one camera that was half again the CPU of a bare writer and
//! about 45 KiB of buffers per viewer. Here the hub's chunk signal wakes
//! one writer, which drains every viewer ([`Viewer::try_next`]) and writes
//! each chunk with one non-blocking `writev` (chunk size line, the shared
//! bytes, CRLF). What a socket does not take waits in the viewer's queue
//! (references to the shared chunks, no copies); a queue too long means a
//! slow viewer, which skips to the next keyframe like one that falls
//! behind the hub's ring, and is dropped if it keeps doing so.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::hub::{Format, Hub, Next, Viewer};

/// Chunks a viewer's socket may owe before it counts as fallen behind:
/// about 2.5 s of video at 25 fps, half the hub's ring.
const MAX_QUEUED: usize = 64;
/// How soon a writer retries sockets that did not take everything, when no
/// new chunk wakes it first.
const RETRY: Duration = Duration::from_millis(5);

/// A viewer handed to a writer: its socket (the response head already
/// sent), its place in the hub, and what ends it besides the hub.
pub struct DirectViewer {
    /// The client's connection.
    pub sock: TcpStream,
    /// The viewer.
    pub viewer: Viewer,
    /// Fires when the viewer must stop (the policy revoked it).
    pub stop: Option<CancellationToken>,
    /// Dropped when the viewer ends (e.g. its entry in the open-viewers list).
    pub keep: Option<Box<dyn Send + Sync>>,
}

/// One HTTP/1.1 chunk on its way: size line, shared bytes, CRLF.
struct Piece {
    /// The size in hex and CRLF (at most 16 digits for a `usize`).
    head: [u8; 18],
    head_len: u8,
    data: Bytes,
}

impl Piece {
    /// The chunk of `data`; empty data makes the last chunk (`0\r\n\r\n`).
    fn new(data: Bytes) -> Piece {
        use std::io::Write;
        let mut head = [0u8; 18];
        let mut w = &mut head[..];
        // Cannot fail: 16 hex digits and CRLF fit.
        let _ = write!(w, "{:x}\r\n", data.len());
        let head_len = (18 - w.len()) as u8;
        Piece {
            head,
            head_len,
            data,
        }
    }

    fn len(&self) -> usize {
        usize::from(self.head_len) + self.data.len() + 2
    }

    /// The parts still to write, `written` bytes in.
    fn slices(&self, written: usize) -> [&[u8]; 3] {
        let head = &self.head[..usize::from(self.head_len)];
        let parts: [&[u8]; 3] = [head, &self.data, b"\r\n"];
        let mut skip = written;
        parts.map(|p| {
            let s = skip.min(p.len());
            skip -= s;
            &p[s..]
        })
    }
}

/// A viewer at the writer.
struct Seat {
    d: DirectViewer,
    queue: VecDeque<Piece>,
    /// Bytes of the queue's first piece already written.
    written: usize,
}

/// What serving a seat came to.
enum Served {
    Open,
    Closed,
}

impl Seat {
    fn new(d: DirectViewer) -> Seat {
        Seat {
            d,
            queue: VecDeque::new(),
            written: 0,
        }
    }

    /// Take what the hub has for this viewer, write what the socket takes.
    fn serve(&mut self) -> Served {
        if self
            .d
            .stop
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
        {
            tracing::info!(stream = %self.d.viewer.hub().name, "viewer ends: sharing revoked");
            return self.close();
        }
        while let Some(next) = self.d.viewer.try_next() {
            match next {
                Next::Data { bytes, .. } => {
                    if self.queue.len() >= MAX_QUEUED {
                        // Keep the piece being written (its framing must
                        // finish), drop the rest; resume at a keyframe.
                        let keep = usize::from(self.written > 0);
                        let missed = self.queue.len() - keep;
                        self.queue.truncate(keep);
                        if let Some(reason) = self.d.viewer.fell_behind(missed as u64) {
                            tracing::info!(stream = %self.d.viewer.hub().name, %reason, "viewer stream ends");
                            return self.close();
                        }
                        continue;
                    }
                    self.queue.push_back(Piece::new(bytes));
                }
                Next::End(reason) => {
                    tracing::info!(stream = %self.d.viewer.hub().name, %reason, "viewer stream ends");
                    return self.close();
                }
            }
        }
        match self.flush() {
            Ok(()) => Served::Open,
            Err(_) => Served::Closed, // the client went away
        }
    }

    /// Write as much of the queue as the socket takes now.
    fn flush(&mut self) -> std::io::Result<()> {
        while !self.queue.is_empty() {
            // Up to 8 chunks per writev, without an allocation.
            let mut slices = [IoSlice::new(&[]); 24];
            let mut k = 0;
            for (i, p) in self.queue.iter().take(8).enumerate() {
                let from = if i == 0 { self.written } else { 0 };
                for part in p.slices(from) {
                    if !part.is_empty() {
                        slices[k] = IoSlice::new(part);
                        k += 1;
                    }
                }
            }
            let mut n = match self.d.sock.try_write_vectored(&slices[..k]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            };
            while let Some(p) = self.queue.front() {
                let left = p.len() - self.written;
                if n >= left {
                    n -= left;
                    self.written = 0;
                    self.queue.pop_front();
                } else {
                    self.written += n;
                    break;
                }
            }
        }
        Ok(())
    }

    /// End the response (the last chunk) and let the socket go.
    fn close(&mut self) -> Served {
        if self.written == 0 {
            self.queue.clear();
        } else {
            self.queue.truncate(1);
        }
        self.queue.push_back(Piece::new(Bytes::new()));
        let _ = self.flush();
        Served::Closed
    }

    fn owes(&self) -> bool {
        !self.queue.is_empty()
    }
}

/// Where a hub's writers take new viewers, one per format.
#[derive(Default)]
pub struct Writers {
    by_format:
        std::sync::Mutex<std::collections::HashMap<Format, mpsc::UnboundedSender<DirectViewer>>>,
}

/// Give a viewer whose response head is sent to its hub's writer for
/// `format`, starting one if there is none.
pub fn hand_over(hub: &Arc<Hub>, format: Format, viewer: DirectViewer) {
    let mut writers = super::locked(&hub.writers.by_format);
    let viewer = match writers.get(&format) {
        Some(tx) => match tx.send(viewer) {
            Ok(()) => return,
            Err(mpsc::error::SendError(v)) => v,
        },
        None => viewer,
    };
    let Some(signal) = hub.chunk_signal(format) else {
        // The hub ended (or never muxed this format): nothing to write.
        return;
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = tx.send(viewer);
    writers.insert(format, tx);
    tokio::spawn(run(hub.clone(), format, rx, signal));
}

async fn run(
    hub: Arc<Hub>,
    format: Format,
    mut arrivals: mpsc::UnboundedReceiver<DirectViewer>,
    mut signal: tokio::sync::broadcast::Receiver<super::hub::Chunk>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut seats: Vec<Seat> = Vec::new();
    let mut ended = false;
    loop {
        let owing = seats.iter().any(Seat::owes);
        // Who to serve this time: everyone on a new chunk; on a retry only
        // the sockets that owe bytes and on an arrival only the newcomer,
        // so a slow viewer or a crowd joining at once does not make the
        // writer walk every seat again and again.
        let mut only_owing = false;
        tokio::select! {
            biased;
            v = arrivals.recv() => match v {
                Some(d) => {
                    let mut seat = Seat::new(d);
                    if matches!(seat.serve(), Served::Open) {
                        seats.push(seat);
                    }
                    continue;
                }
                None => return,
            },
            r = signal.recv(), if !ended => {
                ended = matches!(r, Err(RecvError::Closed));
            }
            _ = tokio::time::sleep(RETRY), if owing || ended => only_owing = !ended,
        }
        seats.retain_mut(|s| (only_owing && !s.owes()) || matches!(s.serve(), Served::Open));
        if seats.is_empty() {
            // Leave only when nobody is on the way: hand_over sends under
            // the same lock.
            let mut writers = super::locked(&hub.writers.by_format);
            match arrivals.try_recv() {
                Ok(d) => seats.push(Seat::new(d)),
                Err(_) => {
                    writers.remove(&format);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame::{Codec, Frame};
    use tokio::io::AsyncReadExt;

    fn frame(pts: u64, keyframe: bool, size: usize) -> Frame {
        // A start code and an IDR (5) or non-IDR (1) slice of `size` bytes.
        let mut data = vec![0, 0, 0, 1, if keyframe { 0x65 } else { 0x41 }];
        data.resize(5 + size, 0x5A);
        Frame {
            codec: Codec::H264,
            pts,
            dts: pts,
            keyframe,
            data: Bytes::from(data),
        }
    }

    /// Wait (at most 10 s, for a loaded machine) until `done`.
    async fn eventually(done: impl Fn() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not within 10 s");
    }

    /// A client socket and the server side of it.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (client, server)
    }

    async fn seat(hub: &Arc<Hub>, sock: TcpStream) -> CancellationToken {
        let viewer = hub.join(Format::Ts, Duration::from_secs(1)).await.unwrap();
        let stop = CancellationToken::new();
        hand_over(
            hub,
            Format::Ts,
            DirectViewer {
                sock,
                viewer,
                stop: Some(stop.clone()),
                keep: None,
            },
        );
        stop
    }

    /// Read the client side until EOF; the chunked body and whether it
    /// ended with the last chunk.
    async fn body(mut client: TcpStream) -> (Vec<u8>, bool) {
        let mut wire = Vec::new();
        client.read_to_end(&mut wire).await.unwrap();
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let Some(nl) = wire[at..].windows(2).position(|w| w == b"\r\n") else {
                return (body, false);
            };
            let size = usize::from_str_radix(std::str::from_utf8(&wire[at..at + nl]).unwrap(), 16)
                .unwrap();
            at += nl + 2;
            if size == 0 {
                return (body, wire[at..] == *b"\r\n");
            }
            body.extend_from_slice(&wire[at..at + size]);
            assert_eq!(&wire[at + size..at + size + 2], b"\r\n");
            at += size + 2;
        }
    }

    #[tokio::test]
    async fn viewers_get_every_chunk_then_the_last_chunk_when_the_hub_ends() {
        let hub = Hub::new("t".into(), 10);
        hub.push(frame(0, true, 100));
        let (c1, s1) = pair().await;
        let (c2, s2) = pair().await;
        seat(&hub, s1).await;
        seat(&hub, s2).await;
        let readers = [tokio::spawn(body(c1)), tokio::spawn(body(c2))];
        for i in 1..50u64 {
            hub.push(frame(i * 3600, i % 25 == 0, 3000));
        }
        // Let the writer take every chunk before the end.
        tokio::task::yield_now().await;
        hub.end("device stopped sending");
        for r in readers {
            let (ts, ended) = r.await.unwrap();
            assert!(ended, "the body ends with the last chunk");
            assert_eq!(ts.len() % 188, 0, "whole TS packets");
            // Every frame's payload is in the body: 49 P/IDR frames of 3000
            // bytes and the first of 100 pass as 0x5A runs.
            let payload = ts.iter().filter(|&&b| b == 0x5A).count();
            assert!(payload >= 49 * 3000 + 100, "{payload}");
        }
    }

    #[tokio::test]
    async fn a_revoked_viewer_is_closed_and_the_others_go_on() {
        let hub = Hub::new("t".into(), 10);
        hub.push(frame(0, true, 100));
        let (c1, s1) = pair().await;
        let (c2, s2) = pair().await;
        let stop1 = seat(&hub, s1).await;
        seat(&hub, s2).await;
        let r1 = tokio::spawn(body(c1));
        stop1.cancel();
        hub.push(frame(3600, false, 100));
        let (_, ended) = r1.await.unwrap();
        assert!(ended);
        eventually(|| hub.viewers() == 1).await;
        drop(c2);
    }

    #[tokio::test]
    async fn a_viewer_that_stops_reading_skips_then_is_dropped() {
        let hub = Hub::new("t".into(), 10);
        hub.push(frame(0, true, 100));
        let (client, server) = pair().await;
        // Small buffers both ways: the socket stops taking bytes soon.
        socket2::SockRef::from(&client)
            .set_recv_buffer_size(4096)
            .unwrap();
        socket2::SockRef::from(&server)
            .set_send_buffer_size(4096)
            .unwrap();
        seat(&hub, server).await;
        let mut pts = 0;
        for i in 0..(MAX_QUEUED as u64 + 10) * 8 {
            pts += 3600;
            hub.push(frame(pts, i % 20 == 0, 20_000));
            tokio::task::yield_now().await;
        }
        eventually(|| hub.viewers() == 0).await;
        assert!(
            hub.stats
                .viewer_skips
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 3
        );
        drop(client);
    }

    #[test]
    fn a_piece_is_a_chunk_of_http_1_1() {
        for len in [0usize, 1, 15, 16, 255, 4096, 100_000] {
            let p = Piece::new(Bytes::from(vec![7u8; len]));
            let wire: Vec<u8> = p.slices(0).concat();
            let mut want = format!("{len:x}\r\n").into_bytes();
            want.extend(std::iter::repeat_n(7u8, len));
            want.extend_from_slice(b"\r\n");
            assert_eq!(wire, want, "{len}");
            assert_eq!(p.len(), want.len());
            for cut in [0, 1, 3, want.len() - 1] {
                assert_eq!(p.slices(cut).concat(), want[cut..].to_vec());
            }
        }
    }
}
