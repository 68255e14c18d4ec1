//! The `users` table: whether a mobile is registered, and registering one.

use sqlx::PgExecutor;

use crate::domain::Mobile;

/// Whether a user with this mobile exists (step 6 of sms_code).
#[tracing::instrument(skip_all)]
pub async fn exists(db: impl PgExecutor<'_>, mobile: &Mobile) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        r#"
        select exists (select 1 from users where mobile = $1)
        "#,
    )
    .bind(mobile.as_str())
    .fetch_one(db)
    .await
}

/// Creates a user; `false` when the mobile is already registered (the unique constraint
/// decides, so concurrent registrations cannot both succeed).
#[tracing::instrument(skip_all)]
pub async fn create(db: impl PgExecutor<'_>, mobile: &Mobile, password_hash: &str) -> Result<bool, sqlx::Error> {
    let id: Option<i64> = sqlx::query_scalar(
        r#"
        insert into users (mobile, password_hash)
        values ($1, $2)
        on conflict (mobile) do nothing
        returning id
        "#,
    )
    .bind(mobile.as_str())
    .bind(password_hash)
    .fetch_optional(db)
    .await?;
    Ok(id.is_some())
}
