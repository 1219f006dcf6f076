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

/// Messages queued per connection before new ones are dropped.
const WRITE_QUEUE: usize = 4096;

/// Open TCP connections.
#[derive(Clone)]
pub struct TcpPool {
    conns: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>>,
    inbound: mpsc::Sender<Inbound>,
    limits: Limits,
    permits: Arc<Semaphore>,
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
            shutdown,
        }
    }

    fn lookup(&self, addr: SocketAddr) -> Option<mpsc::Sender<Bytes>> {
        self.conns.lock().ok()?.get(&addr).cloned()
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
    pub fn send(&self, addr: SocketAddr, data: Bytes) {
        if let Some(tx) = self.lookup(addr) {
            if tx.try_send(data).is_err() {
                metrics::counter!("gbgate_tcp_send_drops_total").increment(1);
                tracing::warn!(%addr, "TCP write queue full or closed; message dropped");
            }
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            let Ok(permit) = pool.permits.clone().try_acquire_owned() else {
                tracing::warn!(%addr, "TCP connection limit reached; not dialling");
                return;
            };
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    // Another send may have dialled meanwhile; either connection works.
                    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
                    let _ = tx.try_send(data);
                    pool.run(stream, addr, tx, rx).await;
                    drop(permit);
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "TCP connect failed");
                    let peer = Peer {
                        transport: Transport::Tcp,
                        addr,
                    };
                    let _ = pool.inbound.send(Inbound::Unreachable { peer }).await;
                }
            }
        });
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
        let (mut reader, mut writer) = stream.into_split();
        let writer_task = tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                if writer.write_all(&data).await.is_err() {
                    break;
                }
            }
        });
        let peer = Peer {
            transport: Transport::Tcp,
            addr,
        };
        let mut framer = StreamFramer::new(self.limits.max_message);
        let mut buf = vec![0u8; 64 * 1024];
        'conn: loop {
            let n = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                r = reader.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
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
                        Inbound::Malformed {
                            peer,
                            raw,
                            error: error.to_string(),
                        }
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
