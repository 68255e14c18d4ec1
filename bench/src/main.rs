//! The benchmark: `cargo run --release -p bench -- [--requests N] [--concurrency C] ...`.
//!
//! On the real local PostgreSQL, Redis and RabbitMQ (its own database, key prefix and AMQP
//! prefix) and the CCP fake of the tests (which verifies every signature and answers after
//! `--provider-latency-ms`), one run measures, in order:
//! 1. the bare pipeline: the handler's Redis, PostgreSQL and broker operations
//!    (`api::sms::request_code`) without HTTP, at the same concurrency; then the bare
//!    end-to-end bound (`bare_e2e.rs`): the same primitives as api + workers with minimal
//!    code around them;
//! 2. worker drain: one worker process at `--prefetch` on the jobs phase 1 queued;
//! 3. the api under load: an api process and `--workers` worker processes; requests/s,
//!    latency percentiles, answers by errno, end-to-end drain rate, peak RSS;
//! 4. the api at half the throughput of phase 3 (open loop): latency percentiles.
//!
//! The api and workers run as child processes of this binary (`bench serve-api`,
//! `bench serve-worker`: the same library `run` the real binaries call), so their RSS is
//! their own. It is not a test: it prints figures, and `scripts/test` runs no part of it.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use api::{AppState, Attempt, Guard, sms};
use clap::{Parser, Subcommand};
use redis::AsyncCommands;
use shared::domain::{ImageCodeId, Mobile};
use tests::ccp_fake::CcpFake;

mod bare_e2e;
mod client;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Parser)]
#[command(about = "smscode benchmark: api, bare pipeline, worker drain, RSS")]
struct Args {
    /// Requests per phase.
    #[arg(long, default_value_t = 4000)]
    requests: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long the provider fake takes to answer.
    #[arg(long, default_value_t = 50)]
    provider_latency_ms: u64,
    /// Worker processes in phase 3.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// WORKER_PREFETCH of every worker.
    #[arg(long, default_value_t = 64)]
    prefetch: u16,
    /// AMQP_QUEUE_TYPE: quorum (the default) or classic.
    #[arg(long, default_value = "quorum")]
    queue_type: String,
    #[command(subcommand)]
    role: Option<Role>,
}

#[derive(Subcommand)]
enum Role {
    /// (internal) Run the api from the environment.
    ServeApi,
    /// (internal) Run a worker from the environment.
    ServeWorker,
}

#[tokio::main]
async fn main() -> Result {
    let args = Args::parse();
    match args.role {
        Some(Role::ServeApi) => {
            let settings = shared::Settings::from_env()?;
            let listener = tokio::net::TcpListener::bind(settings.api_addr).await?;
            api::run(settings, listener, shared::shutdown::on_signal()).await?;
            Ok(())
        }
        Some(Role::ServeWorker) => {
            worker::run(shared::Settings::from_env()?, shared::shutdown::on_signal()).await?;
            Ok(())
        }
        None => orchestrate(args).await,
    }
}

/// Latency figures of one phase.
struct Figures {
    rate: f64,
    latencies: Vec<Duration>,
    errnos: BTreeMap<i64, usize>,
}

impl Figures {
    fn percentile(&self, p: f64) -> Duration {
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(i).copied().unwrap_or_default()
    }

    fn line(&self, name: &str) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "{name:<34} {:>8.0} req/s   p50 {:>6.2} ms  p90 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms   errno {:?}",
            self.rate,
            ms(self.percentile(0.5)),
            ms(self.percentile(0.9)),
            ms(self.percentile(0.99)),
            ms(self.latencies.last().copied().unwrap_or_default()),
            self.errnos
        )
    }
}

fn figures(results: Vec<(i64, Duration)>, elapsed: Duration) -> Figures {
    let mut errnos = BTreeMap::new();
    let mut latencies = Vec::with_capacity(results.len());
    for (errno, latency) in results {
        *errnos.entry(errno).or_insert(0) += 1;
        latencies.push(latency);
    }
    latencies.sort();
    Figures { rate: latencies.len() as f64 / elapsed.as_secs_f64(), latencies, errnos }
}

