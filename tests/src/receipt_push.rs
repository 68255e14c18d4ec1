//! What the provider fakes share to push delivery reports, as the real providers do a moment
//! after accepting a message: where to, with which outcome, after how long, and what was
//! answered. Off unless a test asks for it, so tests that do not care see no pushes.

use std::{sync::Mutex, time::Duration};

/// The outcome the next reports say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered to the handset.
    Delivered,
    /// Not delivered, with this carrier code.
    Undelivered(&'static str),
}

/// A report the fake pushed, and our answer.
#[derive(Clone, Debug)]
pub struct Pushed {
    /// The message id it reported on.
    pub message_id: String,
    /// The HTTP status we answered (0: no answer).
    pub status: u16,
    /// Our answer's body.
    pub body: String,
}

/// The push settings and record of one fake.
pub struct Pusher {
    target: Mutex<Option<String>>,
    outcome: Mutex<Outcome>,
    delay: Mutex<Duration>,
    pushed: std::sync::Arc<Mutex<Vec<Pushed>>>,
    http: reqwest::Client,
}

impl Default for Pusher {
    fn default() -> Self {
        Self {
            target: Mutex::new(None),
            outcome: Mutex::new(Outcome::Delivered),
            // The worker records `sent` after the provider's answer: a report that came first
            // would find no message id. Real reports come seconds later.
            delay: Mutex::new(Duration::from_millis(1500)),
            pushed: std::sync::Arc::default(),
            http: reqwest::Client::new(),
        }
    }
}

impl Pusher {
    /// Pushes reports to `url` from now on (`None`: stop).
    pub fn set_target(&self, url: Option<String>) {
        if let Ok(mut t) = self.target.lock() {
            *t = url;
        }
    }

    /// The target, when pushing is on.
    pub fn target(&self) -> Option<String> {
        self.target.lock().ok().and_then(|t| t.clone())
    }

    /// The outcome the next reports say.
    pub fn set_outcome(&self, outcome: Outcome) {
        if let Ok(mut o) = self.outcome.lock() {
            *o = outcome;
        }
    }

    /// The current outcome.
    pub fn outcome(&self) -> Outcome {
        self.outcome.lock().map(|o| o.clone()).unwrap_or(Outcome::Delivered)
    }

    /// How long after the accept the report goes out.
    pub fn set_delay(&self, delay: Duration) {
        if let Ok(mut d) = self.delay.lock() {
            *d = delay;
        }
    }

    /// Reports pushed so far, with our answers.
    pub fn pushed(&self) -> Vec<Pushed> {
        self.pushed.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Sends `request` (built on the pusher's client) after the delay, in the background, and
    /// records the answer under `message_id`.
    pub fn send_later(&self, message_id: String, request: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder) {
        let delay = self.delay.lock().map(|d| *d).unwrap_or_default();
        let request = request(&self.http);
        let pushed = self.pushed.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let (status, body) = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    (status, response.text().await.unwrap_or_default())
                }
                Err(e) => (0, e.to_string()),
            };
            if let Ok(mut p) = pushed.lock() {
                p.push(Pushed { message_id, status, body });
            }
        });
    }
}

/// Beijing time now, in `format` (the Chinese providers' report times).
pub fn beijing_now(format: &str) -> String {
    chrono::Utc::now().with_timezone(&shared::BEIJING).format(format).to_string()
}
