-- Users created by the signup flow, and one delivery record per SMS send job.

create table users (
    id bigint generated always as identity primary key,
    mobile text not null unique,
    password_hash text,
    created_at timestamptz not null default now()
);

create table sms_deliveries (
    id uuid primary key,
    mobile text not null,
    template_id text not null,
    provider text not null,
    status text not null
        check (status in ('sending', 'sent', 'retrying', 'failed', 'expired', 'superseded')),
    attempts integer not null default 0,
    last_error text,
    provider_message_id text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    sent_at timestamptz,
    replay_of uuid references sms_deliveries (id),
    code_digest text not null
);

-- smsctl: "failed in the last hour", "stats over a window".
create index sms_deliveries_status_created_at on sms_deliveries (status, created_at);
-- smsctl --mobile.
create index sms_deliveries_mobile_created_at on sms_deliveries (mobile, created_at);
-- A job is replayed at most once.
create unique index sms_deliveries_replay_of on sms_deliveries (replay_of) where replay_of is not null;
