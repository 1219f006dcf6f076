//! SIP over TCP: Content-Length framing, one writer task per connection,
//! connections keyed by remote address so replies and later requests reuse
//! them (GB/T 28181-2022 keeps the REGISTER connection for everything).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use super::Limits;
use crate::node::Inbound;
use crate::sip::framing::StreamFramer;
use crate::sip::{Peer, Transport};

/// Bytes of queued messages gathered into one write.
const WRITE_BATCH: usize = 64 * 1024;

/// Messages queued per connection before new ones are dropped. One
/// connection may be a platform's trunk carrying a whole fleet: at 24,000
/// registrations/s (48,000 messages/s toward one peer) a reader that
/// stalled for 20 ms filled the former 1,024 and 898 answers were dropped
/// in a 2-minute REGISTER storm. About 4 MiB at SIP's usual ~500 bytes a
/// message, held only while the peer stalls (the channel allocates as it
/// fills).
const WRITE_QUEUE: usize = 8 * 1024;

/// A connection silent this long is closed (devices keep alive every 60 s
/// by default; three missed keepalives end the registration anyway).
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// How long a dial may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Outbound connections (to parents, to TCP devices), apart from the
/// inbound limit so a flood of inbound connections cannot stop them.
const MAX_DIALS: usize = 1024;

/// Open TCP connections.
#[derive(Clone)]
pub struct TcpPool {
    conns: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>>,
    inbound: mpsc::Sender<Inbound>,
    limits: Limits,
    permits: Arc<Semaphore>,
    dials: Arc<Semaphore>,
    shutdown: CancellationToken,
}

impl TcpPool {
    pub(super) fn new(
        inbound: mpsc::Sender<Inbound>,
        limits: Limits,
        shutdown: CancellationToken,
    ) -> Self {
        TcpPool {
            conns: Arc::new(Mutex::new(HashMap::new())),
            inbound,
            limits,
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            dials: Arc::new(Semaphore::new(MAX_DIALS)),
            shutdown,
        }
    }

    pub(super) async fn accept_loop(self, listener: tokio::net::TcpListener) {
        let mut backoff = std::time::Duration::from_millis(10);
        loop {
            let permit = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                p = self.permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let accepted = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                r = listener.accept() => r,
            };
            match accepted {
                Ok((stream, addr)) => {
                    backoff = std::time::Duration::from_millis(10);
                    let pool = self.clone();
                    tokio::spawn(async move {
                        pool.serve(stream, addr).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    // EMFILE and friends: wait rather than spin (mini-redis habit).
                    tracing::warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                }
            }
        }
    }

    /// Queue `data` for `addr`, dialling a connection if there is none.
    /// The new connection's queue is in the map before the dial starts, so
    /// a burst of sends shares one connection and keeps its order.
    pub fn send(&self, addr: SocketAddr, data: Bytes) {
        let rx = {
            let Ok(mut conns) = self.conns.lock() else {
                return;
            };
            if let Some(tx) = conns.get(&addr) {
                match tx.try_send(data) {
                    Ok(()) => return,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        metrics::counter!("gbgate_tcp_send_drops_total").increment(1);
                        tracing::warn!(%addr, "TCP write queue full; message dropped");
                        return;
                    }
                    Err(mpsc::error::TrySendError::Closed(data)) => {
                        // The connection died: dial a new one below.
                        conns.remove(&addr);
                        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
                        let _ = tx.try_send(data);
                        conns.insert(addr, tx);
                        rx
                    }
                }
            } else {
                let (tx, rx) = mpsc::channel(WRITE_QUEUE);
                let _ = tx.try_send(data);
                conns.insert(addr, tx);
                rx
            }
        };
        let pool = self.clone();
        tokio::spawn(async move {
            let peer = Peer::plain(Transport::Tcp, addr);
            let Ok(permit) = pool.dials.clone().try_acquire_owned() else {
                tracing::warn!(%addr, "outbound TCP connection limit reached; not dialling");
                pool.forget(addr);
                let _ = pool.inbound.send(Inbound::Unreachable { peer }).await;
                return;
            };
            let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await;
            match connect {
                Ok(Ok(stream)) => {
                    let tx = pool.conns.lock().ok().and_then(|m| m.get(&addr).cloned());
                    if let Some(tx) = tx {
                        pool.run(stream, addr, tx, rx).await;
                    }
                    drop(permit);
                }
                Ok(Err(e)) => {
                    tracing::warn!(%addr, error = %e, "TCP connect failed");
                    pool.forget(addr);
                    let _ = pool.inbound.send(Inbound::Unreachable { peer }).await;
                }
                Err(_) => {
                    tracing::warn!(%addr, "TCP connect timed out");
                    pool.forget(addr);
                    let _ = pool.inbound.send(Inbound::Unreachable { peer }).await;
                }
            }
        });
    }

