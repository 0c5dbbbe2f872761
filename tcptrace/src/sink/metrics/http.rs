//! The metrics endpoint: a small HTTP/1.x server on the tracer's own tokio runtime. The
//! socket is bound when the sinks are built (before capabilities are dropped, so a port below
//! 1024 works); the server runs as tasks beside the event loop and never holds it up: a
//! scrape reads the copy the sink published at its last tick and renders it on the runtime's
//! blocking pool (at most once per publication and format), a client gets a few seconds to send
//! a request of at most 8 KiB and to take the answer, and at most a few clients are served at
//! once — more are closed on arrival.
use std::{
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
    task::JoinHandle,
    time::timeout,
};

use super::{
    account::Tally,
    expose::{self, Format, Process},
};

/// Clients served at once; more are closed as soon as they are accepted.
const MAX_CLIENTS: usize = 8;
/// Largest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take the answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the endpoint's socket (non-blocking, for tokio to adopt later).
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("--metrics {addr}: {e}")))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// A rendered answer, kept while its publication is the latest.
struct Rendered {
    generation: u64,
    format: Format,
    body: Arc<String>,
}

/// What the connection tasks share.
struct Shared {
    snapshots: watch::Receiver<Arc<Tally>>,
    start_secs: f64,
    cache: Mutex<Vec<Rendered>>,
}

/// Starts serving on the current runtime; the returned task accepts until aborted.
pub fn serve(
    listener: std::net::TcpListener,
    snapshots: watch::Receiver<Arc<Tally>>,
    start_secs: f64,
) -> io::Result<JoinHandle<()>> {
    let listener = TcpListener::from_std(listener)?;
    let shared = Arc::new(Shared {
        snapshots,
        start_secs,
        cache: Mutex::new(Vec::new()),
    });
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    Ok(tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors or memory for a moment: do not spin.
                    log::debug!("metrics: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let _slot = slot;
                if let Err(e) = exchange(stream, &shared).await {
                    log::debug!("metrics: {e}");
                }
            });
        }
    }))
}

/// One request and its answer, then the connection is closed.
async fn exchange(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    let head = match timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"request too large\n",
                false,
            )
            .await;
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "request timed out")),
    };
    let (status, ctype, body, head_only): (&str, &str, Arc<String>, bool) = match parse(&head) {
        Request::Metrics { format, head_only } => (
            "200 OK",
            format.content_type(),
            render(shared, format).await?,
            head_only,
        ),
        Request::Root => (
            "200 OK",
            "text/plain; charset=utf-8",
            Arc::new("tcptrace: metrics at /metrics\n".into()),
            false,
        ),
        Request::NotFound => (
            "404 Not Found",
            "text/plain",
            Arc::new("not found\n".into()),
            false,
        ),
        Request::BadMethod => (
            "405 Method Not Allowed",
            "text/plain",
            Arc::new("GET or HEAD only\n".into()),
            false,
        ),
        Request::Bad => (
            "400 Bad Request",
            "text/plain",
            Arc::new("bad request\n".into()),
            false,
        ),
    };
    respond(&mut stream, status, ctype, body.as_bytes(), head_only).await
}

/// Reads up to the end of the request head; `None` when it exceeds [`MAX_REQUEST`].
async fn read_head(stream: &mut TcpStream) -> io::Result<Option<String>> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    loop {
        if let Some(end) = find_end(&buf[..len]) {
            return Ok(Some(String::from_utf8_lossy(&buf[..end]).into_owned()));
        }
        if len == buf.len() {
            return Ok(None);
        }
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "client closed before its request ended",
            ));
        }
        len += n;
    }
}

/// Where the request head ends (after its blank line).
fn find_end(b: &[u8]) -> Option<usize> {
    b.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| b.windows(2).position(|w| w == b"\n\n").map(|p| p + 2))
}

#[derive(Debug, PartialEq, Eq)]
enum Request {
    Metrics { format: Format, head_only: bool },
    Root,
    NotFound,
    BadMethod,
    Bad,
}

fn parse(head: &str) -> Request {
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let (Some(method), Some(target), Some(version)) = (first.next(), first.next(), first.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Request::Bad;
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Request::BadMethod,
    };
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => {
            let accept = lines
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("accept"))
                .map_or("", |(_, v)| v);
            Request::Metrics {
                format: Format::accepting(accept),
                head_only,
            }
        }
        "/" => Request::Root,
        _ => Request::NotFound,
    }
}

/// The latest publication in `format`: rendered once per publication, on the blocking pool.
async fn render(shared: &Shared, format: Format) -> io::Result<Arc<String>> {
    let tally = shared.snapshots.borrow().clone();
    let generation = tally.generation;
    let cached = |c: &Vec<Rendered>| {
        c.iter()
            .find(|r| r.generation == generation && r.format == format)
            .map(|r| r.body.clone())
    };
    if let Some(body) = cached(&lock(&shared.cache)) {
        return Ok(body);
    }
    let start = shared.start_secs;
    let body = tokio::task::spawn_blocking(move || {
        Arc::new(expose::render(tally, Process::read(start), format))
    })
    .await
    .map_err(io::Error::other)?;
    let mut cache = lock(&shared.cache);
    cache.retain(|r| r.generation == generation && r.format != format);
    cache.push(Rendered {
        generation,
        format,
        body: body.clone(),
    });
    Ok(body)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        if !head_only {
            stream.write_all(body).await?;
        }
        stream.shutdown().await
    };
    timeout(RESPONSE_TIMEOUT, write)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client did not take the answer"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_parsed() {
        let m = |accept: &str| {
            parse(&format!(
                "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: {accept}\r\n\r\n"
            ))
        };
        assert_eq!(
            m("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
            Request::Metrics {
                format: Format::OpenMetrics,
                head_only: false
            }
        );
        assert_eq!(
            m("*/*"),
            Request::Metrics {
                format: Format::Text,
                head_only: false
            }
        );
        assert_eq!(
            parse("HEAD /metrics HTTP/1.0\n\n"),
            Request::Metrics {
                format: Format::Text,
                head_only: true
            }
        );
        assert_eq!(parse("GET / HTTP/1.1\r\n\r\n"), Request::Root);
        assert_eq!(parse("GET /x HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(parse("POST /metrics HTTP/1.1\r\n\r\n"), Request::BadMethod);
        assert_eq!(parse("\x16\x03\x01 garbage"), Request::Bad);
        assert_eq!(parse("GET /metrics SPDY/3\r\n\r\n"), Request::Bad);
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(find_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
