//! The layered schedule of any list of layers (`model::Arch`): the list read once into nodes,
//! each one operation's dispatches forward and backward, walked in the list's order and back
//! (`walk`). A Linear is the walk's own; every other layer is the node its kind reads it into
//! (`ops::KINDS`), so the walk names no other kind. The tutorial's MLP keeps its own walk in `gpu::layered`, whose dispatches and bits
//! are the ones this round promised to keep; a CNN's list comes here.
//!
//! Every tensor between two nodes is feature-major, `[features, bp]` per model with the
//! features in PyTorch's order (channel, row, column), so Flatten copies nothing and a Linear
//! reads a conv's output as it reads a Linear's.

pub mod walk;

use crate::gpu::layout::{DeviceLayout, LayerAt};
use crate::gpu::ops::KINDS;
use crate::gpu::ops::kind::{self, Site};
use crate::model::{Arch, Layer};

/// What the walk dispatches for one layer, or two: a Linear takes the ReLU after it into its
/// own kernels, and the last Linear the LogSoftmax (with NLLLoss, when training); a layer of
/// any other kind is the node its kind reads it into (`ops::KINDS`).
#[derive(Debug)]
pub enum Op {
    Linear { at: LayerAt, relu: bool, last: bool },
    Layer(Box<dyn kind::Node>),
}

/// One node of the walk: its op, the value it reads and the value it writes (indices into
/// [`Net::features`]; value 0 is the batch's input).
#[derive(Debug)]
pub struct Node {
    pub op: Op,
    pub input: usize,
    pub output: usize,
    /// The index of its (first) layer in the list, for labels.
    pub layer: usize,
}

/// A list of layers as the walk runs it.
#[derive(Debug)]
pub struct Net {
    pub nodes: Vec<Node>,
    /// The features of each value, per sample.
    pub features: Vec<usize>,
}

impl Net {
    /// The nodes of `layout`'s list, or why the layered schedule cannot run it: a Linear must
    /// be followed by ReLU, or be the last layer before LogSoftmax; and a Linear's input
    /// gradient comes out masked where its input is not positive (the ReLU before it), so
    /// every Linear but the first must read a ReLU's output, through max-pooling, dropout or
    /// Flatten only.
    pub fn of(layout: &DeviceLayout) -> Result<Net, String> {
        let arch = &layout.arch;
        let (layers, shapes) = (arch.layers(), arch.shapes());
        let mut net = Net {
            nodes: Vec::new(),
            features: vec![arch.input()],
        };
        // Whether each value is a ReLU's output (or one's, pooled or dropped).
        let mut relu_out = vec![false];
        let mut i = 0;
        while i < layers.len() {
            let input = net.features.len() - 1;
            // Flatten: the same floats in the same order, so no node and no new value.
            let Some((op, taken, relu)) = op_at(layout, i, relu_out[input])? else {
                i += 1;
                continue;
            };
            net.features.push(shapes[i + taken].iter().product());
            relu_out.push(relu);
            net.nodes.push(Node {
                op,
                input,
                output: input + 1,
                layer: i,
            });
            i += taken;
        }
        Ok(net)
    }

    /// The values a Linear reads, which need a batch-major copy too.
    pub fn linear_inputs(&self) -> Vec<usize> {
        (self.nodes.iter())
            .filter(|n| matches!(n.op, Op::Linear { .. }))
            .map(|n| n.input)
            .collect()
    }

    /// The widest value, in features.
    pub fn widest(&self) -> usize {
        self.features.iter().copied().max().unwrap_or(0)
    }
}

/// The widest tensor between two layers of a model the GPU runs, in features per sample, or
/// why the GPU cannot run it ([`Net::of`]; the fused schedule runs the tutorial's kind only);
/// the CPU backend runs any list of layers.
pub fn runnable(arch: &Arch) -> Result<usize, String> {
    Net::of(&DeviceLayout::new(arch)).map(|n| n.widest())
}

