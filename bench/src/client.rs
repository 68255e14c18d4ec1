//! The load generator's HTTP client: one keep-alive HTTP/1.1 connection per task in flight,
//! driven by hyper's connection API with the request body prebuilt. A general-purpose
//! client (pooling, redirects, JSON values) costs CPU that the api under test would not get
//! on a two-core machine; this keeps the generator's share small, as a real load balancer's
//! would be.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;

use crate::Result;

/// One connection to the api.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

/// The `errno` of an answer.
#[derive(serde::Deserialize)]
struct Answer {
    errno: i64,
}

impl Connection {
    /// Opens a connection to `addr`.
    pub async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Self { sender, host: addr.to_string() })
    }

    /// POSTs `body` (JSON) to `path`; returns the answer's errno, or -1 when there is none.
    pub async fn post_json(&mut self, path: &str, body: String) -> Result<i64> {
        self.sender.ready().await?;
        let request = Request::post(path)
            .header("host", self.host.as_str())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let answer = self.sender.send_request(request).await?;
        let body = answer.into_body().collect().await?.to_bytes();
        Ok(serde_json::from_slice::<Answer>(&body).map_or(-1, |a| a.errno))
    }
}

/// Connections to one api, reused across requests: a request takes an idle one or opens a
/// new one, and puts it back when its answer is read.
pub struct Pool {
    addr: SocketAddr,
    idle: std::sync::Mutex<Vec<Connection>>,
}

impl Pool {
    /// An empty pool for `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, idle: std::sync::Mutex::new(Vec::new()) }
    }

    /// POSTs `body` to `path`; the errno, or -1 for a failed request or an answer without one.
    pub async fn post_json(&self, path: &str, body: String) -> i64 {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut connection = match idle {
            Some(c) => c,
            None => match Connection::open(self.addr).await {
                Ok(c) => c,
                Err(_) => return -1,
            },
        };
        match connection.post_json(path, body).await {
            Ok(errno) => {
                if let Ok(mut idle) = self.idle.lock() {
                    idle.push(connection);
                }
                errno
            }
            Err(_) => -1,
        }
    }
}
