//! SplitMix64, the seeded generator behind bootstrap resampling: a few lines that Python reproduces bit for bit.
//!
//! Why not a crate: scripts/sklearn_metrics_reference.py recomputes the bootstrap with scikit-learn on the very same
//! resamples (and builds the same synthetic prediction sets), which needs a generator whose every output is
//! specified by integer arithmetic alone. SplitMix64 (Steele, Lea and Flood 2014; Vigna's reference code) is that:
//! output k (from 1) is `mix(seed + k * 0x9E3779B97F4A7C15)` modulo 2^64.

/// Sebastiano Vigna's splitmix64.c, with wrapping arithmetic.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Moves the stream on by `draws` outputs in constant time: the state only ever adds the gamma.
    pub fn skip(&mut self, draws: u64) {
        self.state = self.state.wrapping_add(draws.wrapping_mul(GOLDEN_GAMMA));
    }

    /// An index in `0..n` as `next_u64() % n`: the bias is below n / 2^64, far under anything a bootstrap can see,
    /// and numpy reproduces it with one vectorized modulo.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        self.next_u64() % n
    }

    /// An index in `0..n` as the high word of `next_u64() * n` (Lemire's multiply-shift): one multiplication
    /// instead of a division, with the same bias below n / 2^64; numpy computes it from the draw's 32-bit halves.
    pub fn scaled_below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A float in [0, 1) from the top 53 bits: exact, so Python computes the identical value.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_implementation() {
        // The commonly published test vector: the first outputs of Vigna's splitmix64.c seeded with 1234567.
        let mut rng = SplitMix64::new(1_234_567);
        let expected = [
            6_457_827_717_110_365_317u64,
            3_203_168_211_198_807_973,
            9_817_491_932_198_370_423,
            4_593_380_528_125_082_431,
            16_408_922_859_458_223_821,
        ];
        for e in expected {
            assert_eq!(rng.next_u64(), e);
        }
    }

    #[test]
    fn skipping_ahead_lands_where_drawing_would() {
        let mut drawn = SplitMix64::new(99);
        for _ in 0..12_345 {
            drawn.next_u64();
        }
        let mut skipped = SplitMix64::new(99);
        skipped.skip(12_345);
        for _ in 0..5 {
            assert_eq!(skipped.next_u64(), drawn.next_u64());
        }
    }

    #[test]
    fn scaled_below_is_the_high_word_of_draw_times_n() {
        // Python's exact integers on the reference vector's outputs: [x * n >> 64 for x in outputs].
        let mut rng = SplitMix64::new(1_234_567);
        let got: Vec<u64> = (0..5).map(|_| rng.scaled_below(86)).collect();
        assert_eq!(got, [30, 14, 45, 21, 76]);
        let mut rng = SplitMix64::new(1_234_567);
        let got: Vec<u64> = (0..5).map(|_| rng.scaled_below(141_021)).collect();
        assert_eq!(got, [49_368, 24_487, 75_052, 35_115, 125_442]);
    }

    #[test]
    fn below_and_unit_stay_in_range() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..10_000 {
            assert!(rng.below(86) < 86);
            assert!(rng.scaled_below(86) < 86);
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
