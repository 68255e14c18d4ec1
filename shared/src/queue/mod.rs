//! The RabbitMQ contract shared by api, worker and smsctl.
//!
//! - [`SendJob`] (`job.rs`): the send job, versioned.
//! - [`Topology`] (`topology.rs`): exchange and queue names, and their declaration.
//! - [`Publisher`] (`publisher.rs`): confirmed publishing over a shared, reconnecting
//!   connection; [`Nodes`] and [`connect`] (`connection.rs`): opening a named connection
//!   to the first node of `AMQP_URL` that answers.

mod connection;
mod job;
mod publisher;
mod topology;

pub use connection::{Nodes, connect};
pub use job::{DecodeError, JOB_VERSION, SendJob};
pub use publisher::{PublishError, Publisher};
pub use topology::Topology;
