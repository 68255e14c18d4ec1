//! Node-loss drills on the several-host layout that `scripts/cluster` starts on loopback (3
//! RabbitMQ nodes, Redis + replica + 3 Sentinels, PgBouncer in transaction mode): 2 api and 2
//! workers under a steady sms_code load while a node is killed with SIGKILL. They take nodes
//! away from a cluster every drill shares, so `scripts/test` runs them one at a time after the
//! rest of the suite. Without a running cluster (no `$SMSCODE_CLUSTER_DIR/env`) each drill
//! prints a note and passes as skipped.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use redis::AsyncCommands;
use serde_json::{Value, json};
use shared::{Settings, cache::Redis};
use tests::{TestApp, TestEnv, TestResult, pg_server_url, random_mobile, wait_until};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// DEPENDENCY_TIMEOUT_MS in the drills: the longest a request may wait on one dependency.
const DEPENDENCY_TIMEOUT: Duration = Duration::from_secs(2);

/// The most one answer may take: the sms_code path waits on the broker once, and on Redis
/// and PostgreSQL for a few quick calls; this leaves room for a busy two-core machine.
const MAX_ANSWER: Duration = Duration::from_millis(2 * 2000 + 1000);

/// Concurrent clients of the steady load, each one request at a time with a short pause.
const CLIENTS: usize = 4;

/// The settings `scripts/cluster` wrote, or `None` (with a note) when no cluster runs.
struct Cluster {
    dir: PathBuf,
    vars: HashMap<String, String>,
}

impl Cluster {
    fn find(drill: &str) -> Option<Self> {
        let dir = PathBuf::from(std::env::var("SMSCODE_CLUSTER_DIR").unwrap_or_else(|_| "/tmp/smscode-cluster".into()));
        let Ok(text) = std::fs::read_to_string(dir.join("env")) else {
            return Self::skip(drill, "no cluster running (start one with `scripts/cluster start`)");
        };
        let vars = text
            .lines()
            .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
            .collect();
        let cluster = Self { dir, vars };
        match cluster.script(&["status"]) {
            Ok(_) => Some(cluster),
            Err(e) => Self::skip(drill, &format!("the cluster is not healthy: {e}")),
        }
    }

    /// No cluster: a note, or, when the test command started one for the drills
    /// (`SMSCODE_CLUSTER_REQUIRED=1`), a failure: a drill that silently skips proves nothing.
    fn skip(drill: &str, why: &str) -> Option<Self> {
        if std::env::var("SMSCODE_CLUSTER_REQUIRED").is_ok_and(|v| v == "1") {
            panic!("{drill}: {why}, and SMSCODE_CLUSTER_REQUIRED=1");
        }
        eprintln!("note: {drill} skipped: {why}");
        None
    }

    fn var(&self, name: &str) -> TestResult<&str> {
        self.vars.get(name).map(String::as_str).ok_or_else(|| format!("{name} missing from the cluster's env").into())
    }

    /// Runs `scripts/cluster` with `args`, returning what it printed.
    fn script(&self, args: &[&str]) -> TestResult<String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/cluster");
        let output = Command::new(path).args(args).env("SMSCODE_CLUSTER_DIR", &self.dir).output()?;
        if !output.status.success() {
            return Err(format!(
                "scripts/cluster {args:?}: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        Ok(String::from_utf8(output.stdout)?.trim().to_owned())
    }

    /// The same, off the async runtime's worker threads (starting a RabbitMQ node takes a
    /// while, and the load must go on meanwhile).
    async fn script_async(self: &Arc<Self>, args: &[&str]) -> TestResult<String> {
        let (cluster, args) = (self.clone(), args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>());
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cluster.script(&args).map_err(|e| e.to_string())
        })
        .await?
        .map_err(Into::into)
    }
}

/// 2 api and 2 workers on the cluster, all in this process, sharing one test database that
/// they reach through PgBouncer (migrations go straight to PostgreSQL).
struct Deployment {
    apps: Vec<TestApp>,
    /// The deployment's Redis, followed through the Sentinels as the api does.
    redis: Redis,
    settings: Settings,
}

