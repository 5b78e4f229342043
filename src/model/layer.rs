//! One layer of a model: its shape rule, its tensors, its initialisation. A layer kind is an
//! arm of [`Layer`]; its CPU twin is an arm of `cpu::layers`.

use crate::rng::Rng;

/// The shape of one sample between two layers, PyTorch's `[channels, height, width]`; a flat
/// vector of `n` features is `[n, 1, 1]`.
pub type Shape = [usize; 3];

/// A probability of dropping (`p` of `nn.Dropout`), from 0 up to but excluding 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropP(f32);

// From 0 to 1, never NaN: a total order holds.
impl Eq for DropP {}

impl DropP {
    pub fn new(p: f64) -> Result<DropP, String> {
        match (0.0..1.0).contains(&p) {
            true => Ok(DropP(p as f32)),
            false => Err(format!(
                "dropout {p}: expected a probability from 0 up to 1"
            )),
        }
    }
    pub fn get(self) -> f32 {
        self.0
    }
}

/// `nn.Conv2d(cin, cout, k, stride, padding)` with a square kernel and the same stride and
/// zero padding along both axes: weight `[cout, cin, k, k]`, bias `[cout]`. The recipes'
/// convolutions are [`Conv2d::new`]'s (stride 1, no padding); the CPU twin, the WGSL kernel
/// and their check take the stride and padding as values, so another convolution is a value
/// of this type, not a new kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Conv2d {
    /// `nn.Conv2d(cin, cout, k)`: stride 1, no padding.
    pub const fn new(cin: usize, cout: usize, k: usize) -> Conv2d {
        Conv2d {
            cin,
            cout,
            k,
            stride: 1,
            pad: 0,
        }
    }

    /// The output's height and width for an input of `h` by `w`, PyTorch's
    /// `(h + 2 * pad - k) / stride + 1`; None where the kernel does not fit once, or the
    /// padding is more than half the kernel (which PyTorch refuses).
    pub fn out_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let fits = |n: usize| n + 2 * self.pad >= self.k;
        let ok = self.k > 0 && self.stride > 0 && 2 * self.pad <= self.k && fits(h) && fits(w);
        let out = |n: usize| (n + 2 * self.pad - self.k) / self.stride + 1;
        ok.then(|| (out(h), out(w)))
    }

    /// Floats of the weight.
    pub fn weight_len(&self) -> usize {
        self.cout * self.cin * self.k * self.k
    }
}

/// One module of the model, as PyTorch names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// `nn.Linear(inp, out)` on a flat input: weight `[out, inp]`, bias `[out]`.
    Linear { inp: usize, out: usize },
    /// `nn.Conv2d`, see [`Conv2d`].
    Conv2d(Conv2d),
    /// `nn.MaxPool2d(2)` (`F.max_pool2d(x, 2)`): 2x2 windows, stride 2, an odd last row or
    /// column dropped.
    MaxPool2d,
    /// `nn.ReLU()`.
    Relu,
    /// `nn.Dropout(p)` while training: each element zeroed with probability p, the others
    /// scaled by 1/(1-p); nothing when evaluating.
    Dropout(DropP),
    /// `nn.Dropout2d(p)`: whole channels zeroed, as Dropout does elements.
    Dropout2d(DropP),
    /// `torch.flatten(x, 1)`: `[c, h, w]` to `[c*h*w]` in PyTorch's order (channel, row, column).
    Flatten,
    /// `nn.LogSoftmax(dim=1)`: the last layer, whose output NLLLoss reads.
    LogSoftmax,
}

impl Layer {
    /// The layer's tensors, (name, shape), in `state_dict` order.
    pub fn params(&self) -> Vec<(&'static str, Vec<usize>)> {
        match *self {
            Layer::Linear { inp, out } => vec![("weight", vec![out, inp]), ("bias", vec![out])],
            Layer::Conv2d(Conv2d { cin, cout, k, .. }) => {
                vec![("weight", vec![cout, cin, k, k]), ("bias", vec![cout])]
            }
            _ => Vec::new(),
        }
    }

