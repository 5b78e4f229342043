//! Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011): a
//! counter-based generator, so that any element's random number is a pure function of where it
//! is (its counter) and of the run (its key), computed alone in any order on any device.
//! Dropout draws its masks from it (`Mask`).

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// Ten rounds of Philox4x32 on `counter` under `key`.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// Where a dropout layer draws its mask in one training step: the model's seed, the step's
/// index over the whole run (epoch * steps per epoch + step) and the layer's index in the
/// model. A set's model draws what its single run draws, since its seed is its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mask {
    pub seed: u64,
    pub step: u64,
    pub layer: u32,
}

impl Mask {
    /// Whether element `element` (of the batch's elements or, for Dropout2d, of its
    /// channels, batch-major) is kept when dropping with probability `p`: its uniform number
    /// in [0, 1), 24 bits of the first word, is at least `p`.
    pub fn keeps(self, element: u32, p: f32) -> bool {
        let counter = [
            element,
            self.layer,
            self.step as u32,
            (self.step >> 32) as u32,
        ];
        let key = [self.seed as u32, (self.seed >> 32) as u32];
        let u = (philox4x32_10(counter, key)[0] >> 8) as f32 * (1.0 / (1u32 << 24) as f32);
        u >= p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123's known-answer vectors for philox4x32_10 (kat_vectors).
    #[test]
    fn known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0]
            ),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn a_mask_keeps_about_one_minus_p() {
        let m = Mask {
            seed: 1,
            step: 7,
            layer: 3,
        };
        let kept = (0..100_000).filter(|&e| m.keeps(e, 0.25)).count();
        assert!((74_000..76_000).contains(&kept), "{kept}");
        assert!((0..1000).all(|e| m.keeps(e, 0.0)));
        let other = Mask { step: 8, ..m };
        assert!((0..64).any(|e| m.keeps(e, 0.5) != other.keeps(e, 0.5)));
    }
}
