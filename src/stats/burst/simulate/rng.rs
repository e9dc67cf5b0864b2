//! A small deterministic generator (SplitMix64), so runs are reproducible without a crate.

#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponential with the given mean: gaps of a Poisson process.
    pub(crate) fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.next_f64()).ln()
    }

    /// An organic score: P(0..=5) = 3, 2, 4, 10, 25, 56 %, mean exactly 4.2.
    pub(crate) fn organic_score(&mut self) -> u8 {
        let mut u = self.next_u64() % 100;
        for (score, pct) in [3u64, 2, 4, 10, 25, 56].into_iter().enumerate() {
            if u < pct {
                return score as u8;
            }
            u -= pct;
        }
        5
    }
}
