//! Integration tests: the real api and worker against real PostgreSQL, Redis and RabbitMQ.

mod browser;
mod cancellation;
mod cluster;
mod compose;
mod failover;
mod faults;
mod fraud;
mod image_code;
mod ops;
mod provider_aliyun;
mod provider_tencent;
mod provider_twilio;
mod queue;
mod receipts;
mod register;
mod replay_unconfirmed;
mod request_edges;
mod server;
mod sms_code;
mod stalls;
mod startup;
mod worker;
mod worker_minimal;