impl Deployment {
    async fn start(cluster: &Cluster) -> TestResult<Self> {
        let limits = [
            ("SMS_HOURLY_LIMIT_PER_IP", "1000000"),
            ("IMAGE_CODE_HOURLY_LIMIT_PER_IP", "1000000"),
            ("DEPENDENCY_TIMEOUT_MS", "2000"),
            ("WORKER_PREFETCH", "16"),
        ];
        let mut env = TestEnv::new(&limits).await?;
        let pgbouncer = cluster.var("SMSCODE_CLUSTER_PGBOUNCER_PORT")?;
        for (name, value) in [
            ("DATABASE_URL", format!("postgres://postgres@127.0.0.1:{pgbouncer}/{}", env.db_name)),
            ("DATABASE_MIGRATION_URL", format!("{}/{}", pg_server_url(), env.db_name)),
            ("DATABASE_PREPARED_STATEMENTS", "false".into()),
            ("AMQP_URL", cluster.var("AMQP_URL")?.to_owned()),
            ("REDIS_URL", cluster.var("REDIS_URL")?.to_owned()),
        ] {
            env.vars.insert(name.into(), value);
        }
        env.settings = Settings::from_vars(|name| env.vars.get(name).cloned())?;
        let settings = env.settings.clone();
        let redis = shared::cache::connect(&settings)?;
        let twin = TestEnv {
            id: env.id.clone(),
            settings: settings.clone(),
            db_name: env.db_name.clone(),
            vars: env.vars.clone(),
        };
        let mut apps = vec![TestApp::spawn(env).await?, TestApp::spawn(twin).await?];
        for _ in 0..2 {
            apps[0].spawn_worker();
        }
        let deployment = Self { apps, redis, settings };
        deployment.wait_ready().await?;
        Ok(deployment)
    }

    /// Waits until both api answer `/readyz` 200 and one code request goes through.
    async fn wait_ready(&self) -> TestResult {
        for app in &self.apps {
            wait_until(Duration::from_secs(60), "the api to be ready", || async {
                let r = app.http.get(format!("{}/readyz", app.base)).send().await.ok()?;
                r.status().is_success().then_some(())
            })
            .await?;
        }
        Ok(())
    }

    async fn stop(self) -> TestResult {
        // The harness removes queues from the shared broker; this deployment's live on the
        // cluster, where many runs would otherwise pile them up.
        let topology = shared::queue::Topology::new(&self.settings);
        let remove = async {
            let connection = shared::queue::connect(&self.settings, "drill clean-up").await?;
            let channel = connection.create_channel().await?;
            for queue in topology.queues() {
                channel.queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default()).await?;
            }
            for exchange in [topology.exchange().to_owned(), topology.dead_letter_exchange()] {
                channel.exchange_delete(exchange.into(), lapin::options::ExchangeDeleteOptions::default()).await?;
            }
            connection.close(200, "done".into()).await
        };
        if let Ok(Err(e)) | Err(e) = tokio::time::timeout(Duration::from_secs(20), remove)
            .await
            .map_err(|_| "timed out".to_owned())
            .map(|r| r.map_err(|e| e.to_string()))
        {
            eprintln!("note: the drill's queues were not removed from the cluster: {e}");
        }
        let mut apps = self.apps;
        // The first app's clean-up drops the shared database; the second only stops.
        let second = apps.pop();
        if let Some(second) = second {
            second.cleanup().await?;
        }
        for app in apps {
            app.cleanup().await?;
        }
        Ok(())
    }
}

/// One answered sms_code request (or the captcha step before it, when that failed).
#[derive(Debug, Clone)]
struct Answer {
    mobile: String,
    /// When the request was sent and when it was answered, from the drill's start.
    sent: Duration,
    answered: Duration,
    status: u16,
    errno: i64,
}

