//! A set of models trained side by side (`--seeds`, `--lr`, `--momentum` lists): every
//! combination of the lists, each a [`Recipe`] of its own with the shared epochs and batch
//! size, and how the set names each model (screen, tables, file names).

use crate::optim::Optimizer;
use crate::recipe::Recipe;

/// The lists a set is made of, as given: seeds, learning rates and momenta.
#[derive(Clone, Debug, PartialEq)]
pub struct Sweep {
    pub seeds: Vec<u64>,
    pub lrs: Vec<f64>,
    pub momenta: Vec<f64>,
}

/// The most models one run trains; a longer list is a typo more often than a plan.
pub const MAX_MODELS: usize = 4096;

impl Sweep {
    /// One model: today's single run.
    pub fn single(seed: u64, lr: f64, momentum: f64) -> Sweep {
        Sweep {
            seeds: vec![seed],
            lrs: vec![lr],
            momenta: vec![momentum],
        }
    }

    pub fn len(&self) -> usize {
        self.seeds.len() * self.lrs.len() * self.momenta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every combination, seeds outermost, then learning rates, then momenta, each `base` with
    /// its seed, learning rate and (for SGD) momentum.
    pub fn recipes(&self, base: &Recipe) -> Vec<Recipe> {
        let mut out = Vec::with_capacity(self.len());
        for &seed in &self.seeds {
            for &lr in &self.lrs {
                for &momentum in &self.momenta {
                    let optimizer = match base.optimizer {
                        Optimizer::Sgd { .. } => Optimizer::Sgd { momentum },
                        other => other,
                    };
                    out.push(Recipe {
                        lr,
                        optimizer,
                        seed,
                        ..base.clone()
                    });
                }
            }
        }
        out
    }

    /// What varies across the set, for the header: `10 models: seeds 1-10`, `4 models: seeds
    /// 1,2 x lr 0.01,0.003`; None for one model.
    pub fn describe(&self) -> Option<String> {
        if self.len() == 1 {
            return None;
        }
        let mut parts = Vec::new();
        if self.seeds.len() > 1 {
            parts.push(format!("seeds {}", seeds_string(&self.seeds)));
        }
        if self.lrs.len() > 1 {
            parts.push(format!("lr {}", floats_string(&self.lrs)));
        }
        if self.momenta.len() > 1 {
            parts.push(format!("momentum {}", floats_string(&self.momenta)));
        }
        Some(format!("{} models: {}", self.len(), parts.join(" x ")))
    }

    /// What names model `r` among the set, the values that vary as given: `seed3`,
    /// `seed3-lr0.01`; empty for one model.
    pub fn tag(&self, r: &Recipe) -> String {
        let mut parts = Vec::new();
        if self.seeds.len() > 1 {
            parts.push(format!("seed{}", r.seed));
        }
        if self.lrs.len() > 1 {
            parts.push(format!("lr{}", r.lr));
        }
        if self.momenta.len() > 1 {
            parts.push(format!("momentum{}", r.momentum()));
        }
        parts.join("-")
    }

    /// The file model `r` is saved to: `mnist_mlp.safetensors` becomes
    /// `mnist_mlp-seed3-lr0.01.safetensors`; the path itself for one model.
    pub fn file_for(&self, path: &std::path::Path, r: &Recipe) -> std::path::PathBuf {
        let tag = self.tag(r);
        if tag.is_empty() {
            return path.to_path_buf();
        }
        let stem = path
            .file_stem()
            .map_or("model".into(), |s| s.to_string_lossy());
        let name = match path.extension() {
            Some(ext) => format!("{stem}-{tag}.{}", ext.to_string_lossy()),
            None => format!("{stem}-{tag}"),
        };
        path.with_file_name(name)
    }
}

/// `--seeds`: ranges and single values, comma-separated: `1-10`, `1,4,9`, `1-3,7`; each seed
/// once.
pub fn seeds(s: &str) -> Result<Vec<u64>, String> {
    let bad = || format!("`{s}`: expected seeds such as 1-10 or 1,4,9");
    let mut out: Vec<u64> = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: u64 = a.parse().map_err(|_| bad())?;
        let b: u64 = b.parse().map_err(|_| bad())?;
        if b < a {
            return Err(format!("`{part}`: a range runs from the smaller seed up"));
        }
        if (b - a) as usize >= MAX_MODELS || out.len() + (b - a) as usize >= MAX_MODELS {
            return Err(format!("`{s}`: more than {MAX_MODELS} seeds"));
        }
        for v in a..=b {
            if out.contains(&v) {
                return Err(format!("`{s}`: seed {v} is given twice"));
            }
            out.push(v);
        }
    }
    Ok(out)
}

