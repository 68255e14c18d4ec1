//! Integration tests: the real api and worker against real PostgreSQL, Redis and RabbitMQ.

mod browser;
mod compose;
mod faults;
mod image_code;
mod ops;
mod queue;
mod register;
mod sms_code;
mod worker;
mod worker_minimal;
