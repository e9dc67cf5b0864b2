//! PostgreSQL: the pools, database creation, migrations and the queries (one file a table).
//! Queries take a `&mut AsyncPgConnection` so they compose into transactions.

pub mod outbox;
pub mod posts;
pub mod ratings;
#[rustfmt::skip]
pub mod schema;
pub mod snapshot;
pub mod users;

use std::time::Duration;

use diesel::result::DatabaseErrorKind;
use diesel::ConnectionError;
use diesel_async::pooled_connection::deadpool::{BuildError, Object, Pool, PoolError};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{
    AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use futures::{FutureExt, TryFutureExt};

use crate::error::ApiError;

pub type PgPool = Pool<AsyncPgConnection>;
pub type PooledConn = Object<AsyncPgConnection>;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Advisory lock keys (arbitrary, fixed constants, one per purpose).
pub mod locks {
    /// Held while migrations run, so that instances starting together take turns.
    pub const MIGRATE: i64 = 0x706f_7374_5f72_0001;
    /// Held for its whole session by the one relay that leads.
    pub const RELAY_LEADER: i64 = 0x706f_7374_5f72_0002;
    /// Taken by every stamping transaction and held by a repair while it snapshots and writes.
    pub const STAMP: i64 = 0x706f_7374_5f72_0003;
    /// Held for its whole session by the one instance that audits the stats.
    pub const AUDIT: i64 = 0x706f_7374_5f72_0004;

    /// Takes `key` for the life of this connection's session, without waiting; false when
    /// another session holds it.
    pub async fn try_hold(
        conn: &mut diesel_async::AsyncPgConnection,
        key: i64,
    ) -> super::DbResult<bool> {
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Locked {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            locked: bool,
        }
        let row: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked")
            .bind::<diesel::sql_types::BigInt, _>(key)
            .get_result(conn)
            .await?;
        Ok(row.locked)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database pool: {0}")]
    Pool(#[from] PoolError),
    #[error("database query: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("database connection: {0}")]
    Connect(#[from] ConnectionError),
    #[error("database migration: {0}")]
    Migration(String),
    /// Stored data the service cannot read back (a relay batch, say).
    #[error("unreadable stored data: {0}")]
    Unreadable(String),
}

impl DbError {
    /// True when a row refers to one that does not exist (a post by a deleted user, say).
    pub fn is_missing_reference(&self) -> bool {
        matches!(
            self,
            DbError::Query(diesel::result::Error::DatabaseError(
                DatabaseErrorKind::ForeignKeyViolation,
                _
            ))
        )
    }

    /// True when the database is unreachable or too slow, as opposed to a bug in a query.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Pool(_) | DbError::Connect(_) => true,
            DbError::Query(diesel::result::Error::DatabaseError(kind, info)) => {
                let msg = info.message();
                matches!(kind, DatabaseErrorKind::ClosedConnection)
                    || msg.contains("statement timeout")
                    || msg.contains("connection")
                    || msg.contains("terminating")
                    || msg.contains("shutting down")
                    || msg.contains("recovery")
            }
            DbError::Query(diesel::result::Error::BrokenTransactionManager) => true,
            _ => false,
        }
    }
}

pub type DbResult<T> = Result<T, DbError>;

/// What a request answers when the database fails it: 503 when it is unreachable or too
/// slow, 500 for anything else.
impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        if e.is_unavailable() {
            log::warn!("database unavailable: {e}");
            ApiError::Unavailable("database")
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

#[derive(diesel::QueryableByName)]
pub(crate) struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub n: i64,
}

/// Opens one connection whose statements time out after `timeout`, so a stuck database
/// gives an error rather than a hang.
pub async fn connect(url: &str, timeout: Duration) -> DbResult<AsyncPgConnection> {
    let mut conn = tokio::time::timeout(timeout, AsyncPgConnection::establish(url))
        .await
        .map_err(|_| ConnectionError::BadConnection("connect timed out".into()))??;
    diesel::sql_query(format!("SET statement_timeout = {}", timeout.as_millis()))
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// `SELECT 1`: the connection and the server answer (readiness).
pub async fn ping(conn: &mut AsyncPgConnection) -> DbResult<()> {
    diesel::sql_query("SELECT 1").execute(conn).await?;
    Ok(())
}

/// Lifts the statement timeout `connect` set, for one long statement of this connection
/// (a rebuild reading a whole partition).
pub async fn without_statement_timeout(conn: &mut AsyncPgConnection) -> DbResult<()> {
    diesel::sql_query("SET statement_timeout = 0")
        .execute(conn)
        .await?;
    Ok(())
}

pub fn pool(url: &str, size: usize, timeout: Duration) -> Result<PgPool, BuildError> {
    let mut config = ManagerConfig::default();
    // Fast: a pooled connection is checked for a closed socket and an open transaction, not
    // with a test query, which would cost every request one more round trip. A connection
    // that broke while idle fails its first query (503) and is then dropped by the pool.
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url| {
        let url = url.to_owned();
        async move {
            let mut conn = connect(&url, timeout).await?;
            // The API's statements are fixed key lookups whose best plan does not depend on
            // the values bound. Left on `auto`, PostgreSQL keeps planning the posts page
            // afresh on every execution (its generic plan looks costlier only because a
            // bound LIMIT is estimated at 10% of the table), and planning took longer than
            // running it. Only this pool: the relay and reconcile use their own connections.
            conn.batch_execute("SET plan_cache_mode = force_generic_plan")
                .await?;
            Ok(conn)
        }
        .map_err(|e: DbError| ConnectionError::BadConnection(e.to_string()))
        .boxed()
    });
    let manager = AsyncDieselConnectionManager::new_with_config(url, config);
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
}

/// Creates the database named in `url` when it does not exist yet.
pub async fn create_database_if_missing(url: &str, timeout: Duration) -> DbResult<()> {
    let mut parsed = url::Url::parse(url)
        .map_err(|e| ConnectionError::InvalidConnectionUrl(format!("DATABASE_URL: {e}")))?;
    let name = parsed.path().trim_start_matches('/').to_owned();
    if name.is_empty() || name == "postgres" {
        return Ok(());
    }
    parsed.set_path("/postgres");
    let mut conn = connect(parsed.as_str(), timeout).await?;
    let found: Vec<Count> =
        diesel::sql_query("SELECT count(*) AS n FROM pg_database WHERE datname = $1")
            .bind::<diesel::sql_types::Text, _>(&name)
            .load(&mut conn)
            .await?;
    let found = found.into_iter().next().map_or(0, |c| c.n);
    if found == 0 {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match diesel::sql_query(format!("CREATE DATABASE {quoted}"))
            .execute(&mut conn)
            .await
        {
            Ok(_) => log::info!("created database {name}"),
            // Another instance created it at the same moment.
            Err(diesel::result::Error::DatabaseError(_, info))
                if info.message().contains("already exists") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Runs the embedded migrations under an advisory lock, so that instances starting at the
/// same time take turns instead of racing.
pub async fn run_migrations(url: &str, timeout: Duration) -> DbResult<()> {
    let mut lock_conn = connect(url, timeout).await?;
    diesel::sql_query("SET statement_timeout = 0")
        .execute(&mut lock_conn)
        .await?;
    diesel::sql_query(format!("SELECT pg_advisory_lock({})", locks::MIGRATE))
        .execute(&mut lock_conn)
        .await?;
    let conn = connect(url, timeout).await?;
    // The harness drives the async connection with `block_in_place`: fine at start-up on
    // the multi-threaded runtime.
    let mut harness = AsyncMigrationHarness::new(conn);
    let result = harness
        .run_pending_migrations(MIGRATIONS)
        .map(|versions| versions.len())
        .map_err(|e| DbError::Migration(e.to_string()));
    diesel::sql_query(format!("SELECT pg_advisory_unlock({})", locks::MIGRATE))
        .execute(&mut lock_conn)
        .await?;
    let applied = result?;
    if applied > 0 {
        log::info!("applied {applied} migration(s)");
    }
    Ok(())
}
