//! Hash tags that spread the partitions evenly over a Redis Cluster's slots.
//!
//! Every key of a partition carries one hash tag, so the partition lives in one slot. The
//! plain tags `p0`, `p1`, … land where CRC16 puts them: 12 of them fall 3, 3 and 6 on the
//! thirds of the slot space that `redis-cli --cluster create` gives 3 masters. So partition
//! `i` of `n` gets the first of `p{i}`, `p{i}.1`, `p{i}.2`, … whose slot lies in the `i`-th
//! of `n` equal ranges of the 16,384 slots: any even split of the slots over masters then
//! gives each master an even share of the partitions.

/// Redis Cluster's slot count.
const SLOTS: u32 = 16_384;

/// The slot Redis Cluster gives a hash tag (CRC16/XMODEM of it, modulo 16,384).
pub fn slot(tag: &str) -> u16 {
    let mut crc: u16 = 0;
    for &byte in tag.as_bytes() {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    (u32::from(crc) % SLOTS) as u16
}

/// The hash tag of each of `partitions` partitions (see the module's comment).
pub fn partition_tags(partitions: i32) -> Vec<String> {
    let n = partitions.max(1) as u32;
    (0..n)
        .map(|i| {
            let range = (i * SLOTS / n)..((i + 1) * SLOTS / n);
            // Each candidate lands in the range with probability 1/n: a few n tries at most.
            std::iter::once(format!("p{i}"))
                .chain((1..).map(|k| format!("p{i}.{k}")))
                .find(|tag| range.contains(&u32::from(slot(tag))))
                .unwrap_or_else(|| format!("p{i}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // CRC16/XMODEM's check value, and what `CLUSTER KEYSLOT` answers for these tags.
        assert_eq!(slot("123456789"), 0x31C3);
        for (tag, want) in [("p0", 15882), ("p1", 11819), ("p7", 3821), ("p11", 2270)] {
            assert_eq!(slot(tag), want, "{tag}");
        }
    }

    #[test]
    fn partitions_spread_evenly_over_the_masters() {
        for (partitions, masters) in [(12, 3), (12, 4), (12, 6), (24, 3), (6, 3), (1, 1)] {
            let tags = partition_tags(partitions);
            assert_eq!(tags.len(), partitions as usize);
            let mut per_master = vec![0; masters];
            for tag in &tags {
                // redis-cli --cluster create splits the slots into equal ranges.
                let master = u32::from(slot(tag)) * masters as u32 / SLOTS;
                per_master[master as usize] += 1;
            }
            let want = partitions as usize / masters;
            assert!(
                per_master.iter().all(|&n| n == want),
                "{partitions} partitions over {masters}: {per_master:?}"
            );
        }
    }
}