/// Runs `n` calls of `call(i)` with `concurrency` in flight (closed loop).
async fn closed_loop<F, Fut>(n: usize, concurrency: usize, call: F) -> Figures
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = i64> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (call, next) = (call.clone(), next.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return out;
                    }
                    let t = Instant::now();
                    let errno = call(i).await;
                    out.push((errno, t.elapsed()));
                }
            })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for task in tasks {
        results.extend(task.await.unwrap_or_default());
    }
    figures(results, started.elapsed())
}

/// Runs `n` calls of `call(i)` started at a fixed `rate` per second (open loop).
async fn open_loop<F, Fut>(n: usize, rate: f64, call: F) -> Figures
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = i64> + Send + 'static,
{
    let call = Arc::new(call);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1.0)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        ticker.tick().await;
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            (call(i).await, t.elapsed())
        }));
    }
    let mut results = Vec::with_capacity(n);
    for task in tasks {
        if let Ok(r) = task.await {
            results.push(r);
        }
    }
    figures(results, started.elapsed())
}

fn mobile(phase: usize, i: usize) -> String {
    // 13x: valid mainland mobile ranges for every phase used (131, 133, 134, 135).
    format!("13{phase}{i:08}")
}

/// Stores `n` captchas `bench<phase>_<i>` = `ABCD`, pipelined.
async fn seed_captchas(redis: &mut redis::aio::ConnectionManager, prefix: &str, phase: usize, n: usize) -> Result {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.set_ex(format!("{prefix}ImageCode_bench{phase}_{i}"), "ABCD", 600).ignore();
        }
        let () = pipe.query_async(redis).await?;
    }
    Ok(())
}

