// ReLU as a layer of its own, where it follows a Conv2d or a MaxPool2d (after a Linear the
// linear kernels apply it), on N floats of every model (a set's tensors one after another, so
// the grid covers them all):
//
//   forward   y = max(x, 0)
//   backward  dx = dy where y > 0, else 0 (autograd's rule: the gradient at 0 is 0)
//
// CPU twins: `cpu::layers::forward` and `backward`'s Relu arms.

override N: u32;
override WG: u32;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> out: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(WG)
fn relu_forward(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = gid.x + gid.y * groups.x * WG;
    if (i < N) {
        y[i] = max(x[i], 0.0);
    }
}

@compute @workgroup_size(WG)
fn relu_backward(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = gid.x + gid.y * groups.x * WG;
    if (i < N) {
        dx[i] = select(0.0, dy[i], out[i] > 0.0);
    }
}
