//! The HTTP listener's fork: an HTTP/1.1 `GET /live/…` or `GET /playback/…`
//! is read here and answered by the same router (same gate, same errors),
//! and when the answer is video its body is written by the hub's writer
//! ([`crate::streams::fanout`]) rather than through hyper. Every other
//! connection goes to hyper (`axum::serve`) as it came.
//!
//! The request is read with `httparse` (hyper's own parser); only the
//! request line is looked at before deciding, with `peek`, so a connection
//! handed to hyper has lost nothing.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{self, Request, Response};
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tower::ServiceExt;

use crate::streams::fanout::{self, DirectViewer};
use crate::streams::hub::{Format, Viewer};

/// Longest request line looked at, and longest request head read.
const MAX_LINE: usize = 2048;
const MAX_HEAD: usize = 16 * 1024;
/// A client that sends no request line by then is left to hyper.
const FIRST_LINE_WAIT: Duration = Duration::from_secs(5);
/// A video request's head must arrive within this.
const HEAD_WAIT: Duration = Duration::from_secs(10);

/// The video of a response, for whoever writes its body: the fork here
/// takes it; hyper's body stream takes it otherwise. Whoever comes first.
#[derive(Clone)]
pub struct VideoBody(pub Arc<Mutex<Option<VideoParts>>>);

/// What a video response's body is made of.
pub struct VideoParts {
    /// The viewer.
    pub viewer: Viewer,
    /// Its format.
    pub format: Format,
    /// Fires when the policy revokes it.
    pub stop: Option<tokio_util::sync::CancellationToken>,
    /// Dropped when the viewer ends.
    pub keep: Option<Box<dyn Send + Sync>>,
}