/// A comma list of numbers, each checked by `one` (`--lr`, `--momentum`); each value once.
pub fn floats(s: &str, one: fn(&str) -> Result<f64, String>) -> Result<Vec<f64>, String> {
    let mut out: Vec<f64> = Vec::new();
    for part in s.split(',') {
        let v = one(part.trim()).map_err(|e| format!("`{}`: {e}", part.trim()))?;
        if out.contains(&v) {
            return Err(format!("`{s}`: {v} is given twice"));
        }
        out.push(v);
    }
    if out.len() > MAX_MODELS {
        return Err(format!("`{s}`: more than {MAX_MODELS} values"));
    }
    Ok(out)
}

/// Seeds as `--seeds` takes them, runs of consecutive seeds as ranges: `1-10`, `1,4,9`.
pub fn seeds_string(seeds: &[u64]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < seeds.len() {
        let mut j = i;
        while j + 1 < seeds.len() && seeds[j + 1] == seeds[j] + 1 {
            j += 1;
        }
        parts.push(match j > i {
            true => format!("{}-{}", seeds[i], seeds[j]),
            false => seeds[i].to_string(),
        });
        i = j + 1;
    }
    parts.join(",")
}

pub fn floats_string(v: &[f64]) -> String {
    let s: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    s.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_take_ranges_and_lists() {
        assert_eq!(seeds("1-4").unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(seeds("1,4,9").unwrap(), vec![1, 4, 9]);
        assert_eq!(seeds("1-3,7").unwrap(), vec![1, 2, 3, 7]);
        assert!(seeds("3-1").is_err());
        assert!(seeds("1,1").is_err());
        assert!(seeds("a").is_err());
        assert!(seeds("0-100000").is_err());
        assert_eq!(seeds_string(&[1, 2, 3, 7, 9, 10]), "1-3,7,9-10");
    }

    #[test]
    fn combinations_and_their_names() {
        let s = Sweep {
            seeds: vec![3, 4],
            lrs: vec![0.01, 0.003],
            momenta: vec![0.9],
        };
        let r = s.recipes(&Recipe::tutorial(0.003, 0.9, 1));
        assert_eq!(r.len(), 4);
        assert_eq!((r[1].seed, r[1].lr), (3, 0.003));
        assert_eq!(s.tag(&r[0]), "seed3-lr0.01");
        let f = s.file_for(std::path::Path::new("out/mnist_mlp.safetensors"), &r[0]);
        assert_eq!(
            f,
            std::path::Path::new("out/mnist_mlp-seed3-lr0.01.safetensors")
        );
        assert_eq!(s.describe().unwrap(), "4 models: seeds 3-4 x lr 0.01,0.003");
        let one = Sweep::single(1, 0.003, 0.9);
        assert_eq!(one.describe(), None);
        let p = std::path::Path::new("m.safetensors");
        assert_eq!(
            one.file_for(p, &one.recipes(&Recipe::tutorial(0.003, 0.9, 1))[0]),
            p
        );
        assert!(floats("0.1,0.1", crate::flags::positive_finite).is_err());
    }
}
