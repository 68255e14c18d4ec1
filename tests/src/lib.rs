//! The test harness: every test gets its own database, Redis key prefix and AMQP prefix on
//! the real local servers, spawns the real api (and worker) on port 0, and cleans up after
//! itself. Server addresses come from `TEST_DATABASE_URL` (a server URL without database),
//! `TEST_REDIS_URL` and `TEST_AMQP_URL`, defaulting to the local services.

pub mod aliyun_fake;
pub mod ccp_fake;
pub mod receipt_push;
pub mod tencent_fake;
pub mod twilio_fake;

use std::{collections::HashMap, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use lapin::{
    Channel, Connection, ConnectionProperties,
    options::{BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions},
};
use redis::{AsyncCommands, aio::ConnectionManager};
use serde_json::{Value, json};
use shared::{Settings, keys::Keys, queue::Topology};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Boxed error for test plumbing: a failing step fails the test with its message.
pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The PostgreSQL server tests create their databases on.
pub fn pg_server_url() -> String {
    env_or("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432")
}

/// The Redis server.
pub fn redis_url() -> String {
    env_or("TEST_REDIS_URL", "redis://127.0.0.1:6379")
}

/// The RabbitMQ server.
pub fn amqp_url() -> String {
    env_or("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
}

/// A closed local port: a dependency that is down.
pub const DEAD_PORT: u16 = 1;

/// Polls `check` until it returns `Some`, or fails after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> TestResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// One test's isolated slice of the real servers, and the settings that point at it.
pub struct TestEnv {
    /// Unique id of this test run.
    pub id: String,
    /// Settings for the api and worker under test.
    pub settings: Settings,
    /// The name of this test's database.
    pub db_name: String,
    /// The configuration as environment variables (for processes).
    pub vars: HashMap<String, String>,
}

impl TestEnv {
    /// A fresh database, key prefix and AMQP prefix; `overrides` are environment-style
    /// configuration values on top of the defaults.
    pub async fn new(overrides: &[(&str, &str)]) -> TestResult<Self> {
        let id = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let db_name = format!("smscode_test_{id}");
        let mut admin = PgConnection::connect(&format!("{}/postgres", pg_server_url())).await?;
        // The name is ours: 12 hex characters after a fixed prefix.
        sqlx::query(AssertSqlSafe(format!("create database {db_name}"))).execute(&mut admin).await?;
        admin.close().await?;

        let mut vars: HashMap<String, String> = HashMap::from([
            ("DATABASE_URL".into(), format!("{}/{db_name}", pg_server_url())),
            ("REDIS_URL".into(), redis_url()),
            ("REDIS_KEY_PREFIX".into(), format!("t_{id}:")),
            ("AMQP_URL".into(), amqp_url()),
            ("AMQP_PREFIX".into(), format!("t_{id}")),
            ("API_ADDR".into(), "127.0.0.1:0".into()),
            ("WORKER_METRICS_ADDR".into(), "127.0.0.1:0".into()),
            ("DEPENDENCY_TIMEOUT_MS".into(), "2000".into()),
        ]);
        for (k, v) in overrides {
            vars.insert((*k).into(), (*v).into());
        }
        let settings = Settings::from_vars(|name| vars.get(name).cloned())?;
        Ok(Self { id, settings, db_name, vars })
    }
}

/// A running api on a random port, plus handles on the servers behind it.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The settings it runs with.
    pub settings: Settings,
    /// An HTTP client.
    pub http: reqwest::Client,
    /// Redis, for reading what the api stored (uses the real server even when the app's
    /// own `REDIS_URL` points at a dead port).
    pub redis: ConnectionManager,
    /// This test's database.
    pub db: PgPool,
    /// This test's keys.
    pub keys: Keys,
    /// Names of this test's queues.
    pub topology: Topology,
    /// The configuration as environment variables (for processes).
    pub vars: HashMap<String, String>,
    db_name: String,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    processes: Vec<tokio::process::Child>,
}

impl TestApp {
    /// Spawns the api of `env` and waits until it answers `/healthz`.
    pub async fn spawn(env: TestEnv) -> TestResult<Self> {
        if std::env::var_os("RUST_LOG").is_some() {
            shared::telemetry::init(shared::config::LogFormat::Text);
        }
        let TestEnv { settings, db_name, vars, .. } = env;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let api = tokio::spawn({
            let (settings, shutdown) = (settings.clone(), shutdown.clone());
            async move {
                if let Err(e) = api::run(settings, listener, shutdown).await {
                    eprintln!("api stopped: {e}");
                }
            }
        });
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        let base = format!("http://{addr}");
        wait_until(Duration::from_secs(20), "the api to answer /healthz", || {
            let (http, url) = (http.clone(), format!("{base}/healthz"));
            async move { http.get(url).send().await.ok().filter(|r| r.status().is_success()) }
        })
        .await?;
        // Generous timeouts: the suite runs many tests at once on two cores, and a slow answer
        // to the test's own reads must not fail a test (the product's timeouts are under test).
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_connection_timeout(Some(Duration::from_secs(10)));
        let redis = ConnectionManager::new_with_config(redis::Client::open(redis_url())?, config).await?;
        let db = PgPool::connect(&format!("{}/{db_name}", pg_server_url())).await?;
        Ok(Self {
            base,
            keys: Keys::from(&settings),
            topology: Topology::new(&settings),
            settings,
            http,
            redis,
            db,
            vars,
            db_name,
            shutdown,
            tasks: vec![api],
            processes: Vec::new(),
        })
    }

    /// A new environment and its api.
    pub async fn start(overrides: &[(&str, &str)]) -> TestResult<Self> {
        Self::spawn(TestEnv::new(overrides).await?).await
    }

    /// Starts a worker on the same settings, with the `log` provider.
    pub fn spawn_worker(&mut self) -> SocketAddr {
        self.spawn_worker_with(self.settings.clone(), Arc::new(providers::log::LogProvider))
    }

    /// Starts a worker with its own settings and provider; returns the address of its
    /// `/healthz`, `/readyz` and `/metrics`.
    pub fn spawn_worker_with(&mut self, settings: Settings, provider: Arc<dyn providers::SmsProvider>) -> SocketAddr {
        let shutdown = self.shutdown.child_token();
        let (listener, addr) = bind_local();
        self.tasks.push(tokio::spawn(async move {
            if let Err(e) = worker::run_with_provider(settings, provider, listener, shutdown).await {
                eprintln!("worker stopped: {e}");
            }
        }));
        addr
    }

    /// Starts a worker with its own settings, its providers built from `SMS_PROVIDERS` as in
    /// production (point their base URLs at fakes); returns the address of its endpoints.
    pub fn spawn_worker_from(&mut self, settings: Settings) -> SocketAddr {
        let shutdown = self.shutdown.child_token();
        let (listener, addr) = bind_local();
        self.tasks.push(tokio::spawn(async move {
            if let Err(e) = worker::serve(settings, listener, shutdown).await {
                eprintln!("worker stopped: {e}");
            }
        }));
        addr
    }

    /// Starts the worker binary `bin` (`CARGO_BIN_EXE_worker-under-test`, known only to the
    /// integration tests) as a separate OS process with this test's configuration plus
    /// `extra`. Returns its pid; the process is killed at clean-up if still running.
    pub fn spawn_worker_process(&mut self, bin: &str, extra: &[(String, String)]) -> TestResult<u32> {
        self.spawn_process(bin, extra, None)
    }

    /// Starts `bin` (a `CARGO_BIN_EXE_*-under-test`) with this test's configuration plus
    /// `extra`, its stdout and stderr going to `log` when given. Returns its pid.
    pub fn spawn_process(
        &mut self,
        bin: &str,
        extra: &[(String, String)],
        log: Option<&std::path::Path>,
    ) -> TestResult<u32> {
        let mut command = tokio::process::Command::new(bin);
        command.env_clear().envs(&self.vars).kill_on_drop(true);
        if let Some(filter) = std::env::var_os("RUST_LOG") {
            command.env("RUST_LOG", filter);
        }
        command.envs(extra.iter().cloned());
        if let Some(path) = log {
            let file = std::fs::File::create(path)?;
            command.stdout(file.try_clone()?).stderr(file);
        }
        let child = command.spawn()?;
        let pid = child.id().ok_or("worker exited at once")?;
        self.processes.push(child);
        Ok(pid)
    }

    /// Waits for the worker process `pid` to exit and returns its exit code.
    pub async fn wait_worker_process(&mut self, pid: u32, timeout: Duration) -> TestResult<Option<i32>> {
        let child = self.processes.iter_mut().find(|c| c.id() == Some(pid)).ok_or("no such worker process")?;
        let status = tokio::time::timeout(timeout, child.wait()).await??;
        Ok(status.code())
    }

    /// `GET /passport/image_code` for `id`, returning the captcha's text as stored in Redis.
    pub async fn captcha(&self, id: &str) -> TestResult<String> {
        let response = self.http.get(format!("{}/passport/image_code?image_code_id={id}", self.base)).send().await?;
        if response.headers().get("content-type").and_then(|v| v.to_str().ok()) != Some("image/png") {
            return Err(format!("no captcha for {id}: {}", response.text().await?).into());
        }
        let mut redis = self.redis.clone();
        let text: Option<String> = redis.get(format!("{}ImageCode_{id}", self.keys.prefix())).await?;
        text.ok_or_else(|| "captcha text not stored".into())
    }

    /// `n` fresh captchas, a few fetched at a time, each with a new mobile:
    /// `(mobile, image_code_id, text)`, ready for a burst of sms_code requests.
    pub async fn captchas(&self, n: usize) -> TestResult<Vec<(String, String, String)>> {
        use futures_util::StreamExt;
        let fetched: Vec<TestResult<(String, String, String)>> = futures_util::stream::iter((0..n).map(|_| async {
            let (mobile, id) = (random_mobile(), Uuid::new_v4().to_string());
            let text = self.captcha(&id).await?;
            Ok((mobile, id, text))
        }))
        .buffer_unordered(8)
        .collect()
        .await;
        fetched.into_iter().collect()
    }

    /// `POST /passport/sms_code` with `body`: (HTTP status, JSON answer).
    pub async fn post_json(&self, path: &str, body: &Value) -> TestResult<(u16, Value)> {
        let response = self.http.post(format!("{}{path}", self.base)).json(body).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await?))
    }

    /// A fresh captcha, then `POST /passport/sms_code` for `mobile` with its right text.
    pub async fn request_code(&self, mobile: &str) -> TestResult<(u16, Value)> {
        let id = Uuid::new_v4().to_string();
        let text = self.captcha(&id).await?;
        self.post_json("/passport/sms_code", &json!({"mobile": mobile, "image_code": text, "image_code_id": id})).await
    }

    /// The live SMS code of `mobile` in Redis.
    pub async fn sms_code_of(&self, mobile: &str) -> TestResult<Option<String>> {
        let mut redis = self.redis.clone();
        Ok(redis.get(format!("{}SMS_{mobile}", self.keys.prefix())).await?)
    }

    /// A channel on the real broker, for inspecting this test's queues.
    /// Gives up after 20 s, so that a broker that stopped answering fails the test instead of
    /// hanging it.
    pub async fn amqp(&self) -> TestResult<(Connection, Channel)> {
        let connect = async {
            let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
            let channel = connection.create_channel().await?;
            Ok::<_, lapin::Error>((connection, channel))
        };
        Ok(tokio::time::timeout(Duration::from_secs(20), connect).await.map_err(|_| "the broker did not answer")??)
    }

    /// Takes one message off this test's send queue, if any.
    pub async fn take_queued(&self) -> TestResult<Option<lapin::message::Delivery>> {
        let (connection, channel) = self.amqp().await?;
        let got = channel.basic_get(self.topology.send_queue().into(), BasicGetOptions { no_ack: true }).await?;
        let _ = connection.close(200, "done".into()).await;
        Ok(got.map(|m| m.delivery))
    }

    /// Stops the app and workers and removes this test's database, queues and keys.
    pub async fn cleanup(mut self) -> TestResult {
        self.shutdown.cancel();
        for mut child in std::mem::take(&mut self.processes) {
            let _ = child.kill().await;
        }
        for task in std::mem::take(&mut self.tasks) {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
        self.db.close().await;
        let mut admin = PgConnection::connect(&format!("{}/postgres", pg_server_url())).await?;
        sqlx::query(AssertSqlSafe(format!("drop database if exists {} with (force)", self.db_name)))
            .execute(&mut admin)
            .await?;
        if let Ok((connection, channel)) = self.amqp().await {
            let remove = async {
                for queue in self.topology.queues() {
                    let _ = channel.queue_delete(queue.into(), QueueDeleteOptions::default()).await;
                }
                for exchange in [self.topology.exchange().to_owned(), self.topology.dead_letter_exchange()] {
                    let _ = channel.exchange_delete(exchange.into(), ExchangeDeleteOptions::default()).await;
                }
                let _ = connection.close(200, "done".into()).await;
            };
            // Best effort, bounded: scripts/test removes what a killed run leaves behind.
            let _ = tokio::time::timeout(Duration::from_secs(20), remove).await;
        }
        let mut redis = self.redis.clone();
        let keys: Vec<String> = redis.keys(format!("{}*", self.keys.prefix())).await?;
        if !keys.is_empty() {
            let _: () = redis.del(keys).await?;
        }
        Ok(())
    }
}

/// A listener on a random local port, for a worker's endpoints.
fn bind_local() -> (tokio::net::TcpListener, SocketAddr) {
    let bound = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| {
        l.set_nonblocking(true)?;
        let addr = l.local_addr()?;
        Ok((tokio::net::TcpListener::from_std(l)?, addr))
    });
    match bound {
        Ok(bound) => bound,
        Err(e) => panic!("cannot bind a local port for the worker: {e}"),
    }
}

/// A random mobile that matches the default pattern, so parallel tests never collide.
pub fn random_mobile() -> String {
    let n = Uuid::new_v4().as_u128() % 100_000_000;
    format!("139{n:08}")
}
