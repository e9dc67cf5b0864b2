//! Repairs: stats and versions overwritten from PostgreSQL's numbers, fences set, per slot.

use futures::future::try_join_all;

use super::{StatsStore, StoredStats};
use crate::stats::StatsError;

impl StatsStore {
    /// Overwrites the stats and versions of `targets` (those that differ) and sets the fences
    /// of `fences` to exactly these sequences, atomically per partition (one script per
    /// slot in a cluster, one for all on a single server); returns how many posts differed.
    /// With `dry_run`, compares only. The caller holds the relay's stamp lock, so nothing is
    /// stamped beyond the snapshot the targets come from until it is done. A change raises
    /// the repair epoch once all is written.
    pub async fn repair_chunk(
        &self,
        targets: &[(i64, StoredStats)],
        fences: &[(i32, i64)],
        dry_run: bool,
    ) -> Result<u64, StatsError> {
        enum Item<'a> {
            Fence(i32, i64),
            Post(i64, &'a StoredStats),
        }
        let items: Vec<Item<'_>> = fences
            .iter()
            .map(|&(part, seq)| Item::Fence(part, seq))
            .chain(targets.iter().map(|(id, t)| Item::Post(*id, t)))
            .collect();
        let groups = self.by_slot(items, |item| match item {
            Item::Fence(part, _) => *part,
            Item::Post(id, _) => self.partition_of(*id),
        });
        let replies = try_join_all(groups.into_iter().map(|group| {
            let (mut keys, mut seqs, mut posts) = (Vec::new(), Vec::new(), Vec::new());
            let mut values: Vec<i64> = Vec::new();
            for item in &group {
                match item {
                    Item::Fence(part, seq) => {
                        keys.push(self.fence_key(*part));
                        seqs.push(*seq);
                    }
                    Item::Post(id, target) => {
                        posts.push(self.post_key(*id));
                        values.extend(target.stats.to_array());
                        values.push(target.version);
                    }
                }
            }
            let mut args: Vec<i64> = vec![i64::from(dry_run), seqs.len() as i64];
            args.extend(seqs);
            args.extend(values);
            keys.extend(posts);
            let script = self.repair_script.clone();
            self.with_conn(|mut conn| async move {
                let mut invocation = script.prepare_invoke();
                invocation.key(keys).arg(args);
                let (drift, changed): (u64, i64) = invocation.invoke_async(&mut conn).await?;
                Ok((drift, changed == 1))
            })
        }))
        .await?;
        if replies.iter().any(|(_, changed)| *changed) {
            let key = self.epoch_key();
            self.with_conn(|mut conn| async move {
                let _: i64 = redis::cmd("INCR").arg(key).query_async(&mut conn).await?;
                Ok(())
            })
            .await?;
        }
        Ok(replies.iter().map(|(drift, _)| drift).sum())
    }
}
