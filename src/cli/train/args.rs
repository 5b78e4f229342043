//! The flags of `mnist-wgpu train`.

use std::path::PathBuf;

use clap::Args;

use mnist_wgpu::data::Normalize;
use mnist_wgpu::flags;
use mnist_wgpu::model::DropP;
use mnist_wgpu::recipe::Preset;

use crate::cli::args::{
    Floats, Hidden, RunArgs, Seeds, at_least_one, hidden, lr_list, momentum_list, seeds,
};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// The model and its recipe, each value of which its flag overrides: mlp (the tutorial's),
    /// cnn-small (pytorch/examples' MNIST CNN of 2018, the tutorial's third reference; SGD lr
    /// 0.01 momentum 0.5, batch 64, 3 epochs, normalize 0.1307,0.3081) or cnn (today's
    /// pytorch/examples: Adadelta lr 1, gamma 0.7, batch 64, 14 epochs, normalize
    /// 0.1307,0.3081)
    #[arg(long, value_enum, default_value_t = Preset::Mlp)]
    pub recipe: Preset,
    /// Passes over the training set [default: the recipe's: mlp 5, cnn-small 3, cnn 14]
    #[arg(long, value_parser = at_least_one)]
    pub epochs: Option<usize>,
    /// Images per step; the last batch of an epoch may be smaller [default: the recipe's: mlp
    /// 32, the CNNs 64]
    #[arg(long, value_parser = at_least_one)]
    pub batch_size: Option<usize>,
    /// Every dropout layer's probability of dropping (0: none drops, for comparisons)
    /// [default: the recipe's: 0.5, and 0.25 before cnn's flatten]
    #[arg(long, value_name = "P", value_parser = flags::dropout)]
    pub dropout: Option<DropP>,
    /// The optimizer, with PyTorch's update rule and defaults: sgd (momentum, no dampening),
    /// adam (betas 0.9, 0.999, eps 1e-8) or adadelta (rho 0.9, eps 1e-6) [default: sgd, or
    /// the resumed run's]
    #[arg(long, value_name = "NAME", value_parser = flags::optimizer)]
    pub optimizer: Option<String>,
    /// Learning rate of the first epoch; a comma list trains one model per value, side by side
    /// [default: the optimizer's: sgd 0.003 (the tutorial's), adam 0.001, adadelta 1]
    #[arg(long, value_name = "LR[,LR...]", value_parser = lr_list, allow_negative_numbers = true)]
    pub lr: Option<Floats>,
    /// SGD momentum (PyTorch's rule, no dampening); a comma list trains one model per value
    /// [default: 0.9]
    #[arg(long, value_name = "M[,M...]", value_parser = momentum_list, allow_negative_numbers = true)]
    pub momentum: Option<Floats>,
    /// Weight decay (L2), added to the gradient as PyTorch's `weight_decay`.
    #[arg(long, value_name = "W", default_value_t = 0.0, value_parser = flags::weight_decay, allow_negative_numbers = true)]
    pub weight_decay: f64,
    /// StepLR(step_size=1, gamma): the learning rate is multiplied by G after every epoch
    /// [default: the recipe's: 1, cnn 0.7]
    #[arg(long, value_name = "G", value_parser = flags::gamma, allow_negative_numbers = true)]
    pub gamma: Option<f64>,
    /// torchvision's Normalize((MEAN,), (STD,)) after ToTensor [default: the tutorial's 0.5,0.5;
    /// pytorch/examples' MNIST uses 0.1307,0.3081]
    #[arg(long, value_name = "MEAN,STD", value_parser = Normalize::parse, allow_negative_numbers = true)]
    pub normalize: Option<Normalize>,
    /// Walk the training set in file order every epoch (pytorch/examples on a CPU), instead
    /// of the tutorial's shuffle.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Hidden layer sizes, comma-separated; one or more [default: 128,128,64,64, or those of --init]
    #[arg(long, value_parser = hidden)]
    pub hidden: Option<Hidden>,
    /// Seed of the initial weights and of every epoch's shuffle.
    #[arg(long, default_value_t = flags::SEED)]
    pub seed: u64,
    /// Train one model per seed, side by side in the same dispatches: a range `1-10` or a list
    /// `1,4,9` (with lists of --lr and --momentum, every combination).
    #[arg(long, value_name = "LIST", value_parser = seeds, conflicts_with = "seed")]
    pub seeds: Option<Seeds>,
    /// Start from the weights in this model file (safetensors) instead of a random initialisation.
    #[arg(long, value_name = "PATH")]
    pub init: Option<PathBuf>,
    /// Where to save the trained model (safetensors, PyTorch's state_dict keys) [default:
    /// mnist_mlp.safetensors, or where the resumed run saves]
    #[arg(long, value_name = "PATH")]
    pub save: Option<PathBuf>,
    /// Do not save the trained model.
    #[arg(long, conflicts_with = "save")]
    pub no_save: bool,
    /// Directory for this run's checkpoint (after every epoch) and metrics [default: a new
    /// runs/run-NNN]
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Continue the run in DIR from its checkpoint, with the recipe it was started with (the
    /// outputs --save, --no-save, --metrics, --plot, --quiet and --profile may change).
    #[arg(long, value_name = "DIR", conflicts_with_all = [
        "epochs", "batch_size", "lr", "momentum", "hidden", "seed", "seeds", "init", "run_dir",
        "dataset", "data_dir", "weight_decay", "gamma", "normalize", "no_shuffle", "recipe",
        "dropout",
    ])]
    pub resume: Option<PathBuf>,
    /// Also write the per-epoch metrics as CSV here (the run directory always gets metrics.csv).
    #[arg(long, value_name = "PATH")]
    pub metrics: Option<PathBuf>,
    /// Draw the training and test loss and the test accuracy per epoch into this PNG.
    #[arg(long, value_name = "PATH.png")]
    pub plot: Option<PathBuf>,
    /// Print only the final accuracy.
    #[arg(long)]
    pub quiet: bool,
    /// Time every kernel with GPU timestamp queries and print a table at the end (where the
    /// adapter has them; the timestamps themselves add a little to every dispatch).
    #[arg(long)]
    pub profile: bool,
    #[command(flatten)]
    pub run: RunArgs,
}
