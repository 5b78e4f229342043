//! How a run computes on a device, as one value: the schedule (how a step is cut into
//! dispatches), the kernel family (which matmul inner loop) and, for the fused schedule, the
//! shape of its per-sample workgroups. `--schedule`, `--kernels` and `--per-sample` make one
//! ([`Request`]); `gpu::tune` measures and returns one. Which families a device can run is
//! decided here, from what the adapter reports.

use std::fmt;

use crate::gpu::device::Gpu;
use crate::gpu::error::GpuError;
use crate::gpu::wgsl::{Kernels, LANES};

/// How a training step is cut into dispatches (`--schedule`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Schedule {
    /// One dispatch per layer-wide product: 12 per step for the tutorial's model, with the
    /// matmul kernels of `--kernels` (`gpu::layered`).
    Layered,
    /// Two dispatches per step: everything per sample (forward, loss, backward through the
    /// activations), then everything per parameter (weight gradients summed over the batch,
    /// SGD) (`gpu::fused`).
    Fused,
}

impl Schedule {
    pub const ALL: [Schedule; 2] = [Schedule::Layered, Schedule::Fused];

    pub fn name(self) -> &'static str {
        match self {
            Schedule::Layered => "layered",
            Schedule::Fused => "fused",
        }
    }
}

/// The fused schedule's per-sample workgroups (`--per-sample 2x32`): how many of the batch's
/// samples one workgroup takes through the whole step, and its invocations. Sixteen by 64 keep
/// both cores of a software adapter busy at batch 32; a wide GPU fills its compute units with
/// one or two samples per workgroup. Every shape does the same arithmetic on each sample, so
/// the choice changes the time of a step and never its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PerSample {
    pub samples: u32,
    pub invocations: u32,
}

impl PerSample {
    /// What a fixed fused schedule runs unless `--per-sample` says otherwise.
    pub const DEFAULT: PerSample = PerSample::new(16, 64);
    /// What auto times for the fused schedule: the default, then fewer samples per workgroup
    /// until a shape is slower than the best (`gpu::tune`).
    pub const CANDIDATES: [PerSample; 5] = [
        PerSample::DEFAULT,
        PerSample::new(8, 64),
        PerSample::new(4, 64),
        PerSample::new(2, 32),
        PerSample::new(1, 32),
    ];
    /// The most of either `--per-sample` takes: WebGPU guarantees 256 invocations per
    /// workgroup on every adapter.
    pub const MAX: u32 = 256;

    pub const fn new(samples: u32, invocations: u32) -> PerSample {
        PerSample {
            samples,
            invocations,
        }
    }

    /// `16x64`: samples by invocations.
    pub fn name(self) -> String {
        format!("{}x{}", self.samples, self.invocations)
    }

    /// The inverse of [`PerSample::name`], with why a shape is refused: samples from 1 and
    /// invocations a multiple of 8 (the subgroup flavour shares rows among 8 lanes), both at
    /// most [`PerSample::MAX`].
    pub fn parse(s: &str) -> Result<PerSample, String> {
        let shape = s
            .split_once('x')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
        let Some((samples, invocations)) = shape else {
            return Err(format!(
                "expected SAMPLESxINVOCATIONS, such as 2x32, not {s:?}"
            ));
        };
        if !(1..=Self::MAX).contains(&samples) {
            return Err(format!(
                "{samples} samples per workgroup: expected 1 to {}",
                Self::MAX
            ));
        }
        if invocations % 8 != 0 || !(8..=Self::MAX).contains(&invocations) {
            return Err(format!(
                "{invocations} invocations per workgroup: expected a multiple of 8 from 8 to {}",
                Self::MAX
            ));
        }
        Ok(PerSample::new(samples, invocations))
    }
}

/// How a plan cuts a step: the schedule, and for the fused one the per-sample workgroups it
/// runs (the layered schedule has none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    Layered,
    Fused(PerSample),
}

