//! The model: Linear layers with ReLU between them and LogSoftmax at the end, as the
//! tutorial's `nn.Sequential`, and the flat parameter table shared by both backends.
//!
//! Convention: every weight is in PyTorch layout `[out, in]`, row-major; each layer's weight is
//! followed by its bias `[out]`, layer after layer, in one flat f32 buffer. Gradients and
//! momentum use the same table.

use crate::rng::{INIT_STREAM, Rng};

/// Layer sizes, input first, output last: the tutorial's is `[784, 128, 128, 64, 64, 10]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arch {
    pub sizes: Vec<usize>,
}

/// One tensor in the flat buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key of the tutorial's `state_dict` (`0.weight`, `0.bias`, `2.weight`, ...).
    pub name: String,
    /// Offset in f32 elements.
    pub offset: usize,
    pub shape: Vec<usize>,
}

impl Entry {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

impl Arch {
    pub fn new(input: usize, hidden: &[usize], output: usize) -> Self {
        let mut sizes = vec![input];
        sizes.extend_from_slice(hidden);
        sizes.push(output);
        Arch { sizes }
    }

    /// Number of Linear layers.
    pub fn layers(&self) -> usize {
        self.sizes.len() - 1
    }
    pub fn input(&self) -> usize {
        self.sizes[0]
    }
    pub fn output(&self) -> usize {
        *self.sizes.last().unwrap()
    }
    /// (in, out) of layer `l`.
    pub fn dims(&self, l: usize) -> (usize, usize) {
        (self.sizes[l], self.sizes[l + 1])
    }

    /// The (name, offset, shape) table; layer `l` is module `2*l` of the Sequential because
    /// a ReLU sits between every two Linears.
    pub fn table(&self) -> Vec<Entry> {
        let mut t = Vec::new();
        let mut offset = 0;
        for l in 0..self.layers() {
            let (i, o) = self.dims(l);
            t.push(Entry {
                name: format!("{}.weight", 2 * l),
                offset,
                shape: vec![o, i],
            });
            offset += o * i;
            t.push(Entry {
                name: format!("{}.bias", 2 * l),
                offset,
                shape: vec![o],
            });
            offset += o;
        }
        t
    }

    /// (weight offset, bias offset) of layer `l`; the CPU backend asks this every step, so it
    /// is computed directly rather than through the table.
    pub fn offsets(&self, l: usize) -> (usize, usize) {
        let w: usize = (0..l).map(|j| (self.dims(j).0 + 1) * self.dims(j).1).sum();
        (w, w + self.dims(l).0 * self.dims(l).1)
    }

    pub fn param_count(&self) -> usize {
        self.table().last().map(|e| e.offset + e.len()).unwrap_or(0)
    }

    /// Multiply-adds of one forward pass for one image.
    pub fn macs_per_image(&self) -> usize {
        (0..self.layers())
            .map(|l| self.dims(l).0 * self.dims(l).1)
            .sum()
    }

    /// torch.nn.Linear's default initialisation: weight and bias each uniform in
    /// [-1/sqrt(fan_in), 1/sqrt(fan_in)] (kaiming_uniform with a = sqrt(5) reduces to this).
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed, INIT_STREAM);
        let mut p = vec![0f32; self.param_count()];
        for e in self.table() {
            let fan_in =
                self.sizes[e.name.split('.').next().unwrap().parse::<usize>().unwrap() / 2];
            let bound = (1.0 / (fan_in as f64).sqrt()) as f32;
            for x in &mut p[e.range()] {
                *x = rng.uniform(-bound, bound);
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tutorial_table() {
        let a = Arch::new(784, &[128, 128, 64, 64], 10);
        let t = a.table();
        let names: Vec<_> = t.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias", "6.weight",
                "6.bias", "8.weight", "8.bias"
            ]
        );
        assert_eq!(t[0].shape, vec![128, 784]);
        assert_eq!(t[9].shape, vec![10]);
        assert_eq!(a.param_count(), 130_058);
        for l in 0..a.layers() {
            assert_eq!(a.offsets(l), (t[2 * l].offset, t[2 * l + 1].offset));
        }
        let p = a.init(1);
        let b0 = 1.0 / 28.0;
        assert!(p[t[0].range()].iter().all(|x| x.abs() <= b0));
        assert!(p[t[8].range()].iter().all(|x| x.abs() <= 0.125));
        assert!(p[t[8].range()].iter().any(|x| x.abs() > 0.1));
    }
}
