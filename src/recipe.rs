//! How a model trains: the recipe (the tutorial's hyper-parameters and what PyTorch's other
//! recipes change), and how the header and the page name it.

use crate::data::Normalize;
use crate::optim::{Hyper, Optimizer};

/// How one model trains: the tutorial's hyper-parameters, and what PyTorch's other recipes
/// change (the optimizer, weight decay, StepLR's gamma, the order of the samples).
#[derive(Clone, Debug)]
pub struct Recipe {
    pub epochs: usize,
    pub batch_size: usize,
    /// The first epoch's learning rate.
    pub lr: f64,
    pub optimizer: Optimizer,
    /// Added to the gradient times the parameter, as PyTorch's `weight_decay`.
    pub weight_decay: f64,
    /// `StepLR(step_size=1, gamma)`: the learning rate is multiplied by it after each epoch (1:
    /// no scheduler).
    pub gamma: f64,
    /// Shuffle every epoch (the tutorial's DataLoader); false: file order every epoch.
    pub shuffle: bool,
    pub seed: u64,
}

impl Recipe {
    /// The tutorial's recipe with `lr`, SGD `momentum` and `seed`.
    pub fn tutorial(lr: f64, momentum: f64, seed: u64) -> Recipe {
        Recipe {
            epochs: crate::flags::EPOCHS,
            batch_size: crate::flags::BATCH_SIZE,
            lr,
            optimizer: Optimizer::Sgd { momentum },
            weight_decay: 0.0,
            gamma: 1.0,
            shuffle: true,
            seed,
        }
    }

    /// Batches per epoch; the last one may be partial.
    pub fn steps_per_epoch(&self, n: usize) -> usize {
        n.div_ceil(self.batch_size)
    }

    /// SGD's momentum coefficient (0 for the other optimizers).
    pub fn momentum(&self) -> f64 {
        self.optimizer.momentum()
    }

    /// What the optimizer's rule takes from this model in epoch `epoch`.
    pub fn hyper(&self, epoch: usize) -> Hyper {
        Hyper {
            lr: crate::optim::lr_at(self.lr, self.gamma, epoch),
            momentum: self.momentum(),
            weight_decay: self.weight_decay,
        }
    }

    /// The optimizer's values of step `step` of epoch `epoch` of a split of `n` samples (Adam
    /// counts its steps over the whole run, from 1).
    pub fn corrections(&self, n: usize, epoch: usize, step: usize) -> [f32; 2] {
        let t = (epoch * self.steps_per_epoch(n) + step + 1) as u64;
        self.optimizer.corrections(t)
    }
}

/// A single run's recipe for the header and the chart: `lr 0.003 | momentum 0.9` (the
/// tutorial's words for SGD), `adam | lr 0.001`, then what differs from the tutorial's
/// (`weight decay`, `StepLR gamma`, `normalize`, `file order`).
pub fn recipe_words(r: &Recipe, normalize: Normalize) -> String {
    let words = match r.optimizer {
        Optimizer::Sgd { momentum } => format!("lr {} | momentum {momentum}", r.lr),
        other => format!("{} | lr {}", other.name(), r.lr),
    };
    words + &recipe_extras(r, normalize)
}

/// What `r` and `normalize` change from the tutorial's recipe besides the optimizer, its
/// learning rate and momentum: ` | weight decay 0.0001 | StepLR gamma 0.7`, or nothing.
pub fn recipe_extras(r: &Recipe, normalize: Normalize) -> String {
    let mut words = String::new();
    if r.weight_decay != 0.0 {
        words += &format!(" | weight decay {}", r.weight_decay);
    }
    if r.gamma != 1.0 {
        words += &format!(" | StepLR gamma {}", r.gamma);
    }
    if normalize != Normalize::TUTORIAL {
        words += &format!(" | normalize {}", normalize.name());
    }
    if !r.shuffle {
        words += " | file order";
    }
    words
}

/// What `--recipe` names: a model and the recipe it trains with by default, from its source.
/// Every value can be overridden by its flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// The tutorial's MLP: 784-128-128-64-64-10, SGD lr 0.003 momentum 0.9, batch 32, 5 epochs.
    #[default]
    Mlp,
    /// pytorch/examples' MNIST CNN until 2018 (the tutorial's third reference): SGD lr 0.01
    /// momentum 0.5, batch 64, normalised (0.1307, 0.3081), 3 epochs.
    CnnSmall,
    /// Today's pytorch/examples MNIST CNN: Adadelta lr 1.0, StepLR gamma 0.7, batch 64, 14
    /// epochs, normalised (0.1307, 0.3081).
    Cnn,
}

