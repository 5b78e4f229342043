//! The optimizers as values: PyTorch's update rules (`torch.optim.SGD`, `Adam`, `Adadelta`)
//! with their defaults, the names of their state tensors, and what a step needs from the host
//! (the epoch's learning rate under StepLR, Adam's bias corrections).
//!
//! The rule has one WGSL home, `shaders/optimizer_rule.wgsl`, which both schedules call; its
//! CPU twin is [`step`] below, and its check `gpu::ops::optimizer::checks`. A new optimizer is
//! an arm here, a `case` there, and a line of the check's list.

use crate::cpu::Real;

/// One optimizer with its constants; the learning rate and weight decay are the recipe's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    /// `torch.optim.SGD(lr, momentum)`: no dampening, not Nesterov.
    Sgd { momentum: f64 },
    /// `torch.optim.Adam(lr, betas, eps)`, with bias correction, not AMSGrad.
    Adam { beta1: f64, beta2: f64, eps: f64 },
    /// `torch.optim.Adadelta(lr, rho, eps)`: eps inside both square roots; `acc_delta`
    /// keeps the delta before the learning rate scales it.
    Adadelta { rho: f64, eps: f64 },
}

/// The tutorial's learning rate, SGD's default here (`flags::LR`).
pub const TUTORIAL_LR: f64 = 0.003;

/// `--optimizer`'s names, in `Optimizer::code` order.
pub const NAMES: [&str; 3] = ["sgd", "adam", "adadelta"];

impl Optimizer {
    /// PyTorch's defaults for `name`; SGD's momentum is the caller's (the tutorial's 0.9).
    pub fn named(name: &str, momentum: f64) -> Result<Optimizer, String> {
        match name {
            "sgd" => Ok(Optimizer::Sgd { momentum }),
            "adam" => Ok(Optimizer::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            }),
            "adadelta" => Ok(Optimizer::Adadelta {
                rho: 0.9,
                eps: 1e-6,
            }),
            _ => Err(format!("expected one of {}", NAMES.join(", "))),
        }
    }

    pub fn name(&self) -> &'static str {
        NAMES[self.code() as usize]
    }

    /// The WGSL rule's `OPTIMIZER` constant.
    pub fn code(&self) -> u32 {
        match self {
            Optimizer::Sgd { .. } => 0,
            Optimizer::Adam { .. } => 1,
            Optimizer::Adadelta { .. } => 2,
        }
    }

    /// The learning rate without `--lr`: PyTorch's default, except SGD's (which has none in
    /// PyTorch), the tutorial's 0.003.
    pub fn default_lr(&self) -> f64 {
        match self {
            Optimizer::Sgd { .. } => TUTORIAL_LR,
            Optimizer::Adam { .. } => 0.001,
            Optimizer::Adadelta { .. } => 1.0,
        }
    }

    /// SGD's momentum coefficient; 0 for the others (which have none).
    pub fn momentum(&self) -> f64 {
        match self {
            Optimizer::Sgd { momentum } => *momentum,
            _ => 0.0,
        }
    }

    /// The names of its state tensors in PyTorch's `optimizer.state_dict()`, each the shape of
    /// the parameters; Adam's `step` is a count, kept apart.
    pub fn state_names(&self) -> &'static [&'static str] {
        match self {
            Optimizer::Sgd { .. } => &["momentum_buffer"],
            Optimizer::Adam { .. } => &["exp_avg", "exp_avg_sq"],
            Optimizer::Adadelta { .. } => &["square_avg", "acc_delta"],
        }
    }

    /// The rule's override constants: `OPTIMIZER`; the decay rates of its two running
    /// averages and one minus each, computed in f64 as PyTorch does before they become f32
    /// (Adam's beta1 and beta2, Adadelta's rho twice); and eps.
    pub fn constants(&self) -> [(&'static str, f64); 6] {
        let (d1, d2, eps) = match *self {
            Optimizer::Sgd { .. } => (0.0, 0.0, 0.0),
            Optimizer::Adam { beta1, beta2, eps } => (beta1, beta2, eps),
            Optimizer::Adadelta { rho, eps } => (rho, rho, eps),
        };
        [
            ("OPTIMIZER", self.code() as f64),
            ("DECAY1", d1),
            ("DECAY1_C", 1.0 - d1),
            ("DECAY2", d2),
            ("DECAY2_C", 1.0 - d2),
            ("EPS", eps),
        ]
    }

    /// What step `t` (counted from 1 over the whole run) takes from the host: Adam's bias
    /// corrections `1 - beta1^t` and `sqrt(1 - beta2^t)`, in f64 as PyTorch's Python floats;
    /// (1, 1) for the others.
    pub fn corrections(&self, t: u64) -> [f32; 2] {
        match *self {
            Optimizer::Adam { beta1, beta2, .. } => {
                let t = t.min(i32::MAX as u64) as i32;
                [
                    (1.0 - beta1.powi(t)) as f32,
                    (1.0 - beta2.powi(t)).sqrt() as f32,
                ]
            }
            _ => [1.0, 1.0],
        }
    }
}

