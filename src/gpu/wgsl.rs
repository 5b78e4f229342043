//! The WGSL side of the program: every source file, the kernel families that pick among
//! them, the one import step, and compiled modules that remember their WGSL.

use std::sync::{Arc, Mutex};

use anyhow::{Result, bail, ensure};

use crate::gpu::device::Gpu;

// ---- WGSL sources ----

// SOURCES: every WGSL file of `shaders/`, by the name an `//#import` line uses; `build.rs`
// lists them, so a new file needs no line here.
include!(concat!(env!("OUT_DIR"), "/wgsl_sources.rs"));

/// A family of matmul kernels (`--kernels`): which matmul inner loop a module imports
/// (`//#import tile_plain.wgsl if kernels = plain`), which sample loop the fused kernels import,
/// and the workgroup's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Kernels {
    /// Workgroups of 8 invocations sharing A by subgroupBroadcast (subgroups of 8 or more):
    /// tile_subgroup.wgsl.
    Subgroup,
    /// Workgroups of 8 invocations, each loading its own A: tile_plain.wgsl.
    Plain,
    /// Workgroups of 128 invocations (8 vec4 columns by 16 tiles of 4 rows) sharing A through
    /// workgroup memory, the classic GPU matmul: tile_shared.wgsl.
    Wide,
}

/// Invocations along a matmul workgroup's columns, each owning one vec4 of them (`LANES` of
/// tile_subgroup.wgsl; an override in the other two loops).
pub const LANES: u32 = 8;

impl Kernels {
    pub const ALL: [Kernels; 3] = [Kernels::Subgroup, Kernels::Plain, Kernels::Wide];

    /// Whether its kernels need a device with subgroups.
    pub fn subgroups(self) -> bool {
        self == Kernels::Subgroup
    }

    /// Tiles of 4 rows stacked in one workgroup.
    pub fn row_groups(self) -> u32 {
        match self {
            Kernels::Subgroup | Kernels::Plain => 1,
            Kernels::Wide => 16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernels::Subgroup => "subgroup",
            Kernels::Plain => "plain",
            Kernels::Wide => "wide",
        }
    }

    /// The family the fused schedule's kernels run as: subgroup, or plain (the fused kernels
    /// stage nothing in workgroup memory, so `wide` runs them as plain).
    pub fn fused(self) -> Kernels {
        match self {
            Kernels::Subgroup => Kernels::Subgroup,
            Kernels::Plain | Kernels::Wide => Kernels::Plain,
        }
    }
}

/// The one import step. A line `//#import FILE` is replaced by the file FILE of [`SOURCES`],
/// one level deep; `//#import FILE if kernels = A|B` only when the family is one of those
/// (every FILE named must exist, taken or not). Nothing else is rewritten. A part states what
/// it uses of the file that imports it in a line `//#needs NAME, NAME` at its top; each must
/// be declared by the importer or a part imported before (else an error names both).
/// tests/shaders.rs checks that every composed module validates, that every part is imported,
/// and that each part's `//#needs` is exactly what it uses of its importers.
pub fn compose(name: &str, kernels: Kernels) -> Result<String> {
    let Some(src) = source(name) else {
        bail!("no WGSL file named {name}");
    };
    let mut out = String::with_capacity(src.len() * 2);
    for line in src.lines() {
        let Some(import) = line.strip_prefix("//#import ") else {
            out += line;
            out.push('\n');
            continue;
        };
        let (file, families) = match import.split_once(" if kernels = ") {
            Some((file, families)) => (file, Some(families)),
            None => (import, None),
        };
        let Some(part) = source(file) else {
            bail!("{name} imports {file}, which does not exist");
        };
        ensure!(
            !part.contains("//#import "),
            "{name} imports {file}, which imports again (one level only)"
        );
        if families.is_some_and(|f| !f.split('|').any(|k| k == kernels.name())) {
            continue;
        }
        // Everything but the part itself: the importer, and the parts imported before.
        let around = format!("{out}{}", src);
        for need in needs(part) {
            ensure!(
                declared(&around).contains(&need),
                "{file} needs `{need}` from {name}, which does not declare it"
            );
        }
        out += &format!("// ---- {file} ----\n{part}// ---- end of {file} ----\n");
    }
    Ok(out)
}

