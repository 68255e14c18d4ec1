//! `smsctl replay` when the broker queues the job but its confirm never comes back: the claim
//! is kept as unconfirmed, shown by `smsctl deliveries`, and a re-run does not send a second SMS.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use clap::Parser;
use lapin::{options::QueueDeclareOptions, types::FieldTable};
use providers::ccp::CcpProvider;
use serde_json::Value;
use shared::{Settings, db::deliveries::UNCONFIRMED_REPLAY};
use tests::{
    TestApp, TestResult, amqp_url,
    ccp_fake::{CcpFake, Reply},
    random_mobile, wait_until,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use uuid::Uuid;

const WORKER_BIN: &str = env!("CARGO_BIN_EXE_worker-under-test");

/// Runs smsctl with `args` against `settings`: (success, output).
async fn smsctl(settings: &Settings, args: &[&str]) -> TestResult<(bool, String)> {
    let cli = smsctl::Cli::try_parse_from(std::iter::once("smsctl").chain(args.iter().copied()))?;
    let mut out = Vec::new();
    let ok = smsctl::run(cli, settings, &mut out).await?;
    Ok((ok, String::from_utf8(out)?))
}

/// A TCP proxy in front of the real broker that forwards everything both ways until the client
/// sends a `basic.publish`, and from then on drops what the broker sends back: the message
/// reaches the queue, its confirm never reaches the publisher.
struct ConfirmSwallower {
    addr: SocketAddr,
    published: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl ConfirmSwallower {
    async fn start() -> TestResult<Self> {
        let upstream = broker_authority(&amqp_url());
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let published = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let published = published.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(broker) = TcpStream::connect(&upstream).await else { continue };
                    tokio::spawn(Self::pipe(client, broker, published.clone()));
                }
            }
        });
        Ok(Self { addr, published, task })
    }

    async fn pipe(client: TcpStream, broker: TcpStream, published: Arc<AtomicBool>) {
        let (mut from_client, mut to_client) = client.into_split();
        let (mut from_broker, mut to_broker) = broker.into_split();
        let upward = {
            let published = published.clone();
            async move {
                let mut frames = PublishSpotter::default();
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                    // Set before the publish is forwarded: the confirm can only come after.
                    if frames.feed(&buf[..n]) {
                        published.store(true, Ordering::SeqCst);
                    }
                    if to_broker.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        };
        let downward = async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = from_broker.read(&mut buf).await {
                if !published.load(Ordering::SeqCst) && to_client.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        };
        tokio::join!(upward, downward);
    }

    /// The AMQP URL of the real broker, through this proxy.
    fn url(&self) -> String {
        let url = amqp_url();
        url.replacen(&broker_authority(&url), &self.addr.to_string(), 1)
    }

    fn saw_publish(&self) -> bool {
        self.published.load(Ordering::SeqCst)
    }
}

impl Drop for ConfirmSwallower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `host:port` of an `amqp://user:pass@host:port/vhost` URL.
fn broker_authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.rsplit('@').next().unwrap_or(authority).to_owned()
}

/// Reads the client's side of an AMQP 0-9-1 connection (protocol header, then frames of
/// type, channel, size, payload, end byte) and says when a `basic.publish` method goes by.
#[derive(Default)]
struct PublishSpotter {
    pending: Vec<u8>,
    header_seen: bool,
}

impl PublishSpotter {
    fn feed(&mut self, bytes: &[u8]) -> bool {
        self.pending.extend_from_slice(bytes);
        if !self.header_seen {
            if self.pending.len() < 8 {
                return false;
            }
            self.pending.drain(..8);
            self.header_seen = true;
        }
        let mut publish = false;
        while self.pending.len() >= 7 {
            let size =
                u32::from_be_bytes([self.pending[3], self.pending[4], self.pending[5], self.pending[6]]) as usize;
            if self.pending.len() < 7 + size + 1 {
                break;
            }
            // Method frame (type 1) of class 60 (basic), method 40 (publish).
            publish |= self.pending[0] == 1 && size >= 4 && self.pending[7..11] == [0, 60, 0, 40];
            self.pending.drain(..7 + size + 1);
        }
        publish
    }
}