impl Answer {
    fn took(&self) -> Duration {
        self.answered.saturating_sub(self.sent)
    }
}

/// A steady load: `CLIENTS` clients, each fetching a captcha and asking for a code, one
/// request at a time with 50 ms between, alternating between the api, until `stop`.
async fn load(deployment: &Deployment, start: Instant, stop: CancellationToken) -> Vec<Answer> {
    let bases: Vec<String> = deployment.apps.iter().map(|a| a.base.clone()).collect();
    let prefix = deployment.settings.redis_key_prefix.clone();
    let clients = (0..CLIENTS).map(|client| {
        let (bases, prefix, stop, redis) = (bases.clone(), prefix.clone(), stop.clone(), deployment.redis.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().ok()?;
            let mut answers = Vec::new();
            let mut n = client;
            while !stop.is_cancelled() {
                let base = &bases[n % bases.len()];
                n += 1;
                answers.push(one_request(&http, base, &prefix, redis.clone(), start).await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Some(answers)
        })
    });
    let mut all = Vec::new();
    for client in clients.collect::<Vec<_>>() {
        if let Ok(Some(answers)) = client.await {
            all.extend(answers);
        }
    }
    all.sort_by_key(|a| a.sent);
    all
}

async fn one_request(http: &reqwest::Client, base: &str, prefix: &str, mut redis: Redis, start: Instant) -> Answer {
    let mobile = random_mobile();
    let sent = start.elapsed();
    let answer =
        |status: u16, errno: i64| Answer { mobile: mobile.clone(), sent, answered: start.elapsed(), status, errno };
    let id = Uuid::new_v4().to_string();
    let captcha = match http.get(format!("{base}/passport/image_code?image_code_id={id}")).send().await {
        Ok(r) => r,
        Err(_) => return answer(0, -1),
    };
    let status = captcha.status().as_u16();
    let is_png = captcha.headers().get("content-type").and_then(|v| v.to_str().ok()) == Some("image/png");
    if !is_png {
        let errno = captcha.json::<Value>().await.ok().and_then(|b| b["errno"].as_i64()).unwrap_or(-1);
        return answer(status, errno);
    }
    // The text, read as the api would (through the Sentinels); a harness read that fails
    // during a failover counts as the api's own 4001 would.
    let text: Option<String> =
        match tokio::time::timeout(DEPENDENCY_TIMEOUT, redis.get(format!("{prefix}ImageCode_{id}"))).await {
            Ok(Ok(text)) => text,
            _ => return answer(200, 4001),
        };
    let Some(text) = text else { return answer(200, 4002) };
    let body = json!({"mobile": mobile, "image_code": text, "image_code_id": id});
    match http.post(format!("{base}/passport/sms_code")).json(&body).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let errno = r.json::<Value>().await.ok().and_then(|b| b["errno"].as_i64()).unwrap_or(-1);
            answer(status, errno)
        }
        Err(_) => answer(0, -1),
    }
}

/// How long after `event` answers kept failing: from the event to the answer of the last
/// failed request sent after it (zero when none failed).
fn recovery(answers: &[Answer], event: Duration, until: Duration) -> Duration {
    answers
        .iter()
        .filter(|a| a.sent >= event && a.sent < until && a.errno != 0)
        .map(|a| a.answered.saturating_sub(event))
        .max()
        .unwrap_or_default()
}

/// No 5xx, nothing but `allowed` errnos, no answer slower than [`MAX_ANSWER`].
fn check_answers(answers: &[Answer], allowed: &[i64]) {
    assert!(answers.len() > 20, "the load ran: {} answers", answers.len());
    for a in answers {
        assert!(a.status < 500 && a.status != 0, "{a:?}: no 5xx and no dropped connection");
        assert!(allowed.contains(&a.errno), "{a:?}: errno in {allowed:?}");
        assert!(a.took() < MAX_ANSWER, "{a:?}: answered within {MAX_ANSWER:?}");
    }
}