/// A preset's defaults, before the flags.
pub struct Defaults {
    pub epochs: usize,
    pub batch_size: usize,
    /// The optimizer's name and SGD's momentum.
    pub optimizer: &'static str,
    pub momentum: f64,
    /// The learning rate with that optimizer (another optimizer takes its own default).
    pub lr: f64,
    pub gamma: f64,
    pub normalize: Normalize,
}

/// pytorch/examples' MNIST normalisation, torchvision's `Normalize((0.1307,), (0.3081,))`.
pub const EXAMPLES_NORMALIZE: Normalize = Normalize {
    mean: 0.1307,
    std: 0.3081,
};

impl Defaults {
    /// The first learning rate with `optimizer`: the recipe's with the recipe's optimizer,
    /// another optimizer's own default with another.
    pub fn lr_for(&self, optimizer: &Optimizer) -> f64 {
        match optimizer.name() == self.optimizer {
            true => self.lr,
            false => optimizer.default_lr(),
        }
    }
}

impl Preset {
    /// `--hidden` given with this recipe: only the MLP has hidden sizes to set.
    pub fn check_hidden(self, hidden: Option<&[usize]>) -> Result<(), String> {
        match (hidden, self) {
            (Some(h), Preset::Cnn | Preset::CnnSmall) => {
                let h: Vec<String> = h.iter().map(|x| x.to_string()).collect();
                Err(format!(
                    "--hidden {}: --recipe {} has no hidden sizes to set",
                    h.join(","),
                    self.name()
                ))
            }
            _ => Ok(()),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Preset::Mlp => "mlp",
            Preset::CnnSmall => "cnn-small",
            Preset::Cnn => "cnn",
        }
    }

    /// The inverse of [`Preset::name`].
    pub fn parse(s: &str) -> Option<Preset> {
        [Preset::Mlp, Preset::CnnSmall, Preset::Cnn]
            .into_iter()
            .find(|p| p.name() == s)
    }

    /// Where `train` saves the model unless `--save` says otherwise: `mnist_mlp.safetensors`,
    /// `mnist_cnn-small.safetensors`, `mnist_cnn.safetensors`.
    pub const fn model_file(self) -> &'static str {
        match self {
            Preset::Mlp => "mnist_mlp.safetensors",
            Preset::CnnSmall => "mnist_cnn-small.safetensors",
            Preset::Cnn => "mnist_cnn.safetensors",
        }
    }

    /// Where the model and its recipe come from, for the header.
    pub fn source(self) -> &'static str {
        match self {
            Preset::Mlp => "the tutorial \"MNIST with PyTorch\"",
            Preset::CnnSmall => "pytorch/examples mnist/main.py as of 2018",
            Preset::Cnn => "pytorch/examples mnist/main.py",
        }
    }

    /// The preset whose kind of model `arch` is (any dropout probability), if any.
    pub fn of(arch: &crate::model::Arch) -> Option<Preset> {
        match arch.mlp_sizes() {
            Some(_) => Some(Preset::Mlp),
            None => Preset::parse(arch.net_name()?),
        }
    }

    /// The preset's model; the MLP's hidden sizes are `hidden`.
    pub fn arch(self, hidden: &[usize]) -> crate::model::Arch {
        use crate::model::Arch;
        match self {
            Preset::Mlp => Arch::mlp(28 * 28, hidden, crate::data::CLASSES),
            Preset::CnnSmall => Arch::cnn_small(),
            Preset::Cnn => Arch::cnn(),
        }
    }

    pub fn defaults(self) -> Defaults {
        match self {
            Preset::Mlp => Defaults {
                epochs: crate::flags::EPOCHS,
                batch_size: crate::flags::BATCH_SIZE,
                optimizer: "sgd",
                momentum: crate::flags::MOMENTUM,
                lr: crate::flags::LR,
                gamma: 1.0,
                normalize: Normalize::TUTORIAL,
            },
            Preset::CnnSmall => Defaults {
                epochs: 3,
                batch_size: 64,
                optimizer: "sgd",
                momentum: 0.5,
                lr: 0.01,
                gamma: 1.0,
                normalize: EXAMPLES_NORMALIZE,
            },
            Preset::Cnn => Defaults {
                epochs: 14,
                batch_size: 64,
                optimizer: "adadelta",
                momentum: 0.0,
                lr: 1.0,
                gamma: 0.7,
                normalize: EXAMPLES_NORMALIZE,
            },
        }
    }
}
