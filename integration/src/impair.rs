//! A userspace UDP impairment proxy: what `netem` would do on a link, for a
//! kernel without it. Datagrams from a client to the proxy go to `target`
//! and the target's answers go back to the client, each direction through
//! its own seeded model of a weak link:
//!
//! * **loss**: each datagram dropped with probability `loss`;
//! * **bandwidth**: a bottleneck of `rate_bps` serialising datagrams, with a
//!   queue of at most `queue` of waiting time (more is tail-dropped, as a
//!   router does);
//! * **delay and jitter**: after the bottleneck each datagram waits `delay`
//!   plus a uniform random part up to `jitter`; datagrams leave in order of
//!   their departure times, so jitter larger than their spacing reorders
//!   them.
//!
//! Same seed, same decisions: two runs of one experiment lose the same
//! datagrams of the same sequence.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One direction of an impaired link.
#[derive(Debug, Clone, Copy)]
pub struct Impairment {
    /// Probability of losing a datagram, 0..1.
    pub loss: f64,
    /// One-way delay.
    pub delay: Duration,
    /// Extra random delay, uniform in 0..=jitter.
    pub jitter: Duration,
    /// Bottleneck rate in bits per second; `None`: unlimited.
    pub rate_bps: Option<u64>,
    /// Longest wait in the bottleneck queue before tail drop.
    pub queue: Duration,
    /// Seed of this direction's random decisions.
    pub seed: u64,
}

impl Impairment {
    /// A clean link.
    pub fn none() -> Impairment {
        Impairment {
            loss: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            rate_bps: None,
            queue: Duration::from_millis(200),
            seed: 1,
        }
    }

    /// `loss` and `delay` (one way), jitter a tenth of the delay, a
    /// `rate_bps` bottleneck with a 200 ms queue.
    pub fn lossy(loss: f64, delay: Duration, rate_bps: u64, seed: u64) -> Impairment {
        Impairment {
            loss,
            delay,
            jitter: delay / 10,
            rate_bps: Some(rate_bps),
            queue: Duration::from_millis(200),
            seed,
        }
    }
}

/// What one direction did.
#[derive(Debug, Default)]
pub struct DirectionStats {
    /// Datagrams received.
    pub datagrams: AtomicU64,
    /// Dropped by the random loss.
    pub lost: AtomicU64,
    /// Dropped because the bottleneck queue was full.
    pub queue_drops: AtomicU64,
    /// Datagrams delivered.
    pub delivered: AtomicU64,
}

/// A running proxy; stops when dropped.
pub struct ImpairProxy {
    /// Where clients send.
    pub addr: SocketAddr,
    /// Client → target.
    pub up: Arc<DirectionStats>,
    /// Target → client.
    pub down: Arc<DirectionStats>,
    stop: CancellationToken,
}

