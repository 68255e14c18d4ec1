//! The api's Redis side: captchas, SMS codes and rate limits. Everything that must be atomic
//! runs as one Lua script (sent by SHA; the body only when Redis does not know it yet).
//!
//! - [`CodeStore`] (`store.rs`): the connection, keys and limits; storing captchas and codes.
//! - `admission.rs`: sms_code steps 3–5, the fraud block checked, the captcha consumed and
//!   compared, the rate limits taken and the send counted in one round trip, and giving them
//!   back.
//! - `fraud.rs`: the fraud guard's api side: a mobile's country and prefix, test numbers,
//!   the block's log line and metrics, counting verified codes (the window: `shared::fraud`).
//! - `verify.rs`: the register step's single-use, constant-time SMS code check.
//!
//! Key names: `shared::keys` and the README.

mod admission;
mod fraud;
mod store;
mod verify;

pub use admission::{Admission, Attempt};
pub use fraud::Guard;
pub use store::CodeStore;
