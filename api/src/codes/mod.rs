//! The api's Redis side: captchas, SMS codes and rate limits. Everything that must be atomic
//! runs as one Lua script (sent by SHA; the body only when Redis does not know it yet).
//!
//! - [`CodeStore`] (`store.rs`): the connection, keys and limits; storing captchas and codes.
//! - `admission.rs`: sms_code steps 3–5, the captcha consumed and compared and the rate
//!   limits taken in one round trip, and giving them back.
//! - `verify.rs`: the register step's single-use, constant-time SMS code check.
//!
//! Key names: `shared::keys` and the README.

mod admission;
mod store;
mod verify;

pub use admission::Attempt;
pub use store::CodeStore;
