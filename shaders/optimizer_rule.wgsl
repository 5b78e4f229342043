//#needs H, params, state_a, state_b, step
// PyTorch's update rules on one vec4 of parameters, the one home of the optimizer's arithmetic:
// optimizer.wgsl (the layered schedule) and fused_update.wgsl (the fused one) import it, and
// define `params`, `state_a`, `state_b` (read_write, array<vec4<f32>>), the step uniform and
// `H`, the invocation's model's (lr, SGD momentum, weight decay, 0). CPU twin: `optim::step`;
// host twin of the constants: `optim::Optimizer::constants`.
//
// - SGD (0): v = MU * v + g; p = p + (-LR) * v, no dampening, not Nesterov. The buffer starts at
//   zero, so the first step gives v = g exactly, as PyTorch's clone of the first gradient.
// - Adam (1): m = m + (1 - b1) (g - m) (PyTorch's lerp); v = v b2 + (1 - b2) g g;
//   p = p + (-(LR / c1)) (m / (sqrt(v) / c2 + eps)), c1 = 1 - b1^t and c2 = sqrt(1 - b2^t) from
//   the step uniform, where the host computes them in f64 as PyTorch does.
// - Adadelta (2): s = s rho + (1 - rho) g g; d = sqrt(u + eps) / sqrt(s + eps) g;
//   u = u rho + (1 - rho) d d; p = p + (-LR) d (u, `acc_delta`, holds d before LR scales it).
// Weight decay adds WD * p to the gradient first, as PyTorch's `grad.add(param, alpha=wd)`.
// state_a is `momentum_buffer`, `exp_avg` or `square_avg`; state_b `exp_avg_sq` or `acc_delta`
// (SGD binds a placeholder it never reads).

override OPTIMIZER: u32;
// The decay rates of the two running averages, and one minus each (computed in f64 on the host).
override DECAY1: f32;
override DECAY1_C: f32;
override DECAY2: f32;
override DECAY2_C: f32;
override EPS: f32;

fn optimizer_step(i: u32, grad: vec4<f32>) {
    let lr = H.x;
    var g = grad;
    if (H.z != 0.0) {
        g = g + H.z * params[i];
    }
    switch OPTIMIZER {
        case 1u: {
            let m = state_a[i] + DECAY1_C * (g - state_a[i]);
            let v = state_b[i] * DECAY2 + DECAY2_C * g * g;
            state_a[i] = m;
            state_b[i] = v;
            let denom = sqrt(v) / step.correction2 + EPS;
            params[i] = params[i] + (-(lr / step.correction1)) * (m / denom);
        }
        case 2u: {
            let s = state_a[i] * DECAY1 + DECAY1_C * g * g;
            let d = sqrt(state_b[i] + EPS) / sqrt(s + EPS) * g;
            state_a[i] = s;
            state_b[i] = state_b[i] * DECAY2 + DECAY2_C * d * d;
            params[i] = params[i] + (-lr) * d;
        }
        default: {
            let v = H.y * state_a[i] + g;
            state_a[i] = v;
            params[i] = params[i] + (-lr) * v;
        }
    }
}
