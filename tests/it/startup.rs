//! Start-up: an address in use or a PostgreSQL that never answers stops the process with an
//! error naming the variable to fix, instead of a bare OS error or a hang; port 0 works.

use std::{net::SocketAddr, time::Duration};

use serde_json::Value;
use shared::{Settings, StartError};
use tests::{TestApp, TestResult, wait_until};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

const API_BIN: &str = env!("CARGO_BIN_EXE_api-under-test");
const WORKER_BIN: &str = env!("CARGO_BIN_EXE_worker-under-test");

/// A local port that something else holds.
fn taken_port() -> TestResult<(std::net::TcpListener, SocketAddr)> {
    let holder = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = holder.local_addr()?;
    Ok((holder, addr))
}

#[tokio::test]
async fn a_worker_metrics_addr_in_use_stops_the_worker_naming_the_variable_and_the_address() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let (_holder, addr) = taken_port()?;
    let mut settings = app.settings.clone();
    settings.worker_metrics_addr = addr;
    let result = tokio::time::timeout(Duration::from_secs(10), worker::run(settings, CancellationToken::new())).await?;
    let err = result.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("WORKER_METRICS_ADDR") && err.contains(&addr.to_string()), "{err}");
    assert!(err.contains("in use"), "{err}");
    app.cleanup().await
}

#[tokio::test]
async fn a_worker_on_port_0_logs_the_port_it_got_and_serves_there() -> TestResult {
    let mut app = TestApp::start(&[]).await?;
    let log = std::env::temp_dir().join(format!("smscode-worker-port0-{}.log", uuid::Uuid::new_v4()));
    let env =
        [("WORKER_METRICS_ADDR".to_owned(), "127.0.0.1:0".to_owned()), ("LOG_FORMAT".to_owned(), "json".to_owned())];
    app.spawn_process(WORKER_BIN, &env, Some(&log))?;
    let addr: SocketAddr = wait_until(Duration::from_secs(20), "the worker to log its endpoints' address", || async {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|line| line["message"] == "worker endpoints listening")
            .and_then(|line| line["addr"].as_str()?.parse().ok())
    })
    .await?;
    assert_ne!(addr.port(), 0);
    let health = app.http.get(format!("http://{addr}/healthz")).send().await?;
    assert!(health.status().is_success());
    app.cleanup().await?;
    let _ = std::fs::remove_file(&log);
    Ok(())
}

#[tokio::test]
async fn an_api_addr_in_use_stops_the_api_naming_the_variable_and_the_address() -> TestResult {
    let mut app = TestApp::start(&[]).await?;
    let (_holder, addr) = taken_port()?;
    let log = std::env::temp_dir().join(format!("smscode-api-addr-{}.log", uuid::Uuid::new_v4()));
    let pid = app.spawn_process(API_BIN, &[("API_ADDR".to_owned(), addr.to_string())], Some(&log))?;
    let code = app.wait_worker_process(pid, Duration::from_secs(10)).await?;
    let output = std::fs::read_to_string(&log)?;
    assert_ne!(code, Some(0), "{output}");
    assert!(output.contains("API_ADDR") && output.contains(&addr.to_string()), "{output}");
    app.cleanup().await?;
    let _ = std::fs::remove_file(&log);
    Ok(())
}

/// A "PostgreSQL" that accepts connections and never says a word (a hung server, or a
/// firewall that lets the handshake through).
async fn silent_server() -> TestResult<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    Ok((addr, task))
}

#[tokio::test]
async fn a_postgresql_that_never_answers_stops_start_up_naming_database_url_instead_of_hanging() -> TestResult {
    let (addr, silent) = silent_server().await?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    // Nothing but PostgreSQL is reached (it comes first), but the rest is this test's own all
    // the same.
    let vars = [
        ("DATABASE_URL", format!("postgres://postgres@{addr}/smscode_test_{}", &id[..12])),
        ("REDIS_KEY_PREFIX", format!("t_{}:", &id[..12])),
        ("AMQP_PREFIX", format!("t_{}", &id[..12])),
        ("WORKER_METRICS_ADDR", "127.0.0.1:0".to_owned()),
        ("DEPENDENCY_TIMEOUT_MS", "500".to_owned()),
    ];
    let settings = Settings::from_vars(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()))?;

    let started = tokio::time::Instant::now();
    let worker = tokio::time::timeout(Duration::from_secs(10), worker::run(settings.clone(), CancellationToken::new()))
        .await
        .map_err(|_| "the worker hung on a PostgreSQL that never answers")?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let api = tokio::time::timeout(Duration::from_secs(10), api::run(settings, listener, CancellationToken::new()))
        .await
        .map_err(|_| "the api hung on a PostgreSQL that never answers")?;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    for result in [worker, api] {
        let err = result.err();
        assert!(matches!(err, Some(StartError::Database(_))), "{err:?}");
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.starts_with("DATABASE_URL: ") && message.contains("DEPENDENCY_TIMEOUT_MS"), "{message}");
    }
    silent.abort();
    Ok(())
}