    /// Floats of the layer's tensors.
    pub fn param_len(&self) -> usize {
        self.params()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    /// The shape out for the shape `x` in, or why the layer cannot take it.
    pub fn output(&self, x: Shape) -> Result<Shape, String> {
        let [c, h, w] = x;
        match *self {
            Layer::Linear { inp, out } if x == [inp, 1, 1] => Ok([out, 1, 1]),
            Layer::Linear { .. } if h * w != 1 => Err(format!(
                "{self} takes a flat input, not {c}x{h}x{w} (put Flatten before it)"
            )),
            Layer::Linear { .. } => Err(format!("{self} follows a layer of {c} outputs")),
            Layer::Conv2d(conv) => match conv.out_hw(h, w) {
                Some((ho, wo)) if c == conv.cin => Ok([conv.cout, ho, wo]),
                _ => Err(format!("{self} cannot take {c}x{h}x{w}")),
            },
            Layer::MaxPool2d if h >= 2 && w >= 2 => Ok([c, h / 2, w / 2]),
            Layer::MaxPool2d => Err(format!("{self} cannot take {c}x{h}x{w}")),
            Layer::Flatten => Ok([c * h * w, 1, 1]),
            Layer::Relu | Layer::Dropout(_) | Layer::Dropout2d(_) | Layer::LogSoftmax => Ok(x),
        }
    }

    /// PyTorch's default initialisation of the layer's tensors, `p` holding them in order:
    /// `nn.Linear` and `nn.Conv2d` draw weight and bias each uniform in
    /// [-1/sqrt(fan_in), 1/sqrt(fan_in)] (kaiming_uniform with a = sqrt(5) reduces to this),
    /// fan_in being `inp`, or `cin * k * k`.
    pub(super) fn init(&self, rng: &mut Rng, p: &mut [f32]) {
        let fan_in = match *self {
            Layer::Linear { inp, .. } => inp,
            Layer::Conv2d(Conv2d { cin, k, .. }) => cin * k * k,
            _ => return,
        };
        let bound = (1.0 / (fan_in as f64).sqrt()) as f32;
        for x in p {
            *x = rng.uniform(-bound, bound);
        }
    }

    /// Multiply-adds of the layer's forward pass for one sample of shape `x`.
    pub fn macs(&self, x: Shape) -> usize {
        let out = self.output(x).map_or(0, |s| s.iter().product());
        match *self {
            Layer::Linear { inp, out } => inp * out,
            Layer::Conv2d(Conv2d { cin, k, .. }) => out * cin * k * k,
            _ => 0,
        }
    }

    /// The same layer with dropping probability `p`, if it drops.
    pub fn with_dropout(self, p: DropP) -> Layer {
        match self {
            Layer::Dropout(_) => Layer::Dropout(p),
            Layer::Dropout2d(_) => Layer::Dropout2d(p),
            other => other,
        }
    }
}

impl Layer {
    /// One layer of every kind but LogSoftmax (the loss head's, in every network) with an
    /// input shape no tile divides: what the CPU twin's f64 gradient check of every kind
    /// (`cpu/tests.rs`) runs. A new kind adds its own here; the test below does not compile
    /// until the new arm is named, and fails until its example is listed.
    pub fn examples() -> Vec<(Layer, Shape)> {
        let p = DropP(0.4);
        let strided = Conv2d {
            stride: 2,
            pad: 1,
            ..Conv2d::new(3, 2, 3)
        };
        vec![
            (Layer::Linear { inp: 7, out: 5 }, [7, 1, 1]),
            (Layer::Conv2d(Conv2d::new(3, 4, 3)), [3, 7, 6]),
            (Layer::Conv2d(strided), [3, 7, 6]),
            (Layer::MaxPool2d, [3, 7, 9]),
            (Layer::Relu, [3, 5, 4]),
            (Layer::Dropout(p), [3, 5, 4]),
            (Layer::Dropout2d(p), [3, 5, 4]),
            (Layer::Flatten, [3, 5, 4]),
        ]
    }
}

/// As PyTorch's constructors read: `Linear(784, 128)`, `Conv2d(1, 10, 5)`,
/// `Conv2d(1, 8, 3, stride=2, padding=1)`, `ReLU()`.
impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Layer::Linear { inp, out } => write!(f, "Linear({inp}, {out})"),
            Layer::Conv2d(c) => {
                write!(f, "Conv2d({}, {}, {}", c.cin, c.cout, c.k)?;
                if c.stride != 1 {
                    write!(f, ", stride={}", c.stride)?;
                }
                if c.pad != 0 {
                    write!(f, ", padding={}", c.pad)?;
                }
                write!(f, ")")
            }
            Layer::MaxPool2d => write!(f, "MaxPool2d(2)"),
            Layer::Relu => write!(f, "ReLU()"),
            Layer::Dropout(p) => write!(f, "Dropout({})", p.get()),
            Layer::Dropout2d(p) => write!(f, "Dropout2d({})", p.get()),
            Layer::Flatten => write!(f, "Flatten()"),
            Layer::LogSoftmax => write!(f, "LogSoftmax(dim=1)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind has an example: `kind` names every arm (no wildcard), so a new arm does not
    /// compile until it has a number here, and then this fails until `examples` lists it.
    #[test]
    fn every_kind_has_an_example() {
        const KINDS: usize = 8;
        fn kind(l: &Layer) -> usize {
            match l {
                Layer::Linear { .. } => 0,
                Layer::Conv2d(_) => 1,
                Layer::MaxPool2d => 2,
                Layer::Relu => 3,
                Layer::Dropout(_) => 4,
                Layer::Dropout2d(_) => 5,
                Layer::Flatten => 6,
                Layer::LogSoftmax => 7,
            }
        }
        let mut seen = [false; KINDS];
        seen[kind(&Layer::LogSoftmax)] = true;
        for (l, x) in Layer::examples() {
            seen[kind(&l)] = true;
            assert!(l.output(x).is_ok(), "{l} cannot take its example's shape");
        }
        assert!(
            seen.iter().all(|&s| s),
            "a kind without an example: {seen:?}"
        );
    }
}
