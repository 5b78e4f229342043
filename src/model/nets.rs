//! The models of the recipes: the tutorial's MLP and the two CNNs of PyTorch's MNIST example.

use super::{Arch, Conv2d, DropP, Layer};

const fn lin(inp: usize, out: usize) -> Layer {
    Layer::Linear { inp, out }
}
const fn conv(cin: usize, cout: usize, k: usize) -> Layer {
    Layer::Conv2d(Conv2d::new(cin, cout, k))
}
fn drop(p: f64) -> DropP {
    DropP::new(p).expect("a recipe's dropout is a probability")
}

impl Arch {
    /// The tutorial's kind of model, an `nn.Sequential` of Linear layers of the given sizes
    /// with ReLU between every two, LogSoftmax last. The tutorial's is
    /// `mlp(784, &[128, 128, 64, 64], 10)`.
    pub fn mlp(input: usize, hidden: &[usize], output: usize) -> Arch {
        let mut sizes = vec![input];
        sizes.extend_from_slice(hidden);
        sizes.push(output);
        let mut layers = Vec::new();
        for (l, pair) in sizes.windows(2).enumerate() {
            if l > 0 {
                layers.push(Layer::Relu);
            }
            layers.push(lin(pair[0], pair[1]));
        }
        layers.push(Layer::LogSoftmax);
        Arch::from_layers([input, 1, 1], layers).expect("an MLP's layers chain")
    }

    /// The `Net` of pytorch/examples' mnist/main.py until 2018, the tutorial's third
    /// reference (21,840 parameters), for 28x28 images:
    ///
    /// ```text
    /// x = F.relu(F.max_pool2d(self.conv1(x), 2))                   conv1 = nn.Conv2d(1, 10, 5)
    /// x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))  conv2 = nn.Conv2d(10, 20, 5)
    /// x = x.view(-1, 320)                                          conv2_drop = nn.Dropout2d()
    /// x = F.relu(self.fc1(x))                                      fc1 = nn.Linear(320, 50)
    /// x = F.dropout(x, training=self.training)                     fc2 = nn.Linear(50, 10)
    /// return F.log_softmax(self.fc2(x))
    /// ```
    pub fn cnn_small() -> Arch {
        use Layer::*;
        let half = drop(0.5);
        let layers = [
            ("conv1", conv(1, 10, 5)),
            ("pool1", MaxPool2d),
            ("relu1", Relu),
            ("conv2", conv(10, 20, 5)),
            ("conv2_drop", Dropout2d(half)),
            ("pool2", MaxPool2d),
            ("relu2", Relu),
            ("view", Flatten),
            ("fc1", lin(320, 50)),
            ("relu3", Relu),
            ("dropout", Dropout(half)),
            ("fc2", lin(50, 10)),
            ("log_softmax", LogSoftmax),
        ];
        named([1, 28, 28], &layers)
    }

    /// The `Net` of today's pytorch/examples mnist/main.py (1,199,882 parameters):
    ///
    /// ```text
    /// conv1 = nn.Conv2d(1, 32, 3, 1)     x = relu(conv1(x)); x = relu(conv2(x))
    /// conv2 = nn.Conv2d(32, 64, 3, 1)    x = F.max_pool2d(x, 2); x = dropout1(x)
    /// dropout1 = nn.Dropout(0.25)        x = torch.flatten(x, 1); x = relu(fc1(x))
    /// dropout2 = nn.Dropout(0.5)         x = dropout2(x); x = fc2(x)
    /// fc1 = nn.Linear(9216, 128)         return F.log_softmax(x, dim=1)
    /// fc2 = nn.Linear(128, 10)
    /// ```
    pub fn cnn() -> Arch {
        use Layer::*;
        let layers = [
            ("conv1", conv(1, 32, 3)),
            ("relu1", Relu),
            ("conv2", conv(32, 64, 3)),
            ("relu2", Relu),
            ("pool", MaxPool2d),
            ("dropout1", Dropout(drop(0.25))),
            ("flatten", Flatten),
            ("fc1", lin(9216, 128)),
            ("relu3", Relu),
            ("dropout2", Dropout(drop(0.5))),
            ("fc2", lin(128, 10)),
            ("log_softmax", LogSoftmax),
        ];
        named([1, 28, 28], &layers)
    }
}

impl Arch {
    /// `cnn-small` or `cnn` when this is one of those nets (whatever its dropout), as
    /// `--recipe` names them.
    pub fn net_name(&self) -> Option<&'static str> {
        let p = DropP::new(0.0).unwrap();
        let same = |net: Arch| net.with_dropout(p) == self.with_dropout(p);
        match () {
            _ if same(Arch::cnn_small()) => Some("cnn-small"),
            _ if same(Arch::cnn()) => Some("cnn"),
            _ => None,
        }
    }
}

fn named(input: super::Shape, layers: &[(&str, Layer)]) -> Arch {
    let names = layers.iter().map(|(n, _)| n.to_string()).collect();
    let layers = layers.iter().map(|(_, l)| *l).collect();
    Arch::named(input, layers, names).expect("a recipe's layers chain")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cnns_have_pytorchs_keys_shapes_and_counts() {
        let small = Arch::cnn_small();
        let keys: Vec<_> = small
            .table()
            .iter()
            .map(|e| (e.name.clone(), e.shape.clone()))
            .collect();
        assert_eq!(keys[0], ("conv1.weight".to_string(), vec![10, 1, 5, 5]));
        assert_eq!(keys[3], ("conv2.bias".to_string(), vec![20]));
        assert_eq!(keys[4], ("fc1.weight".to_string(), vec![50, 320]));
        assert_eq!(keys.len(), 8);
        assert_eq!(small.param_count(), 21_840);
        assert_eq!(small.output(), 10);
        assert_eq!(small.mlp_sizes(), None);
        let big = Arch::cnn();
        assert_eq!(big.param_count(), 1_199_882);
        assert_eq!(big.shapes()[5], [64, 12, 12]);
        assert_eq!(big.table()[4].shape, vec![128, 9216]);
    }
}
