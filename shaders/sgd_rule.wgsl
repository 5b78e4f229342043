//#needs LR, MU, momentum, params
// PyTorch's momentum rule (no dampening, weight decay or Nesterov) on one vec4 of parameters:
// v = MU * v + g; p = p + (-LR) * v. Momentum starts at zero, so the first step gives v = g
// exactly, as PyTorch's clone of the first gradient. The one home of the rule: sgd.wgsl (the
// layered schedule) and fused_update.wgsl (the fused one) import it, and define `params`,
// `momentum` (read_write, array<vec4<f32>>), `LR` and `MU`. CPU twin: `cpu::sgd`.

fn sgd_step(i: u32, g: vec4<f32>) {
    let v = MU * momentum[i] + g;
    momentum[i] = v;
    params[i] = params[i] + (-LR) * v;
}
