//! The edges of a request: which client IP a limit counts (proxy hops, IPv6 /64), the captcha
//! budget per IP, 429 for the register lock-out, bodies that are too large or not declared
//! JSON, the OpenAPI document's captcha and `Retry-After`, and the Redis eviction check.

use std::time::Duration;

use redis::AsyncCommands;
use serde_json::{Value, json};
use tests::{TestApp, TestResult, random_mobile, wait_until};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use uuid::Uuid;

const API_BIN: &str = env!("CARGO_BIN_EXE_api-under-test");

fn errno(body: &Value) -> i64 {
    body["errno"].as_i64().unwrap_or(-1)
}

/// `POST /passport/sms_code` for a fresh mobile with a right captcha, through a proxy that
/// sent `forwarded` as `X-Forwarded-For`: (HTTP status, answer).
async fn sms_code_via(app: &TestApp, forwarded: &str) -> TestResult<(u16, Value)> {
    let id = Uuid::new_v4().to_string();
    let text = app.captcha(&id).await?;
    let response = app
        .http
        .post(format!("{}/passport/sms_code", app.base))
        .header("x-forwarded-for", forwarded)
        .json(&json!({"mobile": random_mobile(), "image_code": text, "image_code_id": id}))
        .send()
        .await?;
    Ok((response.status().as_u16(), response.json().await?))
}

/// The client buckets charged so far by sms_code (`SMSIpHourly_<bucket>_<hour>`).
async fn charged_buckets(app: &TestApp) -> TestResult<Vec<String>> {
    let mut redis = app.redis.clone();
    let keys: Vec<String> = redis.keys(format!("{}SMSIpHourly_*", app.keys.prefix())).await?;
    let mut buckets: Vec<String> = keys
        .iter()
        .filter_map(|k| k.strip_prefix(&format!("{}SMSIpHourly_", app.keys.prefix()))?.rsplit_once('_'))
        .map(|(bucket, _hour)| bucket.to_owned())
        .collect();
    buckets.sort();
    Ok(buckets)
}

#[tokio::test]
async fn the_client_ip_is_the_entry_our_proxy_added_never_the_leftmost() -> TestResult {
    let app = TestApp::start(&[("SMS_HOURLY_LIMIT_PER_IP", "1"), ("TRUST_PROXY_HEADERS", "true")]).await?;
    // The client writes whatever it likes on the left; our proxy appends its peer.
    let (status, body) = sms_code_via(&app, "198.51.100.1, 203.0.113.9").await?;
    assert_eq!((status, errno(&body)), (200, 0), "{body}");
    assert_eq!(charged_buckets(&app).await?, ["203.0.113.9"]);
    // A new forged address does not buy a new budget...
    let (status, body) = sms_code_via(&app, "198.51.100.2, 203.0.113.9").await?;
    assert_eq!((status, errno(&body)), (429, 4201), "{body}");
    // ...nor can a client spend someone else's by writing their address.
    let (status, body) = sms_code_via(&app, "203.0.113.9, 203.0.113.10").await?;
    assert_eq!((status, errno(&body)), (200, 0), "{body}");
    app.cleanup().await?;

    // Two proxies of ours: the client is the second entry from the right.
    let app = TestApp::start(&[("TRUST_PROXY_HEADERS", "true"), ("TRUSTED_PROXY_HOPS", "2")]).await?;
    let (_, body) = sms_code_via(&app, "198.51.100.1, 203.0.113.9, 10.0.0.2").await?;
    assert_eq!(errno(&body), 0, "{body}");
    assert_eq!(charged_buckets(&app).await?, ["203.0.113.9"]);
    // Fewer entries than hops: the header did not pass both proxies; the peer counts.
    let (_, body) = sms_code_via(&app, "203.0.113.77").await?;
    assert_eq!(errno(&body), 0, "{body}");
    assert_eq!(charged_buckets(&app).await?, ["127.0.0.1", "203.0.113.9"]);
    app.cleanup().await
}