/// Messages ready in this test's send queue.
async fn queued(app: &TestApp) -> TestResult<u32> {
    let (connection, channel) = app.amqp().await?;
    let queue = channel
        .queue_declare(
            app.topology.send_queue().into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    let _ = connection.close(200, "done".into()).await;
    Ok(queue.message_count())
}

async fn deliveries_of(app: &TestApp, mobile: &str) -> TestResult<Vec<Value>> {
    let (_, out) = smsctl(&app.settings, &["deliveries", "--mobile", mobile, "--json"]).await?;
    Ok(out.lines().map(serde_json::from_str).collect::<Result<_, _>>()?)
}

#[tokio::test]
async fn a_replay_whose_confirm_is_lost_is_kept_as_unconfirmed_and_a_rerun_sends_no_second_sms() -> TestResult {
    let fake = CcpFake::start().await?;
    let vars = fake.env();
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut app = TestApp::start(&pairs).await?;

    // A delivery fails (a recipient refusal) in a worker process that then stops, so that
    // nothing consumes the send queue while smsctl replays.
    fake.script([Reply::Status("160042")]);
    let pid = app.spawn_worker_process(WORKER_BIN, &fake.env())?;
    let mobile = random_mobile();
    let (_, body) = app.request_code(&mobile).await?;
    assert_eq!(body["errno"], 0, "{body}");
    wait_until(Duration::from_secs(20), "a failed delivery", || async {
        deliveries_of(&app, &mobile).await.ok().filter(|rows| rows.first().is_some_and(|r| r["status"] == "failed"))
    })
    .await?;
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    assert_eq!(app.wait_worker_process(pid, Duration::from_secs(20)).await?, Some(0));
    let original = deliveries_of(&app, &mobile).await?[0]["id"].as_str().ok_or("id")?.parse::<Uuid>()?;

    // The replay is published through a proxy that swallows the broker's confirm.
    let proxy = ConfirmSwallower::start().await?;
    let mut through_proxy = app.settings.clone();
    through_proxy.amqp_url = proxy.url();
    let (ok, out) = smsctl(&through_proxy, &["replay", "--status", "failed", "--mobile", &mobile]).await?;
    assert!(proxy.saw_publish(), "the job was published: {out}");
    assert!(!ok, "an unconfirmed replay is not a success: {out}");
    assert!(out.contains(&format!("unconfirmed {original} -> ")), "{out}");
    assert!(out.contains("did not confirm"), "{out}");
    assert!(out.ends_with("replay: 0 replayed, 0 skipped, 0 failed, 1 unconfirmed\n"), "{out}");
    // And yet the broker queued it.
    wait_until(Duration::from_secs(10), "the replay in the send queue", || async {
        (queued(&app).await.ok()? == 1).then_some(())
    })
    .await?;

    // `smsctl deliveries` shows the claim: retrying, no attempt, last_error says why.
    let rows = deliveries_of(&app, &mobile).await?;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let claim = &rows[0];
    assert_eq!(claim["replay_of"], original.to_string());
    assert_eq!((&claim["status"], &claim["attempts"]), (&Value::from("retrying"), &Value::from(0)));
    let last_error = claim["last_error"].as_str().unwrap_or_default();
    assert!(last_error.starts_with(UNCONFIRMED_REPLAY) && last_error.contains("may be queued"), "{last_error}");
    let replay = claim["id"].as_str().ok_or("id")?.to_owned();
    let (_, table) = smsctl(&app.settings, &["deliveries", "--status", "retrying", "--mobile", &mobile]).await?;
    assert!(table.contains(&replay) && table.contains(UNCONFIRMED_REPLAY), "{table}");

    // A re-run against a broker that confirms skips it: nothing more is published.
    let (ok, out) = smsctl(&app.settings, &["replay", "--status", "failed", "--mobile", &mobile]).await?;
    assert!(ok, "{out}");
    assert!(out.contains(&format!("already replayed as {replay} (unconfirmed)")), "{out}");
    assert!(out.ends_with("replay: 0 replayed, 1 skipped, 0 failed\n"), "{out}");
    assert_eq!(queued(&app).await?, 1, "no second job");

    // A worker sends the one queued replay; the user gets one SMS for it, not two.
    let provider = Arc::new(CcpProvider::new(fake.settings(), Duration::from_secs(5))?);
    app.spawn_worker_with(app.settings.clone(), provider);
    wait_until(Duration::from_secs(20), "the replay to be sent", || async {
        let rows = deliveries_of(&app, &mobile).await.ok()?;
        (rows.len() == 2 && rows[0]["status"] == "sent").then_some(())
    })
    .await?;
    let replies: Vec<String> = fake.received_for(&mobile).into_iter().map(|r| r.reply).collect();
    assert_eq!(replies, ["160042", "000000"]);

    // Once a worker has taken it, the replay is no longer in doubt.
    let (ok, out) = smsctl(&app.settings, &["replay", "--id", &original.to_string()]).await?;
    assert!(ok, "{out}");
    assert!(out.contains(&format!("already replayed as {replay}")) && !out.contains("(unconfirmed)"), "{out}");
    assert_eq!(fake.received_for(&mobile).len(), 2);
    drop(proxy);
    app.cleanup().await
}