impl VideoBody {
    /// Take the parts, if nobody has.
    pub fn take(&self) -> Option<VideoParts> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// Connections for hyper, after the fork kept the video requests.
pub struct Listener {
    rx: mpsc::Receiver<(TcpStream, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for Listener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The acceptor stopped (the listener failed): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Accept on `listener`, `tune` each connection, serve video requests with
/// `router` here and give the rest to the returned [`Listener`].
pub fn fork(
    listener: TcpListener,
    router: Router,
    tune: fn(&TcpStream),
) -> std::io::Result<Listener> {
    let local = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        loop {
            let (sock, addr) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: wait, as axum does.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            tune(&sock);
            let (tx, router) = (tx.clone(), router.clone());
            tokio::spawn(async move {
                if is_video_request(&sock).await {
                    serve_video(sock, router).await;
                } else {
                    let _ = tx.send((sock, addr)).await;
                }
            });
        }
    });
    Ok(Listener { rx, local })
}

/// True when the request line (peeked, not read) is an HTTP/1.1 GET of a
/// video path.
async fn is_video_request(sock: &TcpStream) -> bool {
    let mut buf = vec![0u8; MAX_LINE];
    let line = tokio::time::timeout(FIRST_LINE_WAIT, async {
        loop {
            let n = sock.peek(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            if let Some(end) = buf[..n].windows(2).position(|w| w == b"\r\n") {
                return Some(end);
            }
            if n == buf.len() {
                return None;
            }
            // Part of a line: wait for more (peek returns at once).
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .ok()
    .flatten();
    line.is_some_and(|end| video_line(&buf[..end]))
}

fn video_line(line: &[u8]) -> bool {
    (line.starts_with(b"GET /live/") || line.starts_with(b"GET /playback/"))
        && line.ends_with(b" HTTP/1.1")
}

/// Read the request head, ask the router, write its answer; video goes to
/// the hub's writer with the socket.
async fn serve_video(mut sock: TcpStream, router: Router) {
    let req = match tokio::time::timeout(HEAD_WAIT, read_head(&mut sock)).await {
        Ok(Ok(r)) => r,
        Ok(Err(status)) => {
            let _ = write_plain(&mut sock, status, "bad request head").await;
            return;
        }
        Err(_) => return,
    };
    let resp = match router.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let video = resp
        .extensions()
        .get::<VideoBody>()
        .and_then(VideoBody::take);
    let Some(parts) = video else {
        let _ = write_response(&mut sock, resp).await;
        return;
    };
    let head = response_head(
        resp.status(),
        resp.headers(),
        "transfer-encoding: chunked\r\n",
    );
    if sock.write_all(&head).await.is_err() {
        return;
    }
    let hub = parts.viewer.hub().clone();
    fanout::hand_over(
        &hub,
        parts.format,
        DirectViewer {
            sock,
            viewer: parts.viewer,
            stop: parts.stop,
            keep: parts.keep,
        },
    );
}

/// The request head as an `http::Request`, or the status to refuse it with.
async fn read_head(sock: &mut TcpStream) -> Result<Request<Body>, http::StatusCode> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = sock
            .read(&mut chunk)
            .await
            .map_err(|_| http::StatusCode::BAD_REQUEST)?;
        if n == 0 {
            return Err(http::StatusCode::BAD_REQUEST);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let mut b = Request::builder()
                    .method(parsed.method.unwrap_or("GET"))
                    .uri(parsed.path.unwrap_or("/"))
                    .version(http::Version::HTTP_11);
                for h in parsed.headers.iter() {
                    b = b.header(h.name, h.value);
                }
                return b
                    .body(Body::empty())
                    .map_err(|_| http::StatusCode::BAD_REQUEST);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                return Err(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
            }
            Err(_) => return Err(http::StatusCode::BAD_REQUEST),
        }
    }
}

/// Status line, the router's headers and `framing` (the header lines that
/// say how the body ends, which are ours to write), then the blank line.
fn response_head(status: http::StatusCode, headers: &http::HeaderMap, framing: &str) -> Vec<u8> {
    use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in headers {
        if name == CONTENT_LENGTH || name == CONNECTION || name == TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(framing.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

/// A whole (non-video) response, then the connection closes.
async fn write_response(sock: &mut TcpStream, resp: Response<Body>) -> std::io::Result<()> {
    let (parts, body) = resp.into_parts();
    let body = axum::body::to_bytes(body, 1024 * 1024)
        .await
        .unwrap_or_default();
    let framing = format!("content-length: {}\r\nconnection: close\r\n", body.len());
    let mut out = response_head(parts.status, &parts.headers, &framing);
    out.extend_from_slice(&body);
    sock.write_all(&out).await?;
    sock.shutdown().await
}

async fn write_plain(
    sock: &mut TcpStream,
    status: http::StatusCode,
    text: &str,
) -> std::io::Result<()> {
    let resp = Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(text.to_owned()))
        .unwrap_or_default();
    write_response(sock, resp).await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exchange(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // Until the peer closes, or a whole keep-alive answer arrived.
        loop {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            out.extend_from_slice(&buf[..n]);
            if n == 0 || out.ends_with(b"from hyper") {
                return String::from_utf8(out).unwrap();
            }
        }
    }

    #[tokio::test]
    async fn video_requests_are_answered_by_the_router_here_and_the_rest_by_hyper() {
        use axum::routing::get;
        let router = Router::new()
            .route(
                "/live/{file}",
                get(|| async { (http::StatusCode::NOT_FOUND, "no such channel\n") }),
            )
            .route("/healthz", get(|| async { "from hyper" }));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let forked = fork(l, router.clone(), |_| {}).unwrap();
        tokio::spawn(async move { axum::serve(forked, router).await });
        let video = exchange(addr, "GET /live/x.flv HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(video.starts_with("HTTP/1.1 404 Not Found\r\n"), "{video}");
        assert!(video.contains("connection: close\r\n"), "{video}");
        assert!(video.ends_with("\r\n\r\nno such channel\n"), "{video}");
        let other = exchange(addr, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(other.starts_with("HTTP/1.1 200 OK\r\n"), "{other}");
        assert!(
            !other.contains("connection: close"),
            "hyper keeps it alive: {other}"
        );
        // A request head that is not HTTP gets a 400, not a hang.
        let bad = exchange(addr, "GET /live/x.flv HTTP/1.1\r\nno colon here\r\n\r\n").await;
        assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    }

    #[test]
    fn only_http_1_1_gets_of_video_paths_are_forked() {
        assert!(video_line(b"GET /live/34020000001320000001.flv HTTP/1.1"));
        assert!(video_line(
            b"GET /playback/34020000001320000001.ts?start=1&end=2 HTTP/1.1"
        ));
        assert!(!video_line(b"GET /live/34020000001320000001.flv HTTP/1.0"));
        assert!(!video_line(b"HEAD /live/34020000001320000001.flv HTTP/1.1"));
        assert!(!video_line(b"GET /api/v1/catalog HTTP/1.1"));
        assert!(!video_line(b"GET /livestock HTTP/1.1"));
    }
}
