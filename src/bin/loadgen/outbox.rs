//! Samples the service's outbox: how many events wait and how old the oldest one is.

use diesel::sql_types::{BigInt, Double};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

pub struct Sampler(AsyncPgConnection);

#[derive(QueryableByName)]
pub struct Sample {
    #[diesel(sql_type = BigInt)]
    pub rows: i64,
    /// Age of the oldest undelivered event (0 when there is none).
    #[diesel(sql_type = Double)]
    pub oldest_ms: f64,
}

impl Sampler {
    pub async fn connect(url: &str) -> Option<Self> {
        match AsyncPgConnection::establish(url).await {
            Ok(conn) => Some(Sampler(conn)),
            Err(e) => {
                eprintln!("loadgen: cannot sample the outbox: {e}");
                None
            }
        }
    }

    pub async fn sample(&mut self) -> Option<Sample> {
        diesel::sql_query(
            "SELECT (SELECT count(*) FROM rating_events)
                      + (SELECT COALESCE(sum(events), 0) FROM relay_batches)::bigint AS rows,
                    COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - least(
                        (SELECT min(created_at) FROM rating_events),
                        (SELECT min(created_at) FROM relay_batches))) * 1000,
                             0)::float8 AS oldest_ms",
        )
        .get_result(&mut self.0)
        .await
        .ok()
    }
}
