//! PNG captchas of 4 characters, drawn without the ambiguous ones (0/O/o, 1/I/l/i/j...),
//! a few at a time.

use std::time::Duration;

use captcha::{
    Captcha,
    filters::{Dots, Noise, Wave},
};
use tokio::sync::Semaphore;

use crate::error::{ApiError, Limit};

/// Characters a captcha may contain: easy to tell apart, compared case-insensitively.
pub const ALPHABET: &str = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabdefghkmnpqrtuvwxyz";

/// Number of characters in a captcha.
pub const LENGTH: u32 = 4;

/// A generated captcha: its text and the PNG showing it.
pub struct Generated {
    /// The characters to type.
    pub text: String,
    /// The image.
    pub png: Vec<u8>,
}

/// Captchas drawn at the same time, per process. Drawing is CPU work on the blocking pool:
/// without a bound a flood of `GET /passport/image_code` would queue blocking tasks without
/// limit (the pool has hundreds of threads) and starve password hashing. The bound is the
/// process's, so it is a static rather than per-`AppState`.
pub const CONCURRENT_RENDERS: usize = 4;

static RENDERS: Semaphore = Semaphore::const_new(CONCURRENT_RENDERS);

/// Draws a captcha on the blocking pool, once one of the `CONCURRENT_RENDERS` slots is free;
/// waits at most `wait` for it (then 4201, HTTP 429).
pub async fn render(wait: Duration) -> Result<Generated, ApiError> {
    bounded(wait, generate).await?.ok_or_else(|| ApiError::Internal("captcha generation failed".into()))
}

/// Runs `work` on the blocking pool under a `RENDERS` permit. The permit moves into the
/// blocking task, so a request that goes away does not free a slot whose drawing still runs.
async fn bounded<T: Send + 'static>(wait: Duration, work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    let busy = || ApiError::RateLimited { limit: Limit::CaptchaRenders, retry_after_secs: 1 };
    let permit = tokio::time::timeout(wait, RENDERS.acquire()).await.map_err(|_| busy())?.map_err(|_| busy())?;
    Ok(tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await?)
}

/// Draws a captcha. CPU-bound (a few milliseconds): call it through [`render`].
pub fn generate() -> Option<Generated> {
    let mut captcha = Captcha::new();
    let usable: Vec<char> = captcha.supported_chars().into_iter().filter(|c| ALPHABET.contains(*c)).collect();
    captcha
        .set_chars(&usable)
        .add_chars(LENGTH)
        .apply_filter(Noise::new(0.1))
        .apply_filter(Wave::new(2.0, 8.0))
        .view(180, 70)
        .apply_filter(Dots::new(4));
    let (text, png) = captcha.as_tuple()?;
    (text.chars().count() == LENGTH as usize).then_some(Generated { text, png })
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    #[tokio::test]
    async fn no_more_than_a_few_captchas_are_drawn_at_once() {
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut renders = tokio::task::JoinSet::new();
        for _ in 0..24 {
            let (running, most) = (running.clone(), most.clone());
            renders.spawn(bounded(Duration::from_secs(30), move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
                running.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        while let Some(done) = renders.join_next().await {
            assert!(matches!(done, Ok(Ok(()))));
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=CONCURRENT_RENDERS).contains(&most), "{most} drawn at once");
    }

    #[tokio::test]
    async fn a_render_that_waits_too_long_for_a_slot_is_told_to_retry() {
        let held = RENDERS.acquire_many(CONCURRENT_RENDERS as u32).await;
        let answer = bounded(Duration::from_millis(50), || ()).await;
        drop(held);
        assert!(
            matches!(answer, Err(ApiError::RateLimited { limit: Limit::CaptchaRenders, retry_after_secs: 1 })),
            "{answer:?}"
        );
    }

    #[test]
    fn captchas_use_four_unambiguous_characters() {
        for _ in 0..20 {
            let Some(g) = generate() else { panic!("captcha generation failed") };
            assert_eq!(g.text.chars().count(), 4);
            assert!(g.text.chars().all(|c| ALPHABET.contains(c)), "{}", g.text);
            assert!(g.png.starts_with(b"\x89PNG\r\n\x1a\n"));
        }
    }
}