/// A schedule with the kernel family it runs and, fused, its per-sample workgroups. The fused
/// schedule runs `wide` as `plain` ([`Kernels::fused`]), so a fused plan never holds `wide`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub cut: Cut,
    pub kernels: Kernels,
}

impl Plan {
    /// `schedule` with `kernels`; fused with the default per-sample workgroups.
    pub fn new(schedule: Schedule, kernels: Kernels) -> Plan {
        match schedule {
            Schedule::Layered => Plan {
                cut: Cut::Layered,
                kernels,
            },
            Schedule::Fused => Plan {
                cut: Cut::Fused(PerSample::DEFAULT),
                kernels: kernels.fused(),
            },
        }
    }

    pub fn schedule(self) -> Schedule {
        match self.cut {
            Cut::Layered => Schedule::Layered,
            Cut::Fused(_) => Schedule::Fused,
        }
    }

    /// The plan with per-sample workgroups of `per_sample` (fused; a layered plan is returned
    /// as it is).
    pub fn with(self, per_sample: PerSample) -> Plan {
        match self.cut {
            Cut::Layered => self,
            Cut::Fused(_) => Plan {
                cut: Cut::Fused(per_sample),
                ..self
            },
        }
    }

    /// The fused plan's per-sample workgroups where they are other than the default (and so
    /// worth naming).
    pub fn named_per_sample(self) -> Option<PerSample> {
        match self.cut {
            Cut::Fused(p) if p != PerSample::DEFAULT => Some(p),
            _ => None,
        }
    }

    /// `layered/subgroup`, `fused/plain`, `fused/plain/2x32`: how the tuner's line and cache
    /// name it (the default per-sample workgroups are not named).
    pub fn name(self) -> String {
        let mut out = format!("{}/{}", self.schedule().name(), self.kernels.name());
        if let Some(p) = self.named_per_sample() {
            out += &format!("/{}", p.name());
        }
        out
    }

    /// The inverse of [`Plan::name`].
    pub fn parse(s: &str) -> Option<Plan> {
        let mut parts = s.split('/');
        let (schedule, kernels) = (parts.next()?, parts.next()?);
        let schedule = Schedule::ALL.into_iter().find(|x| x.name() == schedule)?;
        let kernels = Kernels::ALL.into_iter().find(|k| k.name() == kernels)?;
        let cut = match (schedule, parts.next()) {
            (Schedule::Fused, Some(p)) => Cut::Fused(PerSample::parse(p).ok()?),
            (Schedule::Fused, None) => Cut::Fused(PerSample::DEFAULT),
            (Schedule::Layered, None) => Cut::Layered,
            (Schedule::Layered, Some(_)) => return None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Plan { cut, kernels })
    }
}

/// The header's words: `kernels: subgroup | schedule: fused`, and `fused 2x32` where the
/// per-sample workgroups are not the default.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kernels: {} | schedule: {}",
            self.kernels.name(),
            self.schedule().name()
        )?;
        if let Some(p) = self.named_per_sample() {
            write!(f, " {} (samples x invocations per workgroup)", p.name())?;
        }
        Ok(())
    }
}

/// What the flags ask for: a schedule (None: auto, measured for the run's shape), a kernel
/// family (None: chosen for the adapter, or measured with auto), the fused schedule's
/// per-sample workgroups (None: the default, or measured with auto), whether auto measures
/// again rather than read its cache (`--retune`), and whether it measures quickly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub schedule: Option<Schedule>,
    pub kernels: Option<Kernels>,
    pub per_sample: Option<PerSample>,
    pub retune: bool,
    /// Auto times each schedule in the adapter's default family only, and no smaller
    /// per-sample workgroups on a CPU-type adapter (where they only repeat work): the page's
    /// first visit, whose visitor waits for the first step while every candidate's pipelines
    /// compile on first use (`retune=1` measures everything).
    pub quick: bool,
}

