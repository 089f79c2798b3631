//! The health/metrics listener under abuse: a slow-loris client is cut off, idle connections
//! are closed, and connections beyond the cap neither pile up nor stop the listener from
//! serving once they are gone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use scanreport_operator::http::{Limits, router, serve_with_limits};
use scanreport_operator::metrics::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

const LIMITS: Limits = Limits {
    header_read_timeout: Duration::from_millis(500),
    idle_timeout: Duration::from_millis(1500),
    max_connections: 4,
};

struct Server {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
    _ready: watch::Sender<bool>,
}

async fn start() -> Server {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let (ready_tx, ready_rx) = watch::channel(true);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let serving = serve_with_limits(
        addr,
        router(ready_rx, Arc::new(Metrics::default())),
        async move {
            let _ = stop_rx.await;
        },
        LIMITS,
    )
    .await
    .unwrap();
    tokio::spawn(serving);
    Server {
        addr,
        _stop: stop_tx,
        _ready: ready_tx,
    }
}

/// Reads until the server closes the connection; `Err` if that takes longer than `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Result<Vec<u8>, Vec<u8>> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Err(seen),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

async fn healthz(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let body = closed_within(&mut stream, Duration::from_secs(5))
        .await
        .unwrap();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test]
async fn a_slow_loris_client_is_cut_off_after_the_header_timeout() {
    let server = start().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // One header byte every 100 ms: the connection is never idle, the headers never end.
    let mut cut_off = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stream.write_all(b"X").await.is_err() {
            cut_off = true;
            break;
        }
        let mut buf = [0u8; 256];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await
        {
            let _ = n;
            cut_off = true;
            break;
        }
    }
    assert!(cut_off, "the slow client was still connected after 4s");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(healthz(server.addr).await.contains("200 OK"));
}

/// A client that pipelines requests and never reads the answers, on a tiny receive buffer:
/// the server's writes stall, so only the idle timeout can free the connection.
async fn stuck_reader(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(64);
    for _ in 0..2000 {
        match tokio::time::timeout(Duration::from_millis(100), stream.write_all(&request)).await {
            Ok(Ok(())) => {}
            // The server stopped reading: it is stuck writing to us.
            _ => break,
        }
    }
    stream
}

#[tokio::test]
async fn clients_that_stop_reading_cannot_hold_every_connection_slot() {
    let server = start().await;
    let mut stuck = Vec::new();
    for _ in 0..LIMITS.max_connections {
        stuck.push(stuck_reader(server.addr).await);
    }
    // Every slot is taken by a stalled connection: a new one is closed at once.
    let mut probe = TcpStream::connect(server.addr).await.unwrap();
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_within(&mut probe, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));
    // After the idle timeout the stalled connections are gone and the listener serves again.
    tokio::time::sleep(LIMITS.idle_timeout + Duration::from_millis(500)).await;
    assert!(healthz(server.addr).await.contains("200 OK"));
    drop(stuck);
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_and_the_listener_recovers() {
    let server = start().await;
    // Far more silent connections than the cap: those beyond it are closed at once.
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut closed_at_once = 0;
    for stream in &mut held {
        if closed_within(stream, Duration::from_millis(20))
            .await
            .is_ok()
        {
            closed_at_once += 1;
        }
    }
    assert!(
        closed_at_once >= 36,
        "only {closed_at_once} of 40 closed at once"
    );
    // The ones within the cap send nothing and are cut off by the header timeout; then the
    // listener serves again.
    tokio::time::sleep(LIMITS.header_read_timeout + Duration::from_millis(300)).await;
    assert!(healthz(server.addr).await.contains("200 OK"));
    drop(held);
}
