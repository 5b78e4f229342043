//! Every shader module composes, parses and validates with naga, without a GPU, and agrees with
//! the host on what both must know: a typo in a .wgsl file, a dead entry point or a constant
//! changed on one side only fails `cargo test` here.

use std::collections::BTreeSet;

use mnist_wgpu::gpu::dispatch::Step;
use mnist_wgpu::gpu::fused;
use mnist_wgpu::gpu::layout::LayerRow;
use mnist_wgpu::gpu::ops::{conv, linear, nll_head};
use mnist_wgpu::gpu::wgsl::{Kernels, LANES, SOURCES, compose, declared, needs};
use wgpu::naga;

/// The files that are whole modules, those with an entry point (the others are parts that
/// modules import).
fn modules() -> Vec<&'static str> {
    (SOURCES.iter())
        .filter(|(_, src)| src.contains("@compute"))
        .map(|(name, _)| *name)
        .collect()
}

fn validate(name: &str, src: &str, subgroups: bool) -> Result<naga::Module, String> {
    let module = naga::front::wgsl::parse_str(src)
        .map_err(|e| format!("{name}: {}", e.emit_to_string(src)))?;
    let (caps, ops) = match subgroups {
        true => (
            naga::valid::Capabilities::SUBGROUP,
            naga::valid::SubgroupOperationSet::all(),
        ),
        false => (
            naga::valid::Capabilities::empty(),
            naga::valid::SubgroupOperationSet::empty(),
        ),
    };
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
        .subgroup_operations(ops)
        .validate(&module)
        .map_err(|e| format!("{name}: {}", e.emit_to_string(src)))?;
    Ok(module)
}

/// Every module with each inner loop: the plain one must validate without subgroups.
fn all_modules() -> Vec<(String, naga::Module)> {
    let mut out = Vec::new();
    for name in modules() {
        for tile in Kernels::ALL {
            let src = compose(name, tile).unwrap();
            let label = format!("{name} ({})", tile.name());
            let module =
                validate(&label, &src, tile == Kernels::Subgroup).unwrap_or_else(|e| panic!("{e}"));
            assert!(!module.entry_points.is_empty(), "{label}: no entry point");
            out.push((label, module));
        }
    }
    out
}

#[test]
fn every_module_validates() {
    // a module that lost its entry point is a part no one imports, which the next test fails
    assert_eq!(all_modules().len(), 3 * modules().len());
}

