-- Delivery receipts and conversion: a delivery moves from `sent` to `delivered` or
-- `undelivered` when its provider reports, and records when a register used its code.

alter table sms_deliveries drop constraint sms_deliveries_status_check;
alter table sms_deliveries add constraint sms_deliveries_status_check
    check (status in ('sending', 'sent', 'retrying', 'failed', 'expired', 'superseded', 'delivered', 'undelivered'));
alter table sms_deliveries
    add column delivered_at timestamptz,
    add column verified_at timestamptz;

-- The report on the provider call it answers: status as the provider wrote it, its carrier
-- code, and when it was recorded.
alter table sms_attempts
    add column receipt_status text,
    add column receipt_error text,
    add column receipt_at timestamptz;

-- Receipts are matched by the provider's message id.
create index sms_attempts_provider_message_id on sms_attempts (provider, provider_message_id)
    where provider_message_id is not null;
-- smsctl stats: the funnel per provider over a window.
create index sms_deliveries_created_at on sms_deliveries (created_at);