/// Waits until the fake has received `total` messages; returns when the last arrived.
async fn drained(fake: &CcpFake, total: usize, limit: Duration) -> Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        if fake.received_count() >= total {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            return Err(format!("only {} of {total} delivered after {limit:?}", fake.received_count()).into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn free_addr() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn spawn_self(role: &str, env: &HashMap<String, String>, extra: &[(&str, String)]) -> Result<Child> {
    Ok(Command::new(std::env::current_exe()?)
        .arg(role)
        .env_clear()
        .envs(env)
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?)
}

/// CPU time a process has used so far (user + system), in seconds (Linux clock ticks of
/// 1/100 s).
fn cpu_secs(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

/// Peak resident set size of a process (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}

async fn wait_http(client: &reqwest::Client, url: &str) -> Result {
    for _ in 0..200 {
        if client.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{url} never became ready").into())
}

async fn orchestrate(args: Args) -> Result {
    let n = args.requests;
    let latency = Duration::from_millis(args.provider_latency_ms);
    let fake = CcpFake::start().await?;
    fake.set_latency(latency);
    let env = tests::TestEnv::new(&[
        ("SMS_HOURLY_LIMIT_PER_IP", "1000000000"),
        // Every phase's numbers share a few prefixes and none is verified: the fraud guard
        // counts them (its cost is measured) but must not block the run.
        ("FRAUD_MIN_SENDS", "1000000000"),
        ("WORKER_PREFETCH", &args.prefetch.to_string()),
        ("AMQP_QUEUE_TYPE", &args.queue_type),
        ("LOG_FORMAT", "text"),
        ("RUST_LOG", "warn"),
    ])
    .await?;
    let mut vars = env.vars.clone();
    vars.extend(fake.env());
    let prefix = env.settings.redis_key_prefix.clone();
    let mut redis = redis::aio::ConnectionManager::new(redis::Client::open(tests::redis_url())?).await?;
    println!(
        "smscode benchmark: {n} requests per phase, {} in flight, provider latency {} ms, {} queues, {} cores",
        args.concurrency,
        args.provider_latency_ms,
        args.queue_type,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // 1. The bare pipeline, in process.
    let mut settings = env.settings.clone();
    if let Ok(provider) = shared::Settings::from_vars(|k| vars.get(k).cloned()) {
        settings.providers = provider.providers;
    }
    let state = AppState::connect(Arc::new(settings)).await?;
    state.publisher.connect().await?;
    seed_captchas(&mut redis, &prefix, 1, n).await?;
    let pipeline = {
        let state = state.clone();
        closed_loop(n, args.concurrency, move |i| {
            let state = state.clone();
            async move {
                let (Ok(m), Ok(id)) = (
                    Mobile::parse(&mobile(1, i), &state.settings.mobile_pattern),
                    ImageCodeId::parse(&format!("bench1_{i}")),
                ) else {
                    return -1;
                };
                let Ok(guard) = Guard::of(&state.settings, &m) else {
                    return -1;
                };
                let attempt =
                    Attempt { mobile: &m, image_code_id: &id, typed: "abcd", ip: [127, 0, 0, 1].into(), guard: &guard };
                match sms::request_code(&state, &attempt, None).await {
                    Ok(()) => 0,
                    Err(e) => i64::from(e.errno().code()),
                }
            }
        })
        .await
    };
    println!("{}", pipeline.line("1. bare pipeline (no HTTP)"));
    let shape = bare_e2e::Shape {
        n,
        concurrency: args.concurrency,
        consumers: args.workers,
        prefetch: args.prefetch,
        queue_type: args.queue_type.clone(),
    };
    let provider = match state.settings.providers.first() {
        Some(p) => providers::build(p, state.settings.sms_provider_timeout)?,
        None => return Err("no provider configured".into()),
    };
    let e2e_bound = bare_e2e::run(&shape, &state.settings, provider, &fake, &mut redis).await?;
    println!(
        "   bare end to end, {} consumers × prefetch {}  {e2e_bound:>6.0} msg/s   (GETDEL, SELECT, SET EX, publish+confirm; consume, GET, provider call, INSERT, ack)",
        args.workers, args.prefetch
    );

    // 2. One worker drains the jobs phase 1 queued, timed from its first SMS to its last (its
    //    start-up, migrations included, is not a delivery rate).
    let worker = spawn_self("serve-worker", &vars, &[("WORKER_METRICS_ADDR", free_addr()?.to_string())])?;
    let first = drained(&fake, n + 1, Duration::from_secs(120)).await?;
    let cpu_first = cpu_secs(worker.id());
    let done = drained(&fake, 2 * n, Duration::from_secs(600)).await?;
    let drain_rate = n.saturating_sub(1).max(1) as f64 / (done - first).as_secs_f64();
    let ceiling = f64::from(args.prefetch) / latency.as_secs_f64();
    println!(
        "2. one worker, prefetch {:<3}         {drain_rate:>8.0} msg/s   (P / latency = {ceiling:.0}; ratio {:.2})",
        args.prefetch,
        drain_rate / ceiling
    );
    println!(
        "   its CPU: {:.0} µs per message",
        (cpu_secs(worker.id()) - cpu_first) / n.saturating_sub(1).max(1) as f64 * 1e6
    );
    stop(worker);

    // 3. The api: alone first (the ratio to the bare pipeline), then with `workers` workers
    //    delivering at the same time (end to end).
    let pipeline_db = state.db.clone();
    drop(state);
    pipeline_db.close().await;
    let api_addr = free_addr()?;
    let api = spawn_self("serve-api", &vars, &[("API_ADDR", api_addr.to_string())])?;
    let client = reqwest::Client::new();
    let base = format!("http://{api_addr}");
    wait_http(&client, &format!("{base}/readyz")).await?;
    let pool = Arc::new(client::Pool::new(api_addr));
    let post = |pool: Arc<client::Pool>, phase: usize| {
        move |i: usize| {
            let pool = pool.clone();
            async move {
                let body = format!(
                    r#"{{"mobile":"{}","image_code":"abcd","image_code_id":"bench{phase}_{i}"}}"#,
                    mobile(phase, i)
                );
                pool.post_json("/passport/sms_code", body).await
            }
        }
    };
    seed_captchas(&mut redis, &prefix, 3, n).await?;
    let cpu_before = cpu_secs(api.id());
    let alone = closed_loop(n, args.concurrency, post(pool.clone(), 3)).await;
    let api_cpu_us = (cpu_secs(api.id()) - cpu_before) / n as f64 * 1e6;
    println!("{}", alone.line("3. api alone, closed loop"));
    println!("   its CPU: {api_cpu_us:.0} µs per request");

    // 4. Half of the api's throughput, open loop, still without workers.
    seed_captchas(&mut redis, &prefix, 4, n / 2).await?;
    let half = open_loop(n / 2, alone.rate / 2.0, post(pool.clone(), 4)).await;
    println!("{}", half.line("4. api at half that rate, open loop"));
    let mut workers = Vec::new();
    let started = Instant::now();
    for _ in 0..args.workers {
        workers.push(spawn_self("serve-worker", &vars, &[("WORKER_METRICS_ADDR", free_addr()?.to_string())])?);
    }
    let done = drained(&fake, 3 * n + n / 2, Duration::from_secs(600)).await?;
    println!(
        "   {} workers drain the {} jobs phases 3 and 4 queued: {:.0} msg/s (from process start)",
        args.workers,
        n + n / 2,
        (n + n / 2) as f64 / (done - started).as_secs_f64()
    );

    seed_captchas(&mut redis, &prefix, 5, n).await?;
    let load_started = Instant::now();
    let loaded = closed_loop(n, args.concurrency, post(pool.clone(), 5)).await;
    println!("{}", loaded.line("   api while workers deliver"));
    let done = drained(&fake, 4 * n + n / 2, Duration::from_secs(600)).await?;
    let e2e = n as f64 / (done - load_started).as_secs_f64();
    let e2e_ceiling = args.workers as f64 * f64::from(args.prefetch) / latency.as_secs_f64();
    println!(
        "   end to end (first request → last SMS) {e2e:>6.0} msg/s   ({} × {} / latency = {e2e_ceiling:.0})",
        args.workers, args.prefetch,
    );
    let extra = fake.received_count().saturating_sub(4 * n + n / 2);

    let (api_rss, worker_rss) =
        (peak_rss_mib(api.id()), workers.iter().map(|w| peak_rss_mib(w.id())).collect::<Vec<_>>());
    println!(
        "   peak RSS: api {api_rss:.1} MiB, workers {} MiB; protocol violations {}; duplicate deliveries {extra}",
        worker_rss.iter().map(|r| format!("{r:.1}")).collect::<Vec<_>>().join(", "),
        fake.violations().len()
    );
    println!("ratios:");
    println!("   api / bare pipeline                {:>5.2}   (target ≥ 0.80)", alone.rate / pipeline.rate);
    println!(
        "   end to end / bare end to end       {:>5.2}   (target ≥ 0.80; {e2e:.0} msg/s, target ≥ 1200)",
        e2e / e2e_bound
    );
    println!("   one worker / prefetch ÷ latency    {:>5.2}   (target ≥ 0.90)", drain_rate / ceiling);
    println!(
        "   open-loop p99 at half the peak     {:>5.2} ms (target ≤ 10)",
        half.percentile(0.99).as_secs_f64() * 1000.0
    );
    stop(api);
    for w in workers {
        stop(w);
    }

    let db = sqlx::PgPool::connect(&env.settings.database_url).await?;
    let retried: Vec<(Option<String>, i64)> = sqlx::query_as(
        "select last_error, count(*) from sms_deliveries where attempts > 1 group by 1 order by 2 desc limit 5",
    )
    .fetch_all(&db)
    .await?;
    println!("   deliveries that needed a retry: {retried:?}");
    db.close().await;
    let violations = fake.violations().len();

    // Leave nothing behind.
    let mut admin =
        <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{}/postgres", tests::pg_server_url())).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("drop database if exists {} with (force)", env.db_name)))
        .execute(&mut admin)
        .await?;
    let keys: Vec<String> = redis.keys(format!("{prefix}*")).await?;
    for chunk in keys.chunks(1000) {
        let () = redis.del(chunk).await?;
    }
    let connection = lapin::Connection::connect(&tests::amqp_url(), lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let topology = shared::queue::Topology::new(&env.settings);
    for queue in topology.queues() {
        let _ = channel.queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default()).await;
    }
    for exchange in [topology.exchange().to_owned(), topology.dead_letter_exchange()] {
        let _ = channel.exchange_delete(exchange.into(), lapin::options::ExchangeDeleteOptions::default()).await;
    }

    // A run where anything was refused, lost, doubled or mis-signed is a failed run.
    let all_ok = [&pipeline, &alone, &half, &loaded].iter().all(|f| f.errnos.keys().all(|e| *e == 0));
    if !all_ok || violations > 0 || extra > 0 {
        return Err("some requests were not answered errno 0, or deliveries were doubled or mis-signed".into());
    }
    Ok(())
}
