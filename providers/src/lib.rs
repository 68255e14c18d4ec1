//! SMS providers behind one trait, and the router that fails over between them, so the
//! worker's logic does not depend on which one sends.
//!
//! One file per provider holds that provider's whole protocol: request signing, the request
//! itself, and the classification of its answers into [`SendError`] classes. Adding a
//! provider is one new file and one arm in [`build`]. The protocol notes the code relies on
//! are in the repository's `docs/providers.md`.
//!
//! - [`Router`] (`router.rs`): the failover between providers; [`Breaker`] (`breaker.rs`):
//!   each provider's circuit breaker.
//! - [`http`]: what the clients share (pooled client, exchange, hashing).
//! - [`log`]: dev only, writes the code to the log.
//! - [`ccp`], [`aliyun`], [`tencent`], [`twilio`]: the real providers.

pub mod aliyun;
mod breaker;
pub mod ccp;
pub mod http;
pub mod log;
mod provider;
mod router;
pub mod tencent;
pub mod twilio;

pub use breaker::{Admission, Breaker, BreakerState};
pub use provider::{Accepted, Message, SendError, SmsProvider};
pub use router::{Call, Round, Routed, Router, build};