impl Request {
    /// The plan the flags fix on `gpu` (None: auto, left to `gpu::tune`); kernels the device
    /// cannot run are refused here, before anything is built.
    pub fn fixed(&self, gpu: &Gpu) -> Result<Option<Plan>, GpuError> {
        let kernels = self.kernels_on(gpu);
        if let Some(why) = kernels_refused(kernels, gpu.subgroups, &gpu.limits) {
            return Err(GpuError::Kernels {
                adapter: gpu.info.name.clone(),
                kernels: kernels.name(),
                why,
                browser: gpu.info.backend == wgpu::Backend::BrowserWebGpu,
            });
        }
        let per_sample = self.per_sample.unwrap_or(PerSample::DEFAULT);
        Ok(self
            .schedule
            .map(|s| Plan::new(s, kernels).with(per_sample)))
    }

    /// The kernel family asked for, else the one chosen for `gpu`.
    pub fn kernels_on(&self, gpu: &Gpu) -> Kernels {
        self.kernels.unwrap_or_else(|| default_kernels(gpu))
    }

    /// The header's words for this request on `gpu` before a run: its plan, or that auto
    /// measures when a run starts.
    pub fn describe(&self, gpu: &Gpu) -> Result<String, GpuError> {
        Ok(match self.fixed(gpu)? {
            Some(plan) => plan.to_string(),
            None => "schedule: auto (measured when a run starts)".to_string(),
        })
    }

    /// What auto times first on `gpu`: each schedule with every family the flags leave open
    /// (the fused schedule runs `wide` as `plain`, so that pair is timed once), fused with the
    /// per-sample workgroups of `--per-sample`, else the default.
    pub fn candidates(&self, gpu: &Gpu) -> Vec<Plan> {
        let families = match (self.kernels, self.quick) {
            (None, false) => runnable_kernels(gpu),
            (None, true) => vec![default_kernels(gpu)],
            (Some(k), _) => vec![k],
        };
        let shape = self.per_sample.unwrap_or(PerSample::DEFAULT);
        let mut out = Vec::new();
        for schedule in Schedule::ALL {
            for &k in &families {
                let plan = Plan::new(schedule, k).with(shape);
                if !out.contains(&plan) {
                    out.push(plan);
                }
            }
        }
        out
    }

    /// The per-sample workgroups auto tries next on the fastest fused plan of `gpu`, fewest
    /// samples last (none when `--per-sample` fixes them, nor quickly on a CPU-type adapter).
    pub fn smaller_shapes(&self, gpu: &Gpu) -> Vec<PerSample> {
        let cpu = gpu.info.device_type == wgpu::DeviceType::Cpu;
        match self.per_sample {
            None if !(self.quick && cpu) => PerSample::CANDIDATES[1..].to_vec(),
            _ => Vec::new(),
        }
    }
}

/// Whether the limits allow the wide kernels' workgroups (8 x 16 invocations, 8 KiB).
pub fn wide_fits(l: &wgpu::Limits) -> bool {
    let rows = Kernels::Wide.row_groups();
    l.max_compute_invocations_per_workgroup >= LANES * rows
        && l.max_compute_workgroup_size_x >= LANES
        && l.max_compute_workgroup_size_y >= rows
        && l.max_compute_workgroup_storage_size >= 8192
}

/// Why an adapter with (or without) usable subgroups and these limits cannot run `kernels`;
/// None when it can.
pub fn kernels_refused(
    kernels: Kernels,
    subgroups: bool,
    limits: &wgpu::Limits,
) -> Option<&'static str> {
    match kernels {
        Kernels::Subgroup if !subgroups => Some("no subgroups of 8 or more lanes"),
        Kernels::Wide if !wide_fits(limits) => Some("workgroups too small"),
        _ => None,
    }
}

