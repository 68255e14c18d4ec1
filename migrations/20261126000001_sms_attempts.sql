-- One row per provider call: which provider, what it answered, how long it took. A delivery
-- that failed over has several rows for one attempt.

create table sms_attempts (
    id bigint generated always as identity primary key,
    delivery_id uuid not null references sms_deliveries (id) on delete cascade,
    attempt integer not null,
    provider text not null,
    outcome text not null
        check (outcome in ('sent', 'transient', 'provider', 'recipient', 'number_limited')),
    error text,
    provider_message_id text,
    latency_ms integer not null,
    created_at timestamptz not null default now()
);

-- smsctl deliveries --id: the attempts of one delivery, in order.
create index sms_attempts_delivery_id on sms_attempts (delivery_id, id);
-- smsctl providers --since: calls per provider over a window.
create index sms_attempts_created_at on sms_attempts (created_at);
