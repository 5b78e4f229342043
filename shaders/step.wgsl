// The per-step uniform: one entry per step of an epoch, read at a dynamic offset, so that 250
// recorded steps need no host work between them. Host twin: `gpu::dispatch::Step` (#[repr(C)]),
// held to this layout by tests/shaders.rs.
struct Step {
    // position of the step's first sample in the split's order
    start: u32,
    // samples in this step's batch (the last batch of an epoch may be partial)
    valid: u32,
    // the step's number within the epoch
    index: u32,
    // the step's number over the whole run (epoch * steps per epoch + index), which keys
    // dropout's masks
    run: u32,
    // what the optimizer's rule takes from the host for this step of the run (Adam's bias
    // corrections 1 - beta1^t and sqrt(1 - beta2^t); 1 otherwise), rewritten every epoch
    correction1: f32,
    correction2: f32,
    pad2: u32,
    pad3: u32,
}