/// The learning rate of epoch `epoch` under `StepLR(step_size=1, gamma)`: `lr` multiplied by
/// gamma once after each epoch, in f64 as PyTorch's scheduler does.
pub fn lr_at(lr: f64, gamma: f64, epoch: usize) -> f64 {
    (0..epoch).fold(lr, |lr, _| lr * gamma)
}

/// One model's values of a step, as the rule takes them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hyper {
    /// The epoch's learning rate.
    pub lr: f64,
    /// SGD's momentum coefficient (0 for the others).
    pub momentum: f64,
    pub weight_decay: f64,
}

impl Hyper {
    /// As the kernels read them: (lr, momentum, weight decay, 0) in f32.
    pub fn to_f32(&self) -> [f32; 4] {
        [
            self.lr as f32,
            self.momentum as f32,
            self.weight_decay as f32,
            0.0,
        ]
    }
}

/// The CPU twin of `optimizer_rule.wgsl`: one step of `opt` on the parameters `p` with the
/// gradient `g` and the state tensors `a`, `b` (`state_names` order; SGD leaves `b` alone),
/// in the kernel's order of operations. `corrections` are [`Optimizer::corrections`] of the step.
pub fn step<T: Real>(
    opt: &Optimizer,
    h: &Hyper,
    corrections: [f32; 2],
    p: &mut [T],
    a: &mut [T],
    b: &mut [T],
    g: &[T],
) {
    let f = |x: f64| T::from_f64(x as f32 as f64);
    let (lr, mu, wd) = (f(h.lr), f(h.momentum), f(h.weight_decay));
    let c = opt.constants().map(|(_, v)| f(v));
    let (d1, d1c, d2, d2c, eps) = (c[1], c[2], c[3], c[4], c[5]);
    let (c1, c2) = (f(corrections[0] as f64), f(corrections[1] as f64));
    let zero = T::from_f64(0.0);
    for i in 0..p.len() {
        let mut gi = g[i];
        if wd != zero {
            gi += wd * p[i];
        }
        match opt {
            Optimizer::Sgd { .. } => {
                a[i] = mu * a[i] + gi;
                p[i] += (-lr) * a[i];
            }
            Optimizer::Adam { .. } => {
                a[i] = a[i] + d1c * (gi - a[i]);
                b[i] = b[i] * d2 + d2c * gi * gi;
                let denom = b[i].sqrt() / c2 + eps;
                p[i] += (-(lr / c1)) * (a[i] / denom);
            }
            Optimizer::Adadelta { .. } => {
                a[i] = a[i] * d1 + d1c * gi * gi;
                let std = (a[i] + eps).sqrt();
                let delta = (b[i] + eps).sqrt() / std * gi;
                b[i] = b[i] * d2 + d2c * delta * delta;
                p[i] += (-lr) * delta;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_defaults_are_pytorchs() {
        for name in NAMES {
            let o = Optimizer::named(name, 0.9).unwrap();
            assert_eq!(o.name(), name);
        }
        assert!(Optimizer::named("rmsprop", 0.0).is_err());
        let adam = Optimizer::named("adam", 0.5).unwrap();
        assert_eq!((adam.default_lr(), adam.momentum()), (0.001, 0.0));
        assert_eq!(adam.state_names(), ["exp_avg", "exp_avg_sq"]);
        assert_eq!(Optimizer::named("adadelta", 0.0).unwrap().default_lr(), 1.0);
    }

    #[test]
    fn steplr_multiplies_once_per_epoch() {
        assert_eq!(lr_at(1.0, 0.7, 0), 1.0);
        assert_eq!(lr_at(1.0, 0.7, 2), 1.0 * 0.7 * 0.7);
    }

    #[test]
    fn adams_first_step_moves_each_weight_by_lr() {
        // With bias correction, step 1 gives m/sqrt(v) = sign(g): every weight moves by lr.
        let adam = Optimizer::named("adam", 0.0).unwrap();
        let h = Hyper {
            lr: 0.001,
            momentum: 0.0,
            weight_decay: 0.0,
        };
        let (mut p, mut a, mut b) = (vec![1.0f64, -2.0], vec![0.0; 2], vec![0.0; 2]);
        step(
            &adam,
            &h,
            adam.corrections(1),
            &mut p,
            &mut a,
            &mut b,
            &[0.5, -3.0],
        );
        assert!(
            (p[0] - 0.999).abs() < 1e-6 && (p[1] + 1.999).abs() < 1e-6,
            "{p:?}"
        );
    }
}