impl Drop for ImpairProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl ImpairProxy {
    /// Listen on `listen` and relay to `target` through `up` (client to
    /// target) and `down` (back). One client at a time: answers go to the
    /// address that sent last.
    pub async fn start(
        listen: SocketAddr,
        target: SocketAddr,
        up: Impairment,
        down: Impairment,
    ) -> std::io::Result<ImpairProxy> {
        let front = Arc::new(bind(listen)?);
        let back = Arc::new(bind(SocketAddr::new(listen.ip(), 0))?);
        back.connect(target).await?;
        let addr = front.local_addr()?;
        let stop = CancellationToken::new();
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let (up_stats, down_stats) = (Arc::default(), Arc::default());
        tokio::spawn(relay(
            front.clone(),
            Out::Connected(back.clone()),
            up,
            Arc::clone(&up_stats),
            Some(client.clone()),
            stop.clone(),
        ));
        tokio::spawn(relay(
            back,
            Out::To(front, client),
            down,
            Arc::clone(&down_stats),
            None,
            stop.clone(),
        ));
        Ok(ImpairProxy {
            addr,
            up: up_stats,
            down: down_stats,
            stop,
        })
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

enum Out {
    Connected(Arc<UdpSocket>),
    To(Arc<UdpSocket>, Arc<Mutex<Option<SocketAddr>>>),
}

impl Out {
    async fn send(&self, data: &[u8]) {
        match self {
            Out::Connected(s) => {
                let _ = s.send(data).await;
            }
            Out::To(s, client) => {
                let to = *client
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(to) = to {
                    let _ = s.send_to(data, to).await;
                }
            }
        }
    }
}

/// One direction: receive, decide, queue by departure time, send when due.
async fn relay(
    from: Arc<UdpSocket>,
    out: Out,
    model: Impairment,
    stats: Arc<DirectionStats>,
    remember_client: Option<Arc<Mutex<Option<SocketAddr>>>>,
    stop: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(model.seed);
    let mut due: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>> = BinaryHeap::new();
    let mut link_free_at = Instant::now();
    let mut order = 0u64;
    let mut buf = vec![0u8; 65_536];
    loop {
        let next = due.peek().map(|Reverse((t, _, _))| *t);
        tokio::select! {
            _ = stop.cancelled() => return,
            r = from.recv_from(&mut buf) => {
                let Ok((n, src)) = r else { continue };
                if let Some(c) = &remember_client {
                    *c.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(src);
                }
                stats.datagrams.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                if rng.random::<f64>() < model.loss {
                    stats.lost.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let start = link_free_at.max(now);
                if start - now > model.queue {
                    stats.queue_drops.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let serialise = model.rate_bps.map_or(Duration::ZERO, |r| {
                    Duration::from_secs_f64(n as f64 * 8.0 / r as f64)
                });
                link_free_at = start + serialise;
                let jitter = model.jitter.mul_f64(rng.random::<f64>());
                order += 1;
                due.push(Reverse((
                    link_free_at + model.delay + jitter,
                    order,
                    buf.get(..n).unwrap_or_default().to_vec(),
                )));
            }
            _ = sleep_until(next) => {
                let now = Instant::now();
                while due.peek().is_some_and(|Reverse((t, _, _))| *t <= now) {
                    if let Some(Reverse((_, _, data))) = due.pop() {
                        out.send(&data).await;
                        stats.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Send `n` numbered datagrams of 1,000 bytes through a proxy with
    /// `up`, `spacing` apart (zero: 20 at a time, a millisecond apart, so no
    /// socket buffer overflows and only the model loses datagrams); what
    /// arrived, in arrival order.
    async fn through(up: Impairment, n: u32, spacing: Duration) -> Vec<u32> {
        let sink = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let proxy = ImpairProxy::start(
            "127.0.0.1:0".parse().unwrap(),
            sink.local_addr().unwrap(),
            up,
            Impairment::none(),
        )
        .await
        .unwrap();
        let collector = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            while let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(500), sink.recv(&mut buf)).await
            {
                got.push(u32::from_be_bytes(buf[..4].try_into().unwrap()));
            }
            got
        });
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut datagram = vec![0u8; 1000];
        for i in 0..n {
            datagram[..4].copy_from_slice(&i.to_be_bytes());
            client.send_to(&datagram, proxy.addr).await.unwrap();
            if !spacing.is_zero() {
                tokio::time::sleep(spacing).await;
            } else if i % 20 == 19 {
                // 20 KB a millisecond: bursty, but within what a default
                // socket buffer holds while the proxy task gets its turn.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let got = collector.await.unwrap();
        drop(proxy);
        got
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loss_is_seeded_and_near_its_rate() {
        let model = Impairment {
            loss: 0.05,
            ..Impairment::none()
        };
        let a = through(model, 2000, Duration::ZERO).await;
        let b = through(model, 2000, Duration::ZERO).await;
        assert_eq!(a, b, "the same seed loses the same datagrams");
        let lost = 2000 - a.len();
        assert!((60..=140).contains(&lost), "5 % of 2000 lost: {lost}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jitter_reorders_and_delay_delays() {
        let model = Impairment {
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(20),
            ..Impairment::none()
        };
        let start = std::time::Instant::now();
        let got = through(model, 200, Duration::from_micros(200)).await;
        assert_eq!(got.len(), 200);
        assert!(got.windows(2).any(|w| w[1] < w[0]), "some reordered");
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bottleneck_tail_drops_a_burst_beyond_its_queue() {
        // 1 Mbit/s with a 50 ms queue holds about 6 KB: of 100 datagrams
        // of 1,000 bytes sent at once, about 7 pass.
        let model = Impairment {
            rate_bps: Some(1_000_000),
            queue: Duration::from_millis(50),
            ..Impairment::none()
        };
        let got = through(model, 100, Duration::ZERO).await;
        assert!(got.len() < 20, "{} passed", got.len());
    }
}