/// The op that starts at layer `i` of `layout`'s list, the layers it takes and whether its
/// output is a ReLU's (`relu_in`: whether its input is); None for Flatten.
fn op_at(
    layout: &DeviceLayout,
    i: usize,
    relu_in: bool,
) -> Result<Option<(Op, usize, bool)>, String> {
    let (arch, layers) = (&layout.arch, layout.arch.layers());
    match layers[i] {
        Layer::Linear { .. } => return linear_op(layout, i, relu_in).map(Some),
        Layer::Flatten => return Ok(None),
        Layer::LogSoftmax => return Err(refusal(arch, i, "does not follow the last Linear")),
        _ => {}
    }
    let site = Site {
        layer: layers[i],
        index: i,
        x_shape: arch.shapes()[i],
        tensors: layout.tensors[i].clone(),
    };
    let Some(node) = KINDS.iter().find_map(|k| (k.node)(&site)) else {
        return Err(refusal(arch, i, "is of no kind the GPU runs"));
    };
    let relu = node.relu_out(relu_in);
    Ok(Some((Op::Layer(node), 1, relu)))
}

/// A Linear at layer `i` with what follows it: ReLU (into its kernels), or LogSoftmax last.
fn linear_op(layout: &DeviceLayout, i: usize, relu_in: bool) -> Result<(Op, usize, bool), String> {
    let (arch, layers) = (&layout.arch, layout.arch.layers());
    let nth = layers[..i]
        .iter()
        .filter(|l| matches!(l, Layer::Linear { .. }))
        .count();
    let at = layout.layers[nth];
    if i > 0 && !relu_in {
        return Err(refusal(arch, i, "reads no ReLU's output"));
    }
    let (relu, last) = match layers.get(i + 1) {
        Some(Layer::Relu) => (true, false),
        Some(Layer::LogSoftmax) if i + 2 == layers.len() => (false, true),
        _ => {
            return Err(refusal(
                arch,
                i,
                "is followed by neither ReLU nor LogSoftmax",
            ));
        }
    };
    Ok((Op::Linear { at, relu, last }, 2, relu))
}

fn refusal(arch: &Arch, i: usize, why: &str) -> String {
    format!(
        "the layered schedule cannot run layer {i}, {}, which {why}; use --device cpu",
        arch.layers()[i]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Conv2d;

    #[test]
    fn the_schedules_refuse_a_list_they_cannot_run() {
        assert_eq!(runnable(&Arch::mlp(5, &[3], 2)), Ok(5));
        let lin = |inp, out| Layer::Linear { inp, out };
        let layers = vec![lin(5, 3), lin(3, 2), Layer::LogSoftmax];
        let no_relu = Arch::from_layers([5, 1, 1], layers).unwrap();
        assert_eq!(
            runnable(&no_relu).unwrap_err(),
            "the layered schedule cannot run layer 0, Linear(5, 3), which is followed by neither \
             ReLU nor LogSoftmax; use --device cpu"
        );
    }

    #[test]
    fn the_cnns_read_into_nodes() {
        let small = Net::of(&DeviceLayout::new(&Arch::cnn_small())).unwrap();
        // conv, pool, relu, conv, drop2d, pool, relu, (flatten), fc1+relu, drop, fc2+logsoftmax
        assert_eq!(small.nodes.len(), 10);
        assert_eq!(
            small.features,
            [784, 5760, 1440, 1440, 1280, 1280, 320, 320, 50, 50, 10]
        );
        let cnn = Net::of(&DeviceLayout::new(&Arch::cnn())).unwrap();
        assert_eq!(cnn.features[1..4], [21632, 21632, 36864]);
        assert!(Net::of(&DeviceLayout::new(&Arch::mlp(784, &[128, 64], 10))).is_ok());
    }

    #[test]
    fn a_linear_reading_no_relu_is_refused() {
        let lin = |inp, out| Layer::Linear { inp, out };
        let layers = vec![
            Layer::Conv2d(Conv2d::new(1, 2, 3)),
            Layer::Flatten,
            lin(2 * 4 * 4, 5),
            Layer::Relu,
            lin(5, 3),
            Layer::LogSoftmax,
        ];
        let arch = Arch::from_layers([1, 6, 6], layers).unwrap();
        assert_eq!(
            Net::of(&DeviceLayout::new(&arch)).unwrap_err(),
            "the layered schedule cannot run layer 2, Linear(32, 5), which reads no ReLU's output; \
             use --device cpu"
        );
    }
}
