//! The model: a list of layers, as an `nn.Sequential` lists its modules or a module's
//! `forward` calls them, and the flat parameter table derived from it that both backends
//! share.
//!
//! Convention: every tensor is in PyTorch layout (a Linear's weight `[out, in]`, a Conv2d's
//! `[cout, cin, k, k]`), row-major, in the list's order, each layer's weight before its bias,
//! in one flat f32 buffer; a tensor's key is `<layer's name>.<tensor>` as `state_dict` names
//! it. Gradients and the optimizer's state use the same table.

mod layer;
mod nets;

pub use layer::{Conv2d, DropP, Layer, Shape};

use crate::rng::{INIT_STREAM, Rng};

/// A model: its input's shape and its layers in order, each taking the one before's output,
/// LogSoftmax last; each layer's name is the prefix of its tensors' keys (its index in an
/// `nn.Sequential`, or the attribute of a module class: `conv1`). Built only through
/// [`Arch::from_layers`], [`Arch::named`] or a net of `nets`, which check all that.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arch {
    input: Shape,
    layers: Vec<Layer>,
    names: Vec<String>,
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
    /// A model of these layers taking samples of shape `input`, keyed as an `nn.Sequential`
    /// (by index), once each layer takes the one before's output and LogSoftmax comes last
    /// and only last, on a flat vector.
    pub fn from_layers(input: Shape, layers: Vec<Layer>) -> Result<Arch, String> {
        let names = (0..layers.len()).map(|i| i.to_string()).collect();
        Arch::named(input, layers, names)
    }

    /// As [`Arch::from_layers`], each layer's tensors keyed by `names`.
    pub fn named(input: Shape, layers: Vec<Layer>, names: Vec<String>) -> Result<Arch, String> {
        if layers.last() != Some(&Layer::LogSoftmax) {
            return Err("a model ends with LogSoftmax, and has it only there".into());
        }
        let mut shape = input;
        for (i, layer) in layers.iter().enumerate() {
            if *layer == Layer::LogSoftmax && (i + 1 < layers.len() || shape[1] * shape[2] != 1) {
                return Err(
                    "a model ends with LogSoftmax, and has it only there, on a flat vector".into(),
                );
            }
            shape = layer.output(shape).map_err(|e| format!("layer {i}: {e}"))?;
        }
        assert_eq!(names.len(), layers.len(), "one name per layer");
        Ok(Arch {
            input,
            layers,
            names,
        })
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The shape of one sample going into the first layer.
    pub fn input_shape(&self) -> Shape {
        self.input
    }

    /// The shape going into each layer, and the output's last.
    pub fn shapes(&self) -> Vec<Shape> {
        let mut out = vec![self.input];
        for layer in &self.layers {
            let next = layer.output(*out.last().unwrap());
            out.push(next.expect("named() checks that the layers chain"));
        }
        out
    }

    /// Features of each sample.
    pub fn input(&self) -> usize {
        self.input.iter().product()
    }

    /// Classes of the output.
    pub fn output(&self) -> usize {
        self.shapes().last().unwrap()[0]
    }

    /// The same model with every dropout layer's probability `p`.
    pub fn with_dropout(&self, p: DropP) -> Arch {
        let layers = self.layers.iter().map(|l| l.with_dropout(p)).collect();
        Arch {
            layers,
            ..self.clone()
        }
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

    /// The sizes of a model of the tutorial's kind (`Linear (ReLU Linear)* LogSoftmax` on a
    /// flat input, keyed by index), input first, as [`Arch::mlp`] takes them; `None` for any
    /// other list.
    pub fn mlp_sizes(&self) -> Option<Vec<usize>> {
        let dims = self.linear_dims();
        let mut sizes = vec![dims.first()?.0];
        sizes.extend(dims.iter().map(|d| d.1));
        let hidden = &sizes[1..sizes.len() - 1];
        (Arch::mlp(sizes[0], hidden, self.output()) == *self).then_some(sizes)
    }

    /// The (name, offset, shape) table: each layer's tensors in the list's order, keyed by
    /// the layer's name (a ReLU sits between every two Linears of an MLP, so its Linears are
    /// `0`, `2`, `4`, ...).
    pub fn table(&self) -> Vec<Entry> {
        let mut t = Vec::new();
        let mut offset = 0;
        for (layer, prefix) in self.layers.iter().zip(&self.names) {
            for (name, shape) in layer.params() {
                let e = Entry {
                    name: format!("{prefix}.{name}"),
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
            at.push(at.last().unwrap() + layer.param_len());
        }
        at
    }

    pub fn param_count(&self) -> usize {
        *self.offsets().last().unwrap()
    }

    /// Multiply-adds of one forward pass for one sample.
    pub fn macs_per_image(&self) -> usize {
        let shapes = self.shapes();
        self.layers
            .iter()
            .zip(&shapes)
            .map(|(l, &x)| l.macs(x))
            .sum()
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
        let from = |layers| Arch::from_layers([6, 1, 1], layers);
        let two = from(vec![lin(6, 5), lin(5, 3), Layer::LogSoftmax]).unwrap();
        let names: Vec<_> = two.table().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["0.weight", "0.bias", "1.weight", "1.bias"]);
        // Linear, Linear is a valid model, but not of the tutorial's kind.
        assert_eq!(two.mlp_sizes(), None);
        let err = |layers| from(layers).unwrap_err();
        assert_eq!(
            err(vec![lin(6, 5), lin(4, 3), Layer::LogSoftmax]),
            "layer 1: Linear(4, 3) follows a layer of 5 outputs"
        );
        assert!(err(vec![lin(6, 5)]).contains("ends with LogSoftmax"));
        assert!(err(vec![lin(6, 5), Layer::LogSoftmax, Layer::LogSoftmax]).contains("only"));
        assert!(err(vec![lin(6, 5), Layer::LogSoftmax, lin(5, 3)]).contains("only"));
        assert!(err(Vec::new()).contains("ends with"));
        let conv = Layer::Conv2d(Conv2d::new(1, 2, 3));
        assert_eq!(
            Arch::from_layers([1, 5, 5], vec![conv, Layer::LogSoftmax]).unwrap_err(),
            "a model ends with LogSoftmax, and has it only there, on a flat vector"
        );
        assert_eq!(
            err(vec![conv]),
            "a model ends with LogSoftmax, and has it only there"
        );
        let unflat = Arch::from_layers([1, 5, 5], vec![conv, lin(18, 3), Layer::LogSoftmax]);
        assert_eq!(
            unflat.unwrap_err(),
            "layer 1: Linear(18, 3) takes a flat input, not 2x3x3 (put Flatten before it)"
        );
    }
}
