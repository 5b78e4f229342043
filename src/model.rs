//! The model: a list of layers, as an `nn.Sequential` lists its modules, and the flat
//! parameter table derived from it that both backends share.
//!
//! Convention: every tensor is in PyTorch layout (a Linear's weight `[out, in]`), row-major,
//! in the list's order, each layer's weight before its bias, in one flat f32 buffer; a
//! tensor's key is `<index in the list>.<name>`, as `state_dict` names it. Gradients and the
//! optimizer's state use the same table.

use crate::rng::{INIT_STREAM, Rng};

/// One module of the `nn.Sequential`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// `nn.Linear(inp, out)`: weight `[out, inp]`, bias `[out]`.
    Linear { inp: usize, out: usize },
    /// `nn.ReLU()`.
    Relu,
    /// `nn.LogSoftmax(dim=1)`: the last layer, whose output NLLLoss reads.
    LogSoftmax,
}

impl Layer {
    /// The layer's tensors, (name, shape), in `state_dict` order.
    pub fn params(&self) -> Vec<(&'static str, Vec<usize>)> {
        match *self {
            Layer::Linear { inp, out } => vec![("weight", vec![out, inp]), ("bias", vec![out])],
            Layer::Relu | Layer::LogSoftmax => Vec::new(),
        }
    }

    /// Features out for `inp` features in, or why the layer cannot take them.
    pub fn features(&self, inp: usize) -> Result<usize, String> {
        match *self {
            Layer::Linear { inp: want, out } if want == inp => Ok(out),
            Layer::Linear { inp: want, out } => Err(format!(
                "Linear({want}, {out}) follows a layer of {inp} outputs"
            )),
            Layer::Relu | Layer::LogSoftmax => Ok(inp),
        }
    }

    /// PyTorch's default initialisation of the layer's tensors, `p` holding them in order:
    /// `nn.Linear` draws weight and bias each uniform in [-1/sqrt(in), 1/sqrt(in)]
    /// (kaiming_uniform with a = sqrt(5) reduces to this).
    fn init(&self, rng: &mut Rng, p: &mut [f32]) {
        match *self {
            Layer::Linear { inp, .. } => {
                let bound = (1.0 / (inp as f64).sqrt()) as f32;
                for x in p {
                    *x = rng.uniform(-bound, bound);
                }
            }
            Layer::Relu | Layer::LogSoftmax => {}
        }
    }

    /// Multiply-adds of the layer's forward pass for one image.
    fn macs(&self) -> usize {
        match *self {
            Layer::Linear { inp, out } => inp * out,
            Layer::Relu | Layer::LogSoftmax => 0,
        }
    }
}

/// As PyTorch prints the module: `Linear(784, 128)`, `ReLU()`, `LogSoftmax(dim=1)`.
impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Layer::Linear { inp, out } => write!(f, "Linear({inp}, {out})"),
            Layer::Relu => write!(f, "ReLU()"),
            Layer::LogSoftmax => write!(f, "LogSoftmax(dim=1)"),
        }
    }
}

/// A model: its layers in order, each taking the one before's output; the last is
/// LogSoftmax. Built only through [`Arch::from_layers`] (or [`Arch::mlp`]), which checks that.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arch {
    layers: Vec<Layer>,
}

