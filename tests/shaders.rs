//! Every shader module parses and validates with naga, without a GPU: a typo in a .wgsl file
//! fails `cargo test` here with naga's message. The plain matmul must not need subgroups.

use mnist_wgpu::gpu::kernels::all_sources;
use wgpu::naga;

#[test]
fn every_shader_validates() {
    for (name, src, needs_subgroups) in all_sources() {
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&src)));
        let caps = if needs_subgroups {
            naga::valid::Capabilities::SUBGROUP
        } else {
            naga::valid::Capabilities::empty()
        };
        let subgroup_ops = if needs_subgroups {
            naga::valid::SubgroupOperationSet::all()
        } else {
            naga::valid::SubgroupOperationSet::empty()
        };
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
            .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
            .subgroup_operations(subgroup_ops)
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&src)));
        assert!(!module.entry_points.is_empty(), "{name}: no entry point");
    }
}

#[test]
fn validation_catches_a_typo() {
    let broken = all_sources()[2]
        .1
        .replace("let w = gid.x;", "let w = gid.q;");
    assert!(
        naga::front::wgsl::parse_str(&broken).is_err() || {
            let m = naga::front::wgsl::parse_str(&broken).unwrap();
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::empty(),
            )
            .validate(&m)
            .is_err()
        }
    );
}
