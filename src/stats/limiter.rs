//! The Redis half of `RATE_LIMIT_STORE=redis`: one `gcra.lua` call per check, on a key of
//! its own per limit and client (`{prefix}limit:{kind}:{client}`).

use std::sync::LazyLock;

use redis::Script;

use super::{StatsError, StatsStore};

static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("gcra.lua")));

impl StatsStore {
    /// Counts one request of `client` against a GCRA of one request per `interval_us` with
    /// `burst` at once; answers how many microseconds it must wait (0: admitted).
    pub async fn gcra_wait(
        &self,
        kind: &str,
        client: &str,
        interval_us: u64,
        burst: u32,
    ) -> Result<u64, StatsError> {
        let key = format!("{}limit:{kind}:{client}", self.prefix());
        self.with_conn(|mut conn| async move {
            let mut call = GCRA.prepare_invoke();
            call.key(key).arg(interval_us).arg(burst);
            let wait_us: u64 = call.invoke_async(&mut conn).await?;
            Ok(wait_us)
        })
        .await
    }
}
