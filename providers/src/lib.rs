//! SMS providers behind one trait, and the router that fails over between them, so the
//! worker's logic does not depend on which one sends.
//!
//! One file per provider holds that provider's whole protocol: request signing, the request
//! itself, the classification of its answers into [`SendError`] classes, and the delivery
//! reports it pushes. Adding a provider is one new file, one arm in [`build`] and one in
//! [`parse_push`]. The protocol notes the code relies on are in the repository's
//! `docs/providers.md`.
//!
//! - [`Router`] (`router.rs`): the failover between providers; [`Breaker`] (`breaker.rs`):
//!   each provider's circuit breaker.
//! - [`http`]: what the clients share (pooled client, exchange, hashing).
//! - [`log`]: dev only, writes the code to the log.
//! - [`receipts`]: the delivery reports the providers push, in one shape, and their answers.
//! - [`ccp`], [`aliyun`], [`tencent`], [`twilio`]: the real providers.

pub mod aliyun;
mod breaker;
pub mod ccp;
pub mod http;
pub mod log;
mod provider;
mod push;
pub mod receipts;
mod router;
pub mod tencent;
pub mod twilio;

pub use breaker::{Admission, Breaker, BreakerState};
pub use provider::{Accepted, Message, SendError, SmsProvider};
pub use push::parse as parse_push;
pub use router::{Call, Round, Routed, Router, build};
