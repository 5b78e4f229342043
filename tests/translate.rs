//! Metal and DX12, as far as a Linux machine can check them: every pipeline the program builds
//! (both schedules, every kernel family the adapter runs, the tutorial's model and one of odd
//! widths, training and evaluation) translated from its WGSL with its override values as the
//! launcher set them, through naga (the version wgpu uses, as wgpu does when it creates a
//! pipeline on those APIs) to MSL and HLSL, and to SPIR-V, checked by `spirv-val` where it is
//! installed (Debian: spirv-tools). A failure names the module, entry point, family and target.
//! Needs a wgpu adapter to build the pipelines (lavapipe will do).

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use mnist_wgpu::data::Dataset;
use mnist_wgpu::gpu::dispatch::PipelineSource;
use mnist_wgpu::model::Arch;
use mnist_wgpu::recipe::Recipe;
use naga::ShaderStage::Compute;
use naga::back::{hlsl, msl, spv};
use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator};

/// Parses, validates with a target's capabilities, and sets the override values.
fn prepare(
    src: &PipelineSource,
    caps: Capabilities,
) -> Result<(naga::Module, naga::valid::ModuleInfo), String> {
    let module =
        naga::front::wgsl::parse_str(&src.wgsl).map_err(|e| e.emit_to_string(&src.wgsl))?;
    let info = Validator::new(ValidationFlags::all(), caps)
        .subgroup_stages(ShaderStages::COMPUTE)
        .subgroup_operations(SubgroupOperationSet::all())
        .validate(&module)
        .map_err(|e| e.emit_to_string(&src.wgsl))?;
    let mut constants = naga::back::PipelineConstants::default();
    for (k, v) in &src.constants {
        constants.insert(k.clone(), *v);
    }
    let (m, i) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        Some((Compute, src.entry.as_str())),
        &constants,
    )
    .map_err(|e| format!("override values: {e}"))?;
    Ok((m.into_owned(), i.into_owned()))
}

fn to_msl(src: &PipelineSource) -> Result<usize, String> {
    let (m, i) = prepare(src, msl::supported_capabilities())?;
    let options = msl::Options {
        lang_version: (2, 4),
        ..Default::default()
    };
    let pipeline = msl::PipelineOptions {
        entry_point: Some((Compute, src.entry.clone())),
        ..Default::default()
    };
    let (text, _) = msl::write_string(&m, &i, &options, &pipeline).map_err(|e| e.to_string())?;
    Ok(text.len())
}

fn to_hlsl(src: &PipelineSource) -> Result<usize, String> {
    let (m, i) = prepare(src, hlsl::supported_capabilities())?;
    let options = hlsl::Options {
        shader_model: hlsl::ShaderModel::V6_0,
        fake_missing_bindings: true,
        ..Default::default()
    };
    let pipeline = hlsl::PipelineOptions {
        entry_point: Some((Compute, src.entry.clone())),
    };
    let mut text = String::new();
    hlsl::Writer::new(&mut text, &options, &pipeline)
        .write(&m, &i, None)
        .map_err(|e| e.to_string())?;
    Ok(text.len())
}

/// SPIR-V words, validated by `spirv-val` when it is on PATH (Vulkan 1.1 rules).
fn to_spirv(src: &PipelineSource, dir: &std::path::Path) -> Result<usize, String> {
    let (m, i) = prepare(src, spv::supported_capabilities())?;
    let options = spv::Options {
        lang_version: (1, 3),
        ..Default::default()
    };
    let pipeline = spv::PipelineOptions {
        shader_stage: Compute,
        entry_point: src.entry.clone(),
    };
    let words = spv::write_vec(&m, &i, &options, Some(&pipeline)).map_err(|e| e.to_string())?;
    if spirv_val_present() {
        let file = dir.join(format!("{}-{}.spv", src.module, src.entry));
        std::fs::write(&file, bytemuck::cast_slice(&words)).unwrap();
        let out = Command::new("spirv-val")
            .args(["--target-env", "vulkan1.1"])
            .arg(&file)
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(format!(
                "spirv-val: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(words.len())
}

fn spirv_val_present() -> bool {
    Command::new("spirv-val").arg("--version").output().is_ok()
}

/// Every distinct pipeline (module, entry point, override values) the program builds on this
/// adapter, with the family and schedule it was built for.
fn every_pipeline() -> Vec<(String, PipelineSource)> {
    let data = Dataset {
        images: vec![7; 40 * 28 * 28],
        labels: (0..40).map(|i| (i % 10) as u8).collect(),
        rows: 28,
        cols: 28,
        normalize: mnist_wgpu::data::Normalize::TUTORIAL,
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for arch in [
        Arch::mlp(784, &[128, 128, 64, 64], 10),
        Arch::mlp(784, &[13, 6], 10),
    ] {
        for gpu in common::every_schedule() {
            let family = format!("{} / {}", gpu.1.schedule().name(), gpu.1.kernels.name());
            let recipe = Recipe {
                epochs: 1,
                batch_size: 32,
                lr: 0.003,
                optimizer: mnist_wgpu::optim::Optimizer::Sgd { momentum: 0.9 },
                weight_decay: 0.0,
                gamma: 1.0,
                shuffle: true,
                seed: 1,
            };
            let params = arch.init(1);
            let b = common::backend(gpu, &arch, &recipe, &params, &data, &data).unwrap();
            for op in b.dispatches() {
                let s = &op.source;
                let key = format!(
                    "{}|{}|{:?}|{}",
                    s.module,
                    s.entry,
                    s.constants,
                    s.wgsl.len()
                );
                if seen.insert(key) {
                    out.push((family.clone(), s.clone()));
                }
            }
        }
    }
    out
}

#[test]
fn every_pipeline_translates_to_msl_hlsl_and_spirv() {
    let pipelines = every_pipeline();
    let dir = common::scratch("translate");
    let mut failures = Vec::new();
    let mut sizes = [0usize; 3];
    for (family, src) in &pipelines {
        let results = [
            ("MSL", to_msl(src)),
            ("HLSL", to_hlsl(src)),
            ("SPIR-V", to_spirv(src, &dir)),
        ];
        for (k, (target, r)) in results.into_iter().enumerate() {
            match r {
                Ok(n) => sizes[k] += n,
                Err(e) => failures.push(format!(
                    "{} ({}), {family}, {target}: {}",
                    src.module,
                    src.entry,
                    e.lines().next().unwrap_or("")
                )),
            }
        }
    }
    eprintln!(
        "{} pipelines: {} bytes of MSL, {} of HLSL, {} SPIR-V words{}",
        pipelines.len(),
        sizes[0],
        sizes[1],
        sizes[2],
        if spirv_val_present() {
            ", all checked by spirv-val"
        } else {
            " (no spirv-val here)"
        }
    );
    let modules: BTreeSet<&str> = pipelines.iter().map(|(_, s)| s.module).collect();
    assert!(modules.len() >= 8, "only {modules:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The check can fail: a pipeline missing one of its override values does not translate, and
/// the failure names the target.
#[test]
fn a_pipeline_without_its_override_values_fails() {
    let (_, mut src) = every_pipeline()
        .into_iter()
        .find(|(_, s)| s.module == "linear_forward.wgsl")
        .unwrap();
    src.constants.retain(|(k, _)| k != "IN");
    let e = to_msl(&src).expect_err("a missing override is an error");
    assert!(e.contains("override"), "{e}");
    assert!(to_hlsl(&src).is_err());
}