    fn forget(&self, addr: SocketAddr) {
        if let Ok(mut m) = self.conns.lock() {
            m.remove(&addr);
        }
    }

    async fn serve(&self, stream: TcpStream, addr: SocketAddr) {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        self.run(stream, addr, tx, rx).await;
    }

    async fn run(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
        tx: mpsc::Sender<Bytes>,
        mut rx: mpsc::Receiver<Bytes>,
    ) {
        let _ = stream.set_nodelay(true);
        if let Ok(mut m) = self.conns.lock() {
            m.insert(addr, tx.clone());
        }
        let conns = self.conns.clone();
        let (mut reader, mut writer) = stream.into_split();
        let writer_task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // What is already queued goes in the same write: under a
                // storm one connection carries thousands of answers a
                // second, and a write each was a system call each. The
                // copy is per batch and freed with it, so an idle
                // connection keeps no buffer.
                let data = if rx.is_empty() {
                    first
                } else {
                    let mut batch =
                        Vec::with_capacity((first.len() * (rx.len() + 1)).min(WRITE_BATCH));
                    batch.extend_from_slice(&first);
                    while batch.len() < WRITE_BATCH {
                        match rx.try_recv() {
                            Ok(more) => batch.extend_from_slice(&more),
                            Err(_) => break,
                        }
                    }
                    Bytes::from(batch)
                };
                if writer.write_all(&data).await.is_err() {
                    // A dead writer: close the queue so the next send redials.
                    rx.close();
                    if let Ok(mut m) = conns.lock() {
                        if m.get(&addr).is_some_and(|t| t.is_closed()) {
                            m.remove(&addr);
                        }
                    }
                    break;
                }
            }
        });
        let peer = Peer::plain(Transport::Tcp, addr);
        let mut framer = StreamFramer::new(self.limits.max_message);
        // Small read buffer: the framer accumulates; 20k idle connections
        // must not cost 64 KiB each.
        let mut buf = vec![0u8; 8 * 1024];
        'conn: loop {
            let n = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                r = tokio::time::timeout(IDLE_TIMEOUT, reader.read(&mut buf)) => match r {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => n,
                    Err(_) => {
                        tracing::info!(%addr, "closing idle TCP connection");
                        break;
                    }
                },
            };
            framer.push(&buf[..n]);
            loop {
                let inbound = match framer.next_message() {
                    Ok(None) => break,
                    Ok(Some(message)) => Inbound::Message { peer, message },
                    Err(e) if e.is_fatal() => {
                        tracing::warn!(%addr, error = %e, "TCP stream cannot be framed; closing the connection");
                        metrics::counter!("gbgate_sip_parse_errors_total").increment(1);
                        break 'conn;
                    }
                    Err(crate::sip::framing::FrameError::Malformed { raw, error }) => {
                        Inbound::Malformed { peer, raw, error }
                    }
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "TCP framing error");
                        continue;
                    }
                };
                if self.inbound.send(inbound).await.is_err() {
                    break 'conn;
                }
            }
        }
        if let Ok(mut m) = self.conns.lock() {
            // Only remove our own entry; a newer connection from the same address may have replaced it.
            if m.get(&addr).is_some_and(|t| t.same_channel(&tx)) {
                m.remove(&addr);
            }
        }
        drop(tx);
        writer_task.abort();
        tracing::debug!(%addr, "TCP connection closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queued_messages_leave_whole_and_in_order() {
        let (inbound, _keep) = mpsc::channel(16);
        let limits = Limits {
            max_message: 65_535,
            max_connections: 8,
        };
        let pool = TcpPool::new(inbound, limits, CancellationToken::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(pool.clone().accept_loop(listener));
        let mut client = TcpStream::connect(addr).await.unwrap();
        let me = client.local_addr().unwrap();
        for _ in 0..500 {
            if pool.conns.lock().unwrap().contains_key(&me) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // Queued without a yield, so the writer finds them all waiting and
        // gathers them into batches.
        let msgs: Vec<Bytes> = (0..2_000)
            .map(|i| Bytes::from(format!("MESSAGE {i} {}\r\n", "x".repeat(i % 700))))
            .collect();
        for m in &msgs {
            pool.send(me, m.clone());
        }
        let want = msgs.concat();
        let mut got = vec![0u8; want.len()];
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.read_exact(&mut got),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(got == want, "every message, whole and in order");
    }
}
