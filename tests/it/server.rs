//! The api's HTTP server limits: a client that trickles its headers is cut off, and at most
//! `API_MAX_CONNECTIONS` connections are served at once.

use std::time::Duration;

use tests::{TestApp, TestResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_client_that_trickles_its_headers_is_cut_off() -> TestResult {
    let app = TestApp::start(&[("API_HEADER_TIMEOUT_SECS", "1")]).await?;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await?;
    // Headers begun, never finished.
    stream.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes()).await?;
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server closes a connection whose headers never finish");
    app.cleanup().await
}

/// Sends `GET /healthz` on `stream` (keeping the connection open) and waits up to `within`
/// for the status line.
async fn health_on(stream: &mut tokio::net::TcpStream, addr: &str, within: Duration) -> TestResult<bool> {
    stream.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(within, stream.read(&mut buf)).await {
        Ok(Ok(n)) => Ok(buf[..n].starts_with(b"HTTP/1.1 200")),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Ok(false),
    }
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_is_free() -> TestResult {
    let app = TestApp::start(&[("API_MAX_CONNECTIONS", "2"), ("API_HEADER_TIMEOUT_SECS", "60")]).await?;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // Open connections, each proven served, until one is not: the cap (the harness's own
    // kept-alive client connection may hold one of the two slots).
    let mut served = Vec::new();
    let mut waiting = None;
    for _ in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await?;
        if health_on(&mut stream, &addr, Duration::from_millis(800)).await? {
            served.push(stream);
        } else {
            waiting = Some(stream);
            break;
        }
    }
    let mut waiting = waiting.ok_or("every connection was served: no cap")?;
    assert!(served.len() <= 2, "{} connections served at once with a cap of 2", served.len() + 1);

    // A slot frees up: the waiting connection is accepted and its request answered.
    served.clear();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), waiting.read(&mut buf)).await??;
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    app.cleanup().await
}