/// Every mobile answered 0 gets exactly one SMS; none answered otherwise gets one.
async fn check_deliveries(app: &TestApp, answers: &[Answer]) -> TestResult {
    let accepted: Vec<String> = answers.iter().filter(|a| a.errno == 0).map(|a| a.mobile.clone()).collect();
    let refused: Vec<String> =
        answers.iter().filter(|a| a.errno != 0 && a.errno != 4002).map(|a| a.mobile.clone()).collect();
    let delivered = wait_until(Duration::from_secs(90), "an SMS for every code request answered 0", || async {
        let sent: i64 = sqlx::query_scalar(
            "select count(distinct mobile) from sms_deliveries where status = 'sent' and mobile = any($1)",
        )
        .bind(&accepted)
        .fetch_one(&app.db)
        .await
        .ok()?;
        (sent == accepted.len() as i64).then_some(())
    })
    .await;
    if let Err(e) = delivered {
        let rows: Vec<(String, String)> =
            sqlx::query_as("select mobile, status from sms_deliveries where mobile = any($1)")
                .bind(&accepted)
                .fetch_all(&app.db)
                .await?;
        let status: HashMap<String, String> = rows.into_iter().collect();
        let undelivered: Vec<String> = answers
            .iter()
            .filter(|a| a.errno == 0 && status.get(&a.mobile).map(String::as_str) != Some("sent"))
            .map(|a| format!("sent at {:.2?}: {:?}", a.sent, status.get(&a.mobile)))
            .collect();
        return Err(format!("{e}: of {} accepted, not sent: {undelivered:?}", accepted.len()).into());
    }
    let duplicates: Vec<(String, i64)> = sqlx::query_as(
        r#"
        select d.mobile, count(*)
        from sms_attempts a
        join sms_deliveries d on d.id = a.delivery_id
        where a.outcome = 'sent'
          and d.mobile = any($1)
        group by d.mobile
        having count(*) > 1
        "#,
    )
    .bind(&accepted)
    .fetch_all(&app.db)
    .await?;
    assert!(duplicates.is_empty(), "a job id is sent once: {duplicates:?}");
    let sent_anyway: i64 =
        sqlx::query_scalar("select count(*) from sms_deliveries where status = 'sent' and mobile = any($1)")
            .bind(&refused)
            .fetch_one(&app.db)
            .await?;
    assert_eq!(sent_anyway, 0, "a request not answered 0 sends no SMS");
    Ok(())
}

/// Counts of each errno, for the report.
fn tally(answers: &[Answer]) -> String {
    let mut counts: std::collections::BTreeMap<i64, usize> = Default::default();
    for a in answers {
        *counts.entry(a.errno).or_default() += 1;
    }
    counts.iter().map(|(errno, n)| format!("{errno}×{n}")).collect::<Vec<_>>().join(" ")
}