/// A part validates alone where it can (it defines what it uses), and every part is imported
/// by some module: no dead files.
#[test]
fn every_part_is_imported_and_self_contained_parts_validate_alone() {
    let modules = modules();
    for &(name, src) in SOURCES {
        if modules.contains(&name) {
            continue;
        }
        let imported = modules.iter().any(|m| {
            let text = SOURCES.iter().find(|(n, _)| n == m).unwrap().1;
            text.contains(&format!("//#import {name}"))
        });
        assert!(imported, "{name} is imported by no module");
        if name == "step.wgsl" {
            validate(name, src, false).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// Every entry point is named by a launcher in src/gpu/ops (no entry point only a test runs).
#[test]
fn no_dead_entry_points() {
    // Every file of src/gpu/ops and its folders (an op of several files), and fused.rs.
    let folders = std::fs::read_dir("src/gpu/ops")
        .unwrap()
        .map(|e| e.unwrap().path());
    let files = folders
        .flat_map(|p| match p.is_dir() {
            true => std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect(),
            false => vec![p],
        })
        .chain(["src/gpu/fused.rs".into()]);
    let ops: String = files.map(|p| std::fs::read_to_string(p).unwrap()).collect();
    for (label, module) in all_modules() {
        for ep in &module.entry_points {
            assert!(
                ops.contains(&format!("\"{}\"", ep.name)),
                "{label}: entry point {} has no launcher",
                ep.name
            );
        }
    }
}

fn const_u32(module: &naga::Module, name: &str) -> u32 {
    let (_, c) = module
        .constants
        .iter()
        .find(|(_, c)| c.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no const {name}"));
    match module.global_expressions[c.init] {
        naga::Expression::Literal(naga::Literal::U32(v)) => v,
        ref e => panic!("const {name} is {e:?}"),
    }
}

fn module(name: &str, tile: Kernels) -> naga::Module {
    validate(
        name,
        &compose(name, tile).unwrap(),
        tile == Kernels::Subgroup,
    )
    .unwrap()
}

/// Constants that size arrays (so cannot be overrides) equal the host's.
#[test]
fn shader_constants_match_the_host() {
    let forward = module("linear_forward.wgsl", Kernels::Subgroup);
    assert_eq!(const_u32(&forward, "ROWS"), linear::ROWS);
    assert_eq!(const_u32(&forward, "LANES"), LANES);
    let conv = module("conv.wgsl", Kernels::Plain);
    assert_eq!(const_u32(&conv, "CO_TILE") as usize, conv::CO_TILE);
    let head = module("nll_head.wgsl", Kernels::Plain);
    assert_eq!(
        const_u32(&head, "MAX_CLASSES") as usize,
        nll_head::MAX_CLASSES
    );
}

/// The WGSL `Step` has the layout of the host's `#[repr(C)] Step` in every module that reads it.
#[test]
fn step_uniform_matches_the_host() {
    let host = [
        ("start", std::mem::offset_of!(Step, start)),
        ("valid", std::mem::offset_of!(Step, valid)),
        ("index", std::mem::offset_of!(Step, index)),
        ("run", std::mem::offset_of!(Step, run)),
        ("correction1", std::mem::offset_of!(Step, correction1)),
        ("correction2", std::mem::offset_of!(Step, correction2)),
        ("pad2", std::mem::offset_of!(Step, pad2)),
        ("pad3", std::mem::offset_of!(Step, pad3)),
    ];
    for name in [
        "batch.wgsl",
        "nll_head.wgsl",
        "evaluate.wgsl",
        "dropout.wgsl",
        "fused_step.wgsl",
        "fused_update.wgsl",
    ] {
        let m = module(name, Kernels::Plain);
        let (_, ty) = m
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some("Step"))
            .expect("a Step type");
        let naga::TypeInner::Struct { members, span } = &ty.inner else {
            panic!("Step is no struct")
        };
        assert_eq!(*span as usize, std::mem::size_of::<Step>(), "{name}");
        let shader: Vec<_> = members
            .iter()
            .map(|m| (m.name.clone().unwrap(), m.offset as usize))
            .collect();
        let host: Vec<_> = host.iter().map(|(n, o)| (n.to_string(), *o)).collect();
        assert_eq!(shader, host, "{name}");
    }
}

/// The WGSL `Layer` of the fused schedule's table has the layout of the host's `LayerRow`, and
/// the table's size is the host's.
#[test]
fn layer_table_matches_the_host() {
    for name in ["fused_step.wgsl", "fused_update.wgsl"] {
        let m = module(name, Kernels::Plain);
        let (_, ty) = m
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some("Layer"))
            .expect("a Layer type");
        let naga::TypeInner::Struct { members, span } = &ty.inner else {
            panic!("Layer is no struct")
        };
        assert_eq!(*span as usize, std::mem::size_of::<LayerRow>(), "{name}");
        let offsets: Vec<(String, usize)> = members
            .iter()
            .map(|m| (m.name.clone().unwrap(), m.offset as usize))
            .collect();
        let host = [
            ("inp", std::mem::offset_of!(LayerRow, inp)),
            ("out", std::mem::offset_of!(LayerRow, out)),
            ("w_off", std::mem::offset_of!(LayerRow, w_off)),
            ("b_off", std::mem::offset_of!(LayerRow, b_off)),
            ("ldw", std::mem::offset_of!(LayerRow, ldw)),
            ("x_off", std::mem::offset_of!(LayerRow, x_off)),
            ("y_off", std::mem::offset_of!(LayerRow, y_off)),
            ("dz_off", std::mem::offset_of!(LayerRow, dz_off)),
            ("tile0", std::mem::offset_of!(LayerRow, tile0)),
        ];
        for (field, at) in host {
            assert!(
                offsets.contains(&(field.to_string(), at)),
                "{name}: {field} at {at} on the host, {offsets:?} in WGSL"
            );
        }
        assert_eq!(const_u32(&m, "MAX_LAYERS") as usize, fused::MAX_LAYERS);
    }
}

/// Validation catches a broken shader: an undefined name in a module, and a missing import.
#[test]
fn validation_catches_a_broken_shader() {
    let src = compose("linear_forward.wgsl", Kernels::Plain).unwrap();
    let broken = src.replace(
        "let col4 = wg.x * LANES + lid.x;",
        "let col4 = wg.q * LANES + lid.x;",
    );
    assert_ne!(broken, src, "the edit must change the module");
    assert!(validate("broken", &broken, false).is_err());
    // Without its imports the module does not validate: the import step is what makes it whole.
    let bare = SOURCES
        .iter()
        .find(|(n, _)| *n == "linear_forward.wgsl")
        .unwrap()
        .1;
    assert!(validate("bare", bare, false).is_err());
    // The subgroup loop needs the capability.
    assert!(
        validate(
            "subgroup without caps",
            &compose("linear_forward.wgsl", Kernels::Subgroup).unwrap(),
            false
        )
        .is_err()
    );
}

/// The identifiers `code` refers to, comments aside (a field after `.` is not a name).
fn references(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap();
        let mut word = String::new();
        let mut after_dot = false;
        for c in line.chars().chain([' ']) {
            if c.is_alphanumeric() || c == '_' {
                word.push(c);
                continue;
            }
            if !word.is_empty() && !after_dot && !word.starts_with(|c: char| c.is_ascii_digit()) {
                out.insert(std::mem::take(&mut word));
            }
            word.clear();
            after_dot = c == '.';
        }
    }
    out
}

/// Every part states its interface: its `//#needs` lines name exactly what it uses of the
/// files around it (its importer and the parts imported before it), in every module and
/// family that imports it. `compose` itself refuses a need nobody declares.
#[test]
fn every_part_states_what_it_needs() {
    for module in modules() {
        for kernels in Kernels::ALL {
            let composed = compose(module, kernels).unwrap();
            for section in composed.split("// ---- ").skip(1) {
                let Some((file, body)) = section.split_once(" ----\n") else {
                    continue;
                };
                if file.starts_with("end of ") {
                    continue;
                }
                let part = SOURCES.iter().find(|(n, _)| *n == file).unwrap().1;
                let around = composed.replace(part, "");
                let own: BTreeSet<&str> = declared(part).into_iter().collect();
                let outside: BTreeSet<&str> = declared(&around).into_iter().collect();
                let refs = references(body);
                let used: BTreeSet<&str> = refs
                    .iter()
                    .map(String::as_str)
                    .filter(|r| outside.contains(r) && !own.contains(r))
                    .collect();
                let stated: BTreeSet<&str> = needs(part).into_iter().collect();
                assert!(
                    used.is_subset(&stated),
                    "{file} in {module} ({kernels:?}) uses {:?} of its importer without stating it",
                    used.difference(&stated).collect::<Vec<_>>()
                );
                let stale: Vec<&&str> = stated.iter().filter(|n| !refs.contains(**n)).collect();
                assert!(
                    stale.is_empty(),
                    "{file} states needs it does not use: {stale:?}"
                );
            }
        }
    }
}