#[tokio::test]
async fn ipv6_clients_share_one_budget_per_64() -> TestResult {
    let app = TestApp::start(&[("SMS_HOURLY_LIMIT_PER_IP", "1"), ("TRUST_PROXY_HEADERS", "true")]).await?;
    let (_, body) = sms_code_via(&app, "2001:db8:1:2::1").await?;
    assert_eq!(errno(&body), 0, "{body}");
    // Another address of the same /64 is the same client.
    let (status, body) = sms_code_via(&app, "2001:db8:1:2:ffff:ffff:ffff:fffe").await?;
    assert_eq!((status, errno(&body)), (429, 4201), "{body}");
    let (_, body) = sms_code_via(&app, "2001:db8:1:3::1").await?;
    assert_eq!(errno(&body), 0, "another /64: {body}");
    assert_eq!(charged_buckets(&app).await?, ["2001:db8:1:2::/64", "2001:db8:1:3::/64"]);
    app.cleanup().await
}

#[tokio::test]
async fn captchas_are_limited_per_client_ip_with_429_and_retry_after() -> TestResult {
    let app = TestApp::start(&[("IMAGE_CODE_HOURLY_LIMIT_PER_IP", "2"), ("TRUST_PROXY_HEADERS", "true")]).await?;
    let get = |id: &str, client: &str| {
        app.http
            .get(format!("{}/passport/image_code?image_code_id={id}", app.base))
            .header("x-forwarded-for", client)
            .send()
    };
    for id in ["cap1", "cap2"] {
        let response = get(id, "203.0.113.5").await?;
        assert_eq!(response.headers()["content-type"], "image/png", "{id}");
    }
    let response = get("cap3", "203.0.113.5").await?;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"].to_str()?.parse()?;
    assert!((1..=3600).contains(&retry_after), "Retry-After {retry_after}");
    let body: Value = response.json().await?;
    assert_eq!(errno(&body), 4201, "{body}");

    let mut redis = app.redis.clone();
    let stored: Option<String> = redis.get(format!("{}ImageCode_cap3", app.keys.prefix())).await?;
    assert_eq!(stored, None, "nothing drawn or stored past the limit");
    // The count and its expiry are set together: a counter never outlives its hour.
    let counters: Vec<String> = redis.keys(format!("{}ImageCodeIpHourly_203.0.113.5_*", app.keys.prefix())).await?;
    assert_eq!(counters.len(), 1, "{counters:?}");
    let ttl_ms: i64 = redis.pttl(&counters[0]).await?;
    assert!((1..=3_600_000).contains(&ttl_ms), "pttl {ttl_ms}");
    // Another client still gets its captcha.
    let response = get("cap4", "203.0.113.6").await?;
    assert_eq!(response.headers()["content-type"], "image/png");
    app.cleanup().await
}

#[tokio::test]
async fn the_register_lock_out_is_429_with_retry_after() -> TestResult {
    let app = TestApp::start(&[("SMS_RESEND_INTERVAL_SECS", "45")]).await?;
    let mobile = random_mobile();
    let mut redis = app.redis.clone();
    let () = redis.set_ex(format!("{}SMS_{mobile}", app.keys.prefix()), "111111", 300).await?;
    let url = format!("{}/passport/register", app.base);
    let wrong = json!({"mobile": mobile, "sms_code": "222222", "password": "12345678"});
    for attempt in 1..5 {
        let response = app.http.post(&url).json(&wrong).send().await?;
        assert_eq!(response.status(), 200, "attempt {attempt}");
    }
    let response = app.http.post(&url).json(&wrong).send().await?;
    assert_eq!(response.status(), 429);
    // The code is gone; a new one can be asked once the resend cooldown is over.
    assert_eq!(response.headers()["retry-after"], "45");
    let body: Value = response.json().await?;
    assert_eq!(errno(&body), 4201, "{body}");
    assert_eq!(body["errmsg"], "验证码错误次数过多，请重新获取");
    app.cleanup().await
}

