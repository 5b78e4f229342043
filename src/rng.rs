//! A small seeded generator (SplitMix64) for weight initialisation and shuffling.
//!
//! Each use draws from its own stream, derived from the user's seed and a stream number, so
//! that the shuffle of epoch `e` does not depend on how many numbers the initialisation used.

pub struct Rng(u64);

/// Stream numbers: 0 for the initial weights, 1 + e for the shuffle of epoch e.
pub const INIT_STREAM: u64 = 0;

pub fn epoch_stream(epoch: usize) -> u64 {
    1 + epoch as u64
}

impl Rng {
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut r = Rng(seed ^ 0x6a09_e667_f3bc_c909);
        let mix = r.next_u64() ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Rng(mix)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` without modulo bias (Lemire's multiply-and-reject).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }

    /// Uniform in [0, 1) with 24 random bits, exactly representable in f32.
    pub fn unit_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit_f32()
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// The training order of epoch `epoch`: a permutation of `0..n` drawn from the seed.
pub fn epoch_order(seed: u64, epoch: usize, n: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    Rng::new(seed, epoch_stream(epoch)).shuffle(&mut order);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let a = epoch_order(7, 0, 1000);
        let b = epoch_order(7, 0, 1000);
        let c = epoch_order(7, 1, 1000);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn uniform_stays_in_range_and_covers_it() {
        let mut r = Rng::new(1, 0);
        let xs: Vec<f32> = (0..10_000).map(|_| r.uniform(-0.5, 0.5)).collect();
        assert!(xs.iter().all(|x| (-0.5..0.5).contains(x)));
        let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.02, "{mean}");
        assert!(xs.iter().any(|&x| x < -0.49) && xs.iter().any(|&x| x > 0.49));
    }
}
