//! How a run computes on a device, as one value: the schedule (how a step is cut into
//! dispatches) and the kernel family (which matmul inner loop). `--schedule` and `--kernels`
//! make one ([`Request`]); `gpu::tune` measures and returns one. Which families a device can
//! run is decided here, from what the adapter reports.

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

/// A schedule with the kernel family it runs. The fused schedule runs `wide` as `plain`
/// ([`Kernels::fused`]), so a fused plan never holds `wide`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub schedule: Schedule,
    pub kernels: Kernels,
}

impl Plan {
    pub fn new(schedule: Schedule, kernels: Kernels) -> Plan {
        let kernels = match schedule {
            Schedule::Layered => kernels,
            Schedule::Fused => kernels.fused(),
        };
        Plan { schedule, kernels }
    }

    /// `layered/subgroup`, `fused/plain`: how the tuner's line and cache name it.
    pub fn name(self) -> String {
        format!("{}/{}", self.schedule.name(), self.kernels.name())
    }

    /// The inverse of [`Plan::name`].
    pub fn parse(s: &str) -> Option<Plan> {
        let (schedule, kernels) = s.split_once('/')?;
        let schedule = Schedule::ALL.into_iter().find(|x| x.name() == schedule)?;
        let kernels = Kernels::ALL.into_iter().find(|k| k.name() == kernels)?;
        Some(Plan { schedule, kernels })
    }
}

/// The header's words: `kernels: subgroup | schedule: fused`.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kernels: {} | schedule: {}",
            self.kernels.name(),
            self.schedule.name()
        )
    }
}

/// What the flags ask for: a schedule (None: auto, measured for the run's shape), a kernel
/// family (None: chosen for the adapter, or measured with auto) and whether auto measures
/// again rather than read its cache (`--retune`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub schedule: Option<Schedule>,
    pub kernels: Option<Kernels>,
    pub retune: bool,
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
        Ok(self.schedule.map(|s| Plan::new(s, kernels)))
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

    /// What auto times on `gpu`: each schedule with every family the flags leave open (the
    /// fused schedule runs `wide` as `plain`, so that pair is timed once).
    pub fn candidates(&self, gpu: &Gpu) -> Vec<Plan> {
        let families = match self.kernels {
            None => runnable_kernels(gpu),
            Some(k) => vec![k],
        };
        let mut out = Vec::new();
        for schedule in Schedule::ALL {
            for &k in &families {
                let plan = Plan::new(schedule, k);
                if !out.contains(&plan) {
                    out.push(plan);
                }
            }
        }
        out
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