/// Reads one HTTP/1.1 response (head and a `Content-Length` body) from `stream`.
async fn read_response(stream: &mut TcpStream) -> TestResult<(u16, String, Value)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or("no content-length")?;
                if buf.len() >= end + 4 + length {
                    let status: u16 = head.get(9..12).ok_or("short status line")?.parse()?;
                    let body = serde_json::from_slice(&buf[end + 4..end + 4 + length])?;
                    return Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, head, body));
                }
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(format!("connection closed after {} bytes", buf.len()).into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await?
}

/// Sends `head`, then `chunks` of `chunk` paced 20 ms apart as a slow client does, then reads
/// the answer. Every write must succeed: the server still reads what the client sends.
async fn send_slowly_then_read(app: &TestApp, head: &str, chunk: &[u8], chunks: usize) -> TestResult<(u16, Value)> {
    let mut stream = TcpStream::connect(app.base.trim_start_matches("http://")).await?;
    stream.write_all(head.as_bytes()).await?;
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    for i in 0..chunks {
        pace.tick().await;
        stream.write_all(chunk).await.map_err(|e| format!("write {i} of {chunks} failed: {e}"))?;
    }
    let (status, head, body) = read_response(&mut stream).await?;
    assert!(head.contains("connection: close"), "{head}");
    Ok((status, body))
}

#[tokio::test]
async fn an_oversize_body_is_answered_while_the_client_is_still_sending() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let head = "POST /passport/sms_code HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n\
                Content-Length: 10000000\r\n\r\n";
    // 50 × 8 KiB over a second: 25 times the limit, well under the declared length.
    let (status, body) = send_slowly_then_read(&app, head, &[b' '; 8192], 50).await?;
    assert_eq!((status, errno(&body)), (400, 4103), "{body}");
    app.cleanup().await
}

#[tokio::test]
async fn an_oversize_chunked_body_is_answered_while_the_client_is_still_sending() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let head = "POST /passport/register HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    let mut chunk = format!("{:x}\r\n", 8192).into_bytes();
    chunk.extend_from_slice(&[b' '; 8192]);
    chunk.extend_from_slice(b"\r\n");
    let (status, body) = send_slowly_then_read(&app, head, &chunk, 50).await?;
    assert_eq!((status, errno(&body)), (400, 4103), "{body}");
    app.cleanup().await
}

#[tokio::test]
async fn a_post_not_declared_json_gets_4103_and_changes_nothing() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let mobile = random_mobile();
    let text = app.captcha("ct1").await?;
    let body = json!({"mobile": mobile, "image_code": text, "image_code_id": "ct1"}).to_string();
    // What a cross-site form or fetch can send without a preflight, and no type at all.
    for content_type in
        [Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("multipart/form-data; boundary=x"), None]
    {
        for path in ["/passport/sms_code", "/passport/register"] {
            let mut request = app.http.post(format!("{}{path}", app.base)).body(body.clone());
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            let response = request.send().await?;
            let status = response.status().as_u16();
            let answer: Value = response.json().await?;
            assert_eq!((status, errno(&answer)), (400, 4103), "{path} {content_type:?}: {answer}");
        }
    }
    let mut redis = app.redis.clone();
    let kept: Option<String> = redis.get(format!("{}ImageCode_ct1", app.keys.prefix())).await?;
    assert_eq!(kept.as_deref(), Some(text.as_str()), "the captcha was not used");
    // JSON with parameters, in any case, is JSON.
    let response = app
        .http
        .post(format!("{}/passport/sms_code", app.base))
        .header("content-type", "Application/JSON; charset=utf-8")
        .body(body)
        .send()
        .await?;
    let answer: Value = response.json().await?;
    assert_eq!(errno(&answer), 0, "{answer}");
    app.cleanup().await
}