/// Every family of kernels an adapter with (or without) usable subgroups and these limits runs.
pub fn kernels_that_fit(subgroups: bool, limits: &wgpu::Limits) -> Vec<Kernels> {
    Kernels::ALL
        .into_iter()
        .filter(|k| kernels_refused(*k, subgroups, limits).is_none())
        .collect()
}

/// Every family of matmul kernels `gpu` can run.
pub fn runnable_kernels(gpu: &Gpu) -> Vec<Kernels> {
    kernels_that_fit(gpu.subgroups, &gpu.limits)
}

/// The kernels `--kernels` leaves to the adapter, from what it reports:
/// - subgroups exactly 8 wide (llvmpipe, where a subgroup is one 8-lane SIMD register):
///   the subgroup kernels, the fastest there;
/// - another CPU-type adapter (SwiftShader, llvmpipe through GL): the plain kernels, which
///   measured faster there than staging A in workgroup memory;
/// - a hardware GPU whose limits allow 8 x 16 invocations: the wide kernels, whose
///   workgroups fill a 32- or 64-wide SIMD unit (not measured on one yet);
/// - otherwise the plain kernels.
pub fn auto_kernels(info: &wgpu::AdapterInfo, subgroups: bool, limits: &wgpu::Limits) -> Kernels {
    if subgroups && info.subgroup_max_size == 8 {
        Kernels::Subgroup
    } else if info.device_type != wgpu::DeviceType::Cpu && wide_fits(limits) {
        Kernels::Wide
    } else {
        Kernels::Plain
    }
}

/// [`auto_kernels`] for an open device.
pub fn default_kernels(gpu: &Gpu) -> Kernels {
    auto_kernels(&gpu.info, gpu.subgroups, &gpu.limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fused_plan_runs_wide_as_plain_and_names_round_trip() {
        let p = Plan::new(Schedule::Fused, Kernels::Wide);
        assert_eq!(p.kernels, Kernels::Plain);
        assert_eq!(p.name(), "fused/plain");
        assert_eq!(Plan::parse(&p.name()), Some(p));
        let l = Plan::new(Schedule::Layered, Kernels::Wide);
        assert_eq!(Plan::parse("layered/wide"), Some(l));
        assert_eq!(Plan::parse("fused/none"), None);
        assert_eq!(l.to_string(), "kernels: wide | schedule: layered");
        let small = p.with(PerSample::new(2, 32));
        assert_eq!(small.name(), "fused/plain/2x32");
        assert_eq!(Plan::parse("fused/plain/2x32"), Some(small));
        assert_eq!(l.with(PerSample::new(2, 32)), l);
        assert_eq!(Plan::parse("layered/plain/2x32"), None);
        assert_eq!(Plan::parse("fused/plain/2x31"), None);
        assert_eq!(
            small.to_string(),
            "kernels: plain | schedule: fused 2x32 (samples x invocations per workgroup)"
        );
    }

    #[test]
    fn per_sample_shapes_parse_within_what_every_adapter_allows() {
        assert_eq!(PerSample::parse("1x32"), Ok(PerSample::new(1, 32)));
        assert_eq!(PerSample::DEFAULT.name(), "16x64");
        for bad in ["0x32", "2x30", "2x512", "2", "ax32", "300x8"] {
            assert!(PerSample::parse(bad).is_err(), "{bad}");
        }
        assert!(
            PerSample::parse("2x30")
                .unwrap_err()
                .contains("multiple of 8")
        );
    }

    #[test]
    fn families_fit_what_the_adapter_reports() {
        let small = wgpu::Limits {
            max_compute_workgroup_storage_size: 4096,
            ..wgpu::Limits::default()
        };
        let big = wgpu::Limits::default();
        assert_eq!(kernels_that_fit(false, &small), vec![Kernels::Plain]);
        assert_eq!(kernels_that_fit(true, &big), Kernels::ALL.to_vec());
        assert!(kernels_refused(Kernels::Subgroup, false, &big).is_some());
    }
}
