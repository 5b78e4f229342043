//! The `train` flags' defaults and value rules, shared by the command line and the web page
//! (whose form fields and URL query parameters carry the same names), so that both accept and
//! refuse the same values with the same words.

use crate::model::Arch;

/// `--epochs`, `--batch-size`, `--lr`, `--momentum`, `--hidden`, `--seed`: the tutorial's.
pub const EPOCHS: usize = 5;
pub const BATCH_SIZE: usize = 32;
pub const LR: f64 = crate::optim::TUTORIAL_LR;
pub const MOMENTUM: f64 = 0.9;
pub const HIDDEN: [usize; 4] = [128, 128, 64, 64];
pub const SEED: u64 = 1;

pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(v) => Ok(v),
        Err(_) => Err("expected a whole number of at least 1".into()),
    }
}

pub fn positive_finite(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err("expected a finite number greater than 0".into()),
    }
}

pub fn momentum(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        _ => Err("expected a number in [0, 1)".into()),
    }
}

/// `--optimizer`: one of `optim::NAMES`.
pub fn optimizer(s: &str) -> Result<String, String> {
    crate::optim::Optimizer::named(s, MOMENTUM).map(|o| o.name().to_string())
}

/// `--weight-decay`: 0 or more.
pub fn weight_decay(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err("expected a finite number of at least 0".into()),
    }
}

/// `--gamma`: StepLR's factor, above 0 and at most 1.
pub fn gamma(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err("expected a number above 0 and at most 1 (1: the learning rate stays)".into()),
    }
}

pub fn seed(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .map_err(|_| "expected a whole number from 0 to 18446744073709551615".into())
}

/// A dropout probability, from 0 up to 1.
pub fn dropout(s: &str) -> Result<crate::model::DropP, String> {
    let p: f64 = s
        .parse()
        .map_err(|_| format!("expected a number, not {s:?}"))?;
    crate::model::DropP::new(p).map_err(|_| "expected a probability from 0 up to 1".into())
}

/// Hidden layer sizes, comma-separated.
pub fn hidden(s: &str) -> Result<Vec<usize>, String> {
    let sizes: Result<Vec<usize>, _> = s.split(',').map(|p| at_least_one(p.trim())).collect();
    match sizes {
        Ok(v) if !v.is_empty() && v.iter().all(|&x| x <= 65536) => Ok(v),
        _ => Err("expected comma-separated layer sizes from 1 to 65536, e.g. 128,128,64,64".into()),
    }
}

/// A model as the header and the model file name it: an MLP by its layer sizes,
/// `784-128-128-64-64-10`; a recipe's CNN by the recipe's name, `cnn-small`; any other by its
/// layers.
pub fn arch_string(arch: &Arch) -> String {
    match (arch.mlp_sizes(), arch.net_name()) {
        (Some(sizes), _) => {
            let sizes: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
            sizes.join("-")
        }
        (None, Some(name)) => name.to_string(),
        (None, None) => {
            let layers: Vec<String> = arch.layers().iter().map(|l| l.to_string()).collect();
            layers.join(" ")
        }
    }
}

/// Hidden sizes as the command line writes them: `128,128,64,64`.
pub fn hidden_string(arch: &Arch) -> String {
    let dims = arch.linear_dims();
    let h: Vec<String> = dims[..dims.len() - 1]
        .iter()
        .map(|d| d.1)
        .map(|s| s.to_string())
        .collect();
    h.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_as_the_flags_are() {
        assert_eq!(hidden("128, 64").unwrap(), vec![128, 64]);
        assert!(hidden("128,0").is_err() && hidden("").is_err() && hidden("70000").is_err());
        assert!(momentum("1").is_err() && momentum("0").is_ok());
        assert!(positive_finite("inf").is_err() && positive_finite("-1").is_err());
        assert!(at_least_one("0").is_err() && seed("-1").is_err());
        let a = Arch::mlp(784, &HIDDEN, 10);
        assert_eq!(
            (arch_string(&a), hidden_string(&a)),
            ("784-128-128-64-64-10".into(), "128,128,64,64".into())
        );
    }
}