/// One tensor in the flat buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key of the `state_dict` (`0.weight`, `0.bias`, `2.weight`, ...).
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
    /// The tutorial's kind of model: Linear layers of the given sizes with ReLU between every
    /// two, LogSoftmax last. The tutorial's is `mlp(784, &[128, 128, 64, 64], 10)`.
    pub fn mlp(input: usize, hidden: &[usize], output: usize) -> Self {
        let mut sizes = vec![input];
        sizes.extend_from_slice(hidden);
        sizes.push(output);
        let mut layers = Vec::new();
        for (l, pair) in sizes.windows(2).enumerate() {
            if l > 0 {
                layers.push(Layer::Relu);
            }
            layers.push(Layer::Linear {
                inp: pair[0],
                out: pair[1],
            });
        }
        layers.push(Layer::LogSoftmax);
        Arch { layers }
    }

    /// A model of these layers, once each takes the one before's output, there is at least one
    /// Linear, and LogSoftmax comes last and only last.
    pub fn from_layers(layers: Vec<Layer>) -> Result<Arch, String> {
        let Some(Layer::Linear { inp, .. }) = layers.first() else {
            return Err("a model starts with a Linear layer".into());
        };
        let mut width = *inp;
        for (i, layer) in layers.iter().enumerate() {
            let last = i + 1 == layers.len();
            if (*layer == Layer::LogSoftmax) != last {
                return Err("a model ends with LogSoftmax, and has it only there".into());
            }
            width = layer
                .features(width)
                .map_err(|e| format!("layer {i}: {e}"))?;
        }
        Ok(Arch { layers })
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Features of each image.
    pub fn input(&self) -> usize {
        match self.layers[0] {
            Layer::Linear { inp, .. } => inp,
            _ => unreachable!("from_layers checks that a model starts with Linear"),
        }
    }

    /// Classes of the output.
    pub fn output(&self) -> usize {
        self.layers
            .iter()
            .try_fold(self.input(), |w, l| l.features(w))
            .expect("from_layers checks that the layers chain")
    }

    /// (in, out) of each Linear layer, in order.
    pub fn linear_dims(&self) -> Vec<(usize, usize)> {
        self.layers
            .iter()
            .filter_map(|l| match *l {
                Layer::Linear { inp, out } => Some((inp, out)),
                _ => None,
            })
            .collect()
    }

    /// The offset of each Linear layer's weight in the flat table, in order; its bias follows
    /// it.
    pub fn linear_offsets(&self) -> Vec<usize> {
        let at = self.offsets();
        (0..self.layers.len())
            .filter(|&i| matches!(self.layers[i], Layer::Linear { .. }))
            .map(|i| at[i])
            .collect()
    }

    /// The sizes of a model of the tutorial's kind (`Linear (ReLU Linear)* LogSoftmax`), input
    /// first, as [`Arch::mlp`] takes them; `None` for any other list.
    pub fn mlp_sizes(&self) -> Option<Vec<usize>> {
        let dims = self.linear_dims();
        let mut sizes = vec![dims[0].0];
        sizes.extend(dims.iter().map(|d| d.1));
        let hidden = &sizes[1..sizes.len() - 1];
        (Arch::mlp(sizes[0], hidden, self.output()) == *self).then_some(sizes)
    }

    /// The (name, offset, shape) table: each layer's tensors in the list's order, keyed by
    /// the layer's index (a ReLU sits between every two Linears of an MLP, so its Linears are
    /// `0`, `2`, `4`, ...).
    pub fn table(&self) -> Vec<Entry> {
        let mut t = Vec::new();
        let mut offset = 0;
        for (i, layer) in self.layers.iter().enumerate() {
            for (name, shape) in layer.params() {
                let e = Entry {
                    name: format!("{i}.{name}"),
                    offset,
                    shape,
                };
                offset += e.len();
                t.push(e);
            }
        }
        t
    }

    /// The offset of each layer's first tensor in the flat table (the end of the one before
    /// for a layer without tensors), and the table's length last.
    pub fn offsets(&self) -> Vec<usize> {
        let mut at = vec![0];
        for layer in &self.layers {
            let len: usize = layer
                .params()
                .iter()
                .map(|(_, s)| s.iter().product::<usize>())
                .sum();
            at.push(at.last().unwrap() + len);
        }
        at
    }

    pub fn param_count(&self) -> usize {
        *self.offsets().last().unwrap()
    }

    /// Multiply-adds of one forward pass for one image.
    pub fn macs_per_image(&self) -> usize {
        self.layers.iter().map(Layer::macs).sum()
    }

    /// Every layer's PyTorch default initialisation, layer after layer from one stream of
    /// `seed`.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed, INIT_STREAM);
        let mut p = vec![0f32; self.param_count()];
        let at = self.offsets();
        for (i, layer) in self.layers.iter().enumerate() {
            layer.init(&mut rng, &mut p[at[i]..at[i + 1]]);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tutorial_table() {
        let a = Arch::mlp(784, &[128, 128, 64, 64], 10);
        assert_eq!(a.layers().len(), 10);
        assert_eq!(a.layers()[1], Layer::Relu);
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
        assert_eq!(a.mlp_sizes(), Some(vec![784, 128, 128, 64, 64, 10]));
        assert_eq!((a.input(), a.output()), (784, 10));
        let at = a.offsets();
        for (l, e) in t.iter().step_by(2).enumerate() {
            assert_eq!(at[2 * l], e.offset);
        }
        let p = a.init(1);
        let b0 = 1.0 / 28.0;
        assert!(p[t[0].range()].iter().all(|x| x.abs() <= b0));
        assert!(p[t[8].range()].iter().all(|x| x.abs() <= 0.125));
        assert!(p[t[8].range()].iter().any(|x| x.abs() > 0.1));
    }

    #[test]
    fn a_list_is_checked_and_keys_follow_its_indices() {
        let lin = |inp, out| Layer::Linear { inp, out };
        let two = Arch::from_layers(vec![lin(6, 5), lin(5, 3), Layer::LogSoftmax]).unwrap();
        let names: Vec<_> = two.table().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["0.weight", "0.bias", "1.weight", "1.bias"]);
        // Linear, Linear is a valid model, but not of the tutorial's kind.
        assert_eq!(two.mlp_sizes(), None);
        let err = |layers| Arch::from_layers(layers).unwrap_err();
        assert_eq!(
            err(vec![lin(6, 5), lin(4, 3), Layer::LogSoftmax]),
            "layer 1: Linear(4, 3) follows a layer of 5 outputs"
        );
        assert!(err(vec![lin(6, 5)]).contains("ends with LogSoftmax"));
        assert!(err(vec![lin(6, 5), Layer::LogSoftmax, Layer::LogSoftmax]).contains("only"));
        assert!(err(vec![Layer::Relu, lin(6, 5), Layer::LogSoftmax]).contains("starts"));
        assert!(err(Vec::new()).contains("starts"));
    }
}