/// Sleeps until `at` after `start`.
async fn until(start: Instant, at: Duration) {
    tokio::time::sleep(at.saturating_sub(start.elapsed())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_the_rabbitmq_node_in_use_twice_loses_no_accepted_code() -> TestResult {
    let Some(cluster) = Cluster::find("the RabbitMQ node-loss drill") else { return Ok(()) };
    let cluster = Arc::new(cluster);
    let deployment = Deployment::start(&cluster).await?;
    let prefix = deployment.settings.amqp_prefix.clone();
    let start = Instant::now();
    let stop = CancellationToken::new();
    let drill = async {
        // The load stops when the drill ends, whichever way it ends.
        let _stop = stop.clone().drop_guard();
        let mut events = Vec::new();
        until(start, Duration::from_secs(3)).await;
        for round in 0..2 {
            let node = cluster.script_async(&["busiest-rabbit", &prefix]).await?;
            if node.is_empty() {
                return Err::<_, Box<dyn std::error::Error + Send + Sync>>(
                    "no connection of this deployment found".into(),
                );
            }
            let killed_at = start.elapsed();
            let killed_wall = chrono::Utc::now();
            cluster.script_async(&["kill", &node]).await?;
            eprintln!("drill: killed {node} (the node most of the deployment used) at {killed_at:.1?}");
            until(start, killed_at + Duration::from_secs(8)).await;
            let revived = Instant::now();
            cluster.script_async(&["revive", &node]).await?;
            eprintln!("drill: {node} back after {:.1?}", revived.elapsed());
            events.push((round, node, killed_at, start.elapsed(), killed_wall));
            // Some load with all three nodes before the next loss.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        stop.cancel();
        Ok(events)
    };
    let (answers, events) = tokio::join!(load(&deployment, start, stop.clone()), drill);
    stop.cancel();
    let events = events?;

    eprintln!("drill: {} answers: {}", answers.len(), tally(&answers));
    for (round, node, killed_at, back_at, _) in &events {
        let window: Vec<&Answer> = answers.iter().filter(|a| a.sent >= *killed_at && a.sent < *back_at).collect();
        let slowest = window.iter().map(|a| a.took()).max().unwrap_or_default();
        eprintln!(
            "drill: RabbitMQ loss {} ({node}): api answers failed for {:.2?} after the kill \
             ({} of {} requests not 0), slowest answer {slowest:.2?}",
            round + 1,
            recovery(&answers, *killed_at, *back_at),
            window.iter().filter(|a| a.errno != 0).count(),
            window.len(),
        );
    }
    // Two nodes of three stay up throughout: the api always has a node, and 4301 is only for
    // when it has none. A publish caught by the loss is published again on another node
    // within the dependency timeout, so every answer is 0 (never a 4301, a 5xx or a hang).
    check_answers(&answers, &[0]);
    let started = Instant::now();
    check_deliveries(&deployment.apps[0], &answers).await?;
    eprintln!("drill: every accepted code delivered, each once ({:.1?} after the load stopped)", started.elapsed());
    // How long the workers paused: the longest gap between two sends around each kill.
    let sent_at: Vec<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("select sent_at from sms_deliveries where sent_at is not null order by sent_at")
            .fetch_all(&deployment.apps[0].db)
            .await?;
    for (round, node, _, _, killed_wall) in &events {
        let window = |t: &chrono::DateTime<chrono::Utc>| {
            *t >= *killed_wall - chrono::TimeDelta::seconds(1) && *t <= *killed_wall + chrono::TimeDelta::seconds(8)
        };
        let around: Vec<&chrono::DateTime<chrono::Utc>> = sent_at.iter().filter(|t| window(t)).collect();
        let pause = around.windows(2).map(|w| *w[1] - *w[0]).max().unwrap_or_default();
        eprintln!(
            "drill: RabbitMQ loss {} ({node}): longest pause between two SMS sent around the kill: {} ms",
            round + 1,
            pause.num_milliseconds()
        );
    }
    deployment.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_sentinel_failover_under_load_answers_0_again_within_10_s() -> TestResult {
    let Some(cluster) = Cluster::find("the Redis failover drill") else { return Ok(()) };
    let cluster = Arc::new(cluster);
    let deployment = Deployment::start(&cluster).await?;
    let start = Instant::now();
    let stop = CancellationToken::new();
    let drill = async {
        // The load stops when the drill ends, whichever way it ends.
        let _stop = stop.clone().drop_guard();
        until(start, Duration::from_secs(3)).await;
        let primary = cluster.script_async(&["redis-primary"]).await?;
        let killed_at = start.elapsed();
        cluster.script_async(&["kill", &primary]).await?;
        eprintln!("drill: killed the Redis primary {primary} at {killed_at:.1?}");
        until(start, killed_at + Duration::from_secs(14)).await;
        stop.cancel();
        let new_primary = cluster.script_async(&["redis-primary"]).await?;
        // The old primary comes back as a replica of the new one, for the drills after this.
        cluster.script_async(&["revive", &primary]).await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((killed_at, primary, new_primary))
    };
    let (answers, outcome) = tokio::join!(load(&deployment, start, stop.clone()), drill);
    stop.cancel();
    let (killed_at, primary, new_primary) = outcome?;
    assert_ne!(primary, new_primary, "the Sentinels promoted the replica");
    let took = recovery(&answers, killed_at, Duration::MAX);
    eprintln!(
        "drill: {} answers: {}; Redis failover {primary} → {new_primary}: answers failed for {took:.2?} after the kill, slowest answer {:.2?}",
        answers.len(),
        tally(&answers),
        answers.iter().map(Answer::took).max().unwrap_or_default()
    );
    // While no primary answers, Redis steps fail with 4001 (and a captcha lost with the old
    // primary with 4002); never a 5xx, never a hang.
    check_answers(&answers, &[0, 4001, 4002]);
    assert!(took <= Duration::from_secs(10), "answers are 0 again within 10 s of the failover (took {took:?})");
    assert!(answers.iter().any(|a| a.sent >= killed_at + took && a.errno == 0), "codes go out on the new primary");
    check_deliveries(&deployment.apps[0], &answers).await?;
    deployment.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_signup_flow_works_through_pgbouncer_in_transaction_mode() -> TestResult {
    let Some(cluster) = Cluster::find("the PgBouncer drill") else { return Ok(()) };
    let deployment = Deployment::start(&cluster).await?;
    let mut redis = deployment.redis.clone();
    let prefix = deployment.settings.redis_key_prefix.clone();
    // Several signups at once, over both api: their statements share PgBouncer's server
    // connections, which is where session state would leak from one to another.
    let signups = (0..12).map(|i| {
        let app = &deployment.apps[i % 2];
        let (mut redis, prefix) = (redis.clone(), prefix.clone());
        async move {
            let mobile = random_mobile();
            let id = Uuid::new_v4().to_string();
            let png = app.http.get(format!("{}/passport/image_code?image_code_id={id}", app.base)).send().await?;
            assert_eq!(png.status(), 200);
            let text: Option<String> = redis.get(format!("{prefix}ImageCode_{id}")).await?;
            let text = text.ok_or("captcha stored")?;
            let (_, body) = app
                .post_json("/passport/sms_code", &json!({"mobile": mobile, "image_code": text, "image_code_id": id}))
                .await?;
            assert_eq!(body["errno"], 0, "{body}");
            wait_until(Duration::from_secs(30), "the SMS sent", || async {
                let status: Option<String> = sqlx::query_scalar("select status from sms_deliveries where mobile = $1")
                    .bind(&mobile)
                    .fetch_optional(&app.db)
                    .await
                    .ok()?;
                (status.as_deref() == Some("sent")).then_some(())
            })
            .await?;
            let code: Option<String> = redis.get(format!("{prefix}SMS_{mobile}")).await?;
            let code = code.ok_or("live code")?;
            let (_, body) = app
                .post_json(
                    "/passport/register",
                    &json!({"mobile": mobile, "sms_code": code, "password": "correct horse 1"}),
                )
                .await?;
            assert_eq!(body["errno"], 0, "{body}");
            let (_, again) = app
                .post_json(
                    "/passport/register",
                    &json!({"mobile": mobile, "sms_code": code, "password": "correct horse 1"}),
                )
                .await?;
            assert_ne!(again["errno"], 0, "a code is single-use: {again}");
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(mobile)
        }
    });
    let started = Instant::now();
    let mobiles: Vec<String> = futures_util::future::try_join_all(signups).await?;
    let users: i64 = sqlx::query_scalar("select count(*) from users where mobile = any($1)")
        .bind(&mobiles)
        .fetch_one(&deployment.apps[0].db)
        .await?;
    assert_eq!(users, 12, "every signup created its user");
    eprintln!("drill: 12 signups through PgBouncer (transaction pooling) in {:.1?}", started.elapsed());
    let _: () = redis.del(format!("{prefix}nothing")).await?;
    deployment.stop().await
}