/// What a part says it uses of its importer: the names of its `//#needs` lines.
pub fn needs(part: &str) -> Vec<&str> {
    part.lines()
        .filter_map(|l| l.strip_prefix("//#needs "))
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect()
}

/// The names a WGSL text declares at module scope (unindented lines): functions, variables,
/// overrides, constants, structs and aliases.
pub fn declared(text: &str) -> Vec<&str> {
    let ident = |s: &str| -> usize {
        s.find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len())
    };
    text.lines()
        .filter(|l| !l.starts_with(char::is_whitespace) && !l.starts_with("//"))
        .filter_map(|l| {
            // Past attributes such as @group(0) @binding(1) and a var's <address space>.
            let mut rest = l;
            while let Some(r) = rest.strip_prefix('@') {
                rest = r.split_once(' ').map_or("", |(_, r)| r).trim_start();
            }
            let rest = ["fn ", "override ", "const ", "struct ", "alias ", "var "]
                .iter()
                .find_map(|k| rest.strip_prefix(k))
                .or_else(|| {
                    rest.strip_prefix("var<")
                        .and_then(|r| r.split_once('>'))
                        .map(|(_, r)| r)
                })?
                .trim_start();
            let n = ident(rest);
            (n > 0).then(|| &rest[..n])
        })
        .collect()
}

fn source(name: &str) -> Option<&'static str> {
    SOURCES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// A compiled shader module with the name and the composed WGSL it came from (each pipeline
/// keeps them: tests/translate.rs translates what the program creates for Metal and DX12).
pub struct Module {
    pub name: &'static str,
    pub wgsl: Arc<str>,
    pub module: wgpu::ShaderModule,
    /// The pipelines built from it, by entry point, override values and bindings: a second
    /// dispatch of the same kernel on other buffers (evaluation's forward products beside
    /// training's) reuses the pipeline, which a software adapter compiles at several MB each.
    pipelines: Mutex<Vec<(String, Pipeline)>>,
}

/// A compute pipeline and the bind group layout it was built with.
pub type Pipeline = (wgpu::BindGroupLayout, wgpu::ComputePipeline);

impl Module {
    /// The pipeline of `entry` with `constants` and bindings `entries`: built by `build` the
    /// first time, the same one after.
    pub fn pipeline(
        &self,
        entries: &[wgpu::BindGroupLayoutEntry],
        entry: &str,
        constants: &[(&str, f64)],
        build: impl FnOnce() -> Pipeline,
    ) -> Pipeline {
        let mut key = format!("{entry} {constants:?}");
        for e in entries {
            // Every binding here is a buffer: its number, kind and whether it takes an offset.
            if let wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset,
                ..
            } = e.ty
            {
                let kind = match ty {
                    wgpu::BufferBindingType::Uniform => "u",
                    wgpu::BufferBindingType::Storage { read_only: true } => "r",
                    wgpu::BufferBindingType::Storage { read_only: false } => "w",
                };
                key += &format!(" {}{kind}{}", e.binding, has_dynamic_offset as u8);
            }
        }
        let mut built = self.pipelines.lock().unwrap();
        if let Some((_, p)) = built.iter().find(|(k, _)| *k == key) {
            return p.clone();
        }
        let p = build();
        built.push((key, p.clone()));
        p
    }
}

/// Compiles the module `name` (after its imports) on `gpu`; a driver that rejects it is an
/// error naming the module, not a panic.
pub fn module(gpu: &Gpu, name: &'static str, kernels: Kernels) -> Result<Module> {
    let wgsl: Arc<str> = compose(name, kernels)?.into();
    let module = gpu.scoped(&format!("compiling {name}"), || {
        gpu.device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(name),
                source: wgpu::ShaderSource::Wgsl(wgsl.as_ref().into()),
            })
    })?;
    Ok(Module {
        name,
        wgsl,
        module,
        pipelines: Mutex::new(Vec::new()),
    })
}
