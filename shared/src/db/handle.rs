//! `Db`: the PostgreSQL pool every store runs on, direct or through a transaction pooler.

use futures_util::{StreamExt, TryStreamExt, future::BoxFuture, stream::BoxStream};
use sqlx::{
    Either, Execute, Executor, PgPool, Postgres, SqlStr, Transaction,
    postgres::{PgQueryResult, PgRow, PgStatement, PgTypeInfo},
};

use crate::Settings;

/// The pool, as an executor (`&db` goes wherever a store takes `impl PgExecutor`).
///
/// With `DATABASE_PREPARED_STATEMENTS=false` it is fit for a transaction pooler such as
/// PgBouncer. sqlx runs a statement with arguments as Parse + Sync, then Bind + Execute +
/// Sync: outside a transaction, a transaction pooler may hand the server connection to
/// another client in between, and the statement is gone (or, named, collides with another
/// client's of the same name, since named statements outlive transactions). So each
/// statement runs in a transaction of its own, committed before the call returns, that first
/// drops the named statements earlier clients left on that server connection; and each
/// [`Db::begin`] transaction starts the same way. No session state outlives a transaction.
#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
    /// Behind a transaction pooler: one transaction per statement.
    pooled: bool,
}

/// Opens a pooler-safe transaction (one simple-query round trip).
const BEGIN_POOLED: &str = "begin; deallocate all";

impl Db {
    /// `pool`, used as `DATABASE_PREPARED_STATEMENTS` says.
    pub fn new(pool: PgPool, settings: &Settings) -> Self {
        Self { pool, pooled: !settings.database_prepared_statements }
    }

    /// A transaction, committed by `commit()` and rolled back when dropped.
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        if self.pooled { self.pool.begin_with(BEGIN_POOLED).await } else { self.pool.begin().await }
    }

    /// The underlying pool (its size, and closing it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A pool used directly (prepared statements on).
impl From<PgPool> for Db {
    fn from(pool: PgPool) -> Self {
        Self { pool, pooled: false }
    }
}

impl<'p> Executor<'p> for &'_ Db {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        if !self.pooled {
            return (&self.pool).fetch_many(query);
        }
        let db = self.clone();
        Box::pin(
            futures_util::stream::once(async move {
                let mut tx = db.begin().await?;
                let results: Vec<_> = (&mut *tx).fetch_many(query).try_collect().await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(futures_util::stream::iter(results.into_iter().map(Ok)))
            })
            .try_flatten(),
        )
        .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        let db = self.clone();
        Box::pin(async move {
            if !db.pooled {
                return db.pool.fetch_optional(query).await;
            }
            let mut tx = db.begin().await?;
            let row = (&mut *tx).fetch_optional(query).await?;
            tx.commit().await?;
            Ok(row)
        })
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement, sqlx::Error>>
    where
        'p: 'e,
    {
        (&self.pool).prepare_with(sql, parameters)
    }

    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<sqlx::Describe<Postgres>, sqlx::Error>> {
        (&self.pool).describe(sql)
    }
}