#[tokio::test]
async fn the_openapi_document_keeps_the_png_captcha_and_declares_retry_after() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let doc: Value = app.http.get(format!("{}/openapi.json", app.base)).send().await?.json().await?;
    let image = &doc["paths"]["/passport/image_code"]["get"]["responses"];
    let content = image["200"]["content"].as_object().ok_or("no 200 content")?;
    assert!(content.contains_key("image/png") && content.contains_key("application/json"), "{content:?}");
    for (path, method) in
        [("/passport/image_code", "get"), ("/passport/sms_code", "post"), ("/passport/register", "post")]
    {
        let too_many = &doc["paths"][path][method]["responses"]["429"];
        assert!(too_many["headers"]["Retry-After"].is_object(), "{path}: {too_many}");
    }
    app.cleanup().await
}

/// Runs the api binary with `extra` settings and waits until its log contains `needle`.
async fn api_logs(app: &mut TestApp, extra: &[(&str, String)], needle: &str) -> TestResult<String> {
    let dir = std::env::temp_dir().join(format!("smscode-edges-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("api.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut env: Vec<(String, String)> = extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    env.push(("API_ADDR".into(), format!("127.0.0.1:{port}")));
    env.push(("RUST_LOG".into(), "info".into()));
    app.spawn_process(API_BIN, &env, Some(&log))?;
    let base = format!("http://127.0.0.1:{port}");
    wait_until(Duration::from_secs(20), "the api process", || async {
        app.http.get(format!("{base}/healthz")).send().await.ok().filter(|r| r.status().is_success())
    })
    .await?;
    let found = wait_until(Duration::from_secs(10), needle, || async {
        std::fs::read_to_string(&log).ok().filter(|text| text.contains(needle))
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    found
}

#[tokio::test]
async fn the_api_warns_at_start_up_when_redis_may_evict_keys() -> TestResult {
    let mut app = TestApp::start(&[]).await?;
    let mut admin = redis::Client::open(tests::redis_url())?.get_multiplexed_async_connection().await?;
    let config: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("maxmemory").query_async(&mut admin).await?;
    if config.get(1).map(String::as_str) != Some("0") {
        eprintln!("skipped: this Redis has a maxmemory, so changing its eviction policy could evict other tests' keys");
        return app.cleanup().await;
    }
    // Without maxmemory no policy evicts anything: other tests running now are not affected.
    let () = redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("allkeys-lru").query_async(&mut admin).await?;
    let logged = api_logs(&mut app, &[], "maxmemory-policy noeviction").await;
    let () = redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("noeviction").query_async(&mut admin).await?;
    let logged = logged?;
    assert!(logged.contains("WARN") && logged.contains("allkeys-lru"), "{logged}");
    app.cleanup().await
}

#[tokio::test]
async fn an_api_whose_redis_refuses_config_starts_and_says_so() -> TestResult {
    let mut app = TestApp::start(&[]).await?;
    let prefix = app.keys.prefix().to_owned();
    let user = format!("smscode_edges_{}", Uuid::new_v4().simple());
    let mut admin = redis::Client::open(tests::redis_url())?.get_multiplexed_async_connection().await?;
    let rules = ["on", "nopass", "resetkeys", &format!("~{prefix}*"), "+@all", "-config"];
    let () = redis::cmd("ACL").arg("SETUSER").arg(&user).arg(&rules).query_async(&mut admin).await?;
    let url = format!("redis://{user}:x@{}", tests::redis_url().trim_start_matches("redis://"));
    let logged = api_logs(&mut app, &[("REDIS_URL", url)], "could not read Redis maxmemory-policy").await;
    let () = redis::cmd("ACL").arg("DELUSER").arg(&user).query_async(&mut admin).await?;
    assert!(!logged?.contains("set maxmemory-policy noeviction"), "a refused CONFIG is not a warning");
    app.cleanup().await
}
