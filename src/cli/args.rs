//! Flags shared by the subcommands, their parsers, and what they resolve to: the device and
//! the data directory.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};

use mnist_wgpu::backends::Unfit;
use mnist_wgpu::data::{Kind, default_data_dir, has_all_files};
use mnist_wgpu::fetch::{self, FetchConfig, Need};
use mnist_wgpu::gpu::device::{AdapterQuery, Api, Gpu};
use mnist_wgpu::gpu::error::GpuError;
use mnist_wgpu::gpu::net::runnable;
use mnist_wgpu::gpu::plan::{PerSample, Request, Schedule};
use mnist_wgpu::gpu::wgsl::Kernels;
use mnist_wgpu::model::Arch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceChoice {
    /// The best adapter wgpu finds (discrete, integrated, other, CPU-type); the CPU backend if
    /// there is none.
    Auto,
    /// A wgpu adapter, or fail.
    Gpu,
    /// The plain-Rust CPU backend.
    Cpu,
}

/// Which adapter to use.
#[derive(Args, Clone, Debug)]
pub struct AdapterArgs {
    /// Graphics API to look for adapters on [default: WGPU_BACKEND, else all native, then GL]
    #[arg(long, value_enum)]
    pub backend: Option<Api>,
    /// Use the adapter whose name contains this (case-insensitive) [default: WGPU_ADAPTER_NAME]
    #[arg(long)]
    pub adapter: Option<String>,
    /// Matmul kernels: subgroup (8-lane subgroup broadcast), plain or wide (128-invocation
    /// workgroups) [default: chosen for the adapter; `adapters` shows the choice]
    #[arg(long, value_enum)]
    pub kernels: Option<Kernels>,
    /// How a step is cut into dispatches: layered (one per layer-wide product), fused (two per
    /// step) or auto (each schedule and kernel family timed on first use of an adapter and
    /// shape, the fastest cached; `adapters` shows the cache)
    #[arg(long, value_name = "layered|fused|auto", default_value = "auto", value_parser = schedule)]
    pub schedule: ScheduleChoice,
    /// The fused schedule's per-sample workgroups, SAMPLESxINVOCATIONS such as 2x32: how many
    /// of the batch's samples one workgroup takes, and its invocations (a multiple of 8)
    /// [default: auto measures 16x64, 8x64, 4x64, 2x32 and 1x32; 16x64 with --schedule fused]
    #[arg(long, value_name = "SxI", value_parser = per_sample)]
    pub per_sample: Option<PerSample>,
    /// With --schedule auto: measure again instead of using the cached choice
    #[arg(long)]
    pub retune: bool,
}

fn per_sample(s: &str) -> Result<PerSample, String> {
    PerSample::parse(s)
}

/// `--schedule`: a schedule by its name, or None for auto (measured).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduleChoice(pub Option<Schedule>);

fn schedule(s: &str) -> Result<ScheduleChoice, String> {
    match Schedule::ALL.into_iter().find(|x| x.name() == s) {
        Some(x) => Ok(ScheduleChoice(Some(x))),
        None if s == "auto" => Ok(ScheduleChoice(None)),
        None => Err("expected layered, fused or auto".into()),
    }
}

impl AdapterArgs {
    pub fn query(&self) -> AdapterQuery {
        AdapterQuery {
            api: self.backend,
            name: self.adapter.clone(),
        }
    }

    /// How the run is to compute: the plan the flags fix, or auto.
    pub fn request(&self) -> Request {
        Request {
            schedule: self.schedule.0,
            kernels: self.kernels,
            per_sample: self.per_sample,
            retune: self.retune,
            quick: false,
        }
    }
}

/// Where to run and on what data.
#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// The data set.
    #[arg(long, value_enum, default_value_t = Kind::Mnist)]
    pub dataset: Kind,
    /// Directory of the four IDX files (plain or .gz); missing ones are downloaded into it
    /// [default: the repository's assets/mnist for MNIST, else the user cache directory, e.g.
    /// ~/.cache/mnist-wgpu/<dataset>]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A mirror to try before the built-in ones; it serves <URL>/<file>.gz.
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,
    /// Never download; a missing file is an error.
    #[arg(long)]
    pub offline: bool,
    /// Seconds to wait for a mirror to accept the connection.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = positive_finite, allow_negative_numbers = true)]
    pub connect_timeout: f64,
    /// Seconds to wait for any read of a download before giving up on that mirror.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = positive_finite, allow_negative_numbers = true)]
    pub read_timeout: f64,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    #[command(flatten)]
    pub adapter: AdapterArgs,
}

#[derive(Clone, Debug)]
pub struct Hidden(pub Vec<usize>);

pub use mnist_wgpu::flags::{arch_string, at_least_one, hidden_string, momentum, positive_finite};

/// `--hidden` (a newtype, so that clap takes the list as one value).
pub fn hidden(s: &str) -> Result<Hidden, String> {
    mnist_wgpu::flags::hidden(s).map(Hidden)
}

/// `--lr`, `--momentum`: one value or a comma list (a newtype, so that clap takes the list as
/// one value).
#[derive(Clone, Debug, PartialEq)]
pub struct Floats(pub Vec<f64>);

impl std::fmt::Display for Floats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&mnist_wgpu::sweep::floats_string(&self.0))
    }
}

pub fn lr_list(s: &str) -> Result<Floats, String> {
    mnist_wgpu::sweep::floats(s, positive_finite).map(Floats)
}

pub fn momentum_list(s: &str) -> Result<Floats, String> {
    mnist_wgpu::sweep::floats(s, momentum).map(Floats)
}

/// `--seeds`: `1-10`, `1,4,9`.
#[derive(Clone, Debug, PartialEq)]
pub struct Seeds(pub Vec<u64>);

pub fn seeds(s: &str) -> Result<Seeds, String> {
    mnist_wgpu::sweep::seeds(s).map(Seeds)
}

/// A bad flag value found after parsing (it needs the adapter): exit code 2 like clap's.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Opens the adapter the flags ask for, with what they ask of it (kernels it cannot run are
/// refused here); None means the CPU backend.
pub fn open_device(device: DeviceChoice, adapter: &AdapterArgs) -> Result<Option<(Gpu, Request)>> {
    if let (Some(p), Some(Schedule::Layered)) = (adapter.per_sample, adapter.schedule.0) {
        let msg = format!(
            "--per-sample {}: the layered schedule has no per-sample workgroups (it is the fused \
             schedule's; use --schedule fused or auto)",
            p.name()
        );
        return Err(UsageError(msg).into());
    }
    let query = adapter.query();
    let gpu = match device {
        DeviceChoice::Cpu => None,
        DeviceChoice::Gpu => Some(Gpu::new(&query)?),
        DeviceChoice::Auto => match Gpu::new(&query) {
            Ok(gpu) => Some(gpu),
            Err(e @ GpuError::NoAdapter { .. }) => {
                eprintln!("warning: {e}; running on the CPU backend instead");
                None
            }
            Err(e) => return Err(e.into()),
        },
    };
    let Some(gpu) = gpu else {
        return Ok(None);
    };
    let request = adapter.request();
    request.fixed(&gpu)?;
    Ok(Some((gpu, request)))
}

/// As [`open_device`], for a run of `arch`: with `--device auto`, a model the GPU schedules
/// do not run goes to the CPU backend, with one line that says so (with `--device gpu` the
/// GPU's limits check refuses it), and so does a convolutional model when the adapter is a
/// CPU-type (software) one, where the CPU backend trains it about 14 to 18 times faster
/// (docs/PERFORMANCE.md); `--device gpu` runs it there.
pub fn open_device_for(
    device: DeviceChoice,
    adapter: &AdapterArgs,
    arch: &Arch,
) -> Result<Option<(Gpu, Request)>> {
    let auto = device == DeviceChoice::Auto;
    if adapter.schedule.0 == Some(Schedule::Fused) && arch.mlp_sizes().is_none() {
        let msg = format!(
            "--schedule fused: runs Linear layers with ReLU between them, not {}; use --schedule \
             layered (or auto)",
            arch_string(arch)
        );
        return Err(UsageError(msg).into());
    }
    if let (true, Err(why)) = (auto, runnable(arch)) {
        eprintln!("note: {why}; running on the CPU backend");
        return Ok(None);
    }
    let opened = open_device(device, adapter)?;
    match opened {
        Some((gpu, _)) if auto && arch.mlp_sizes().is_none() && gpu.software() => {
            eprintln!(
                "note: {} is a software adapter, on which the CPU backend trains {} faster; \
                 running on the CPU backend (--device gpu runs it there)",
                gpu.info.name,
                arch_string(arch)
            );
            Ok(None)
        }
        opened => Ok(opened),
    }
}

/// The directory that holds the data set, with the files `need` names downloaded into it
/// when they are missing.
pub fn data_dir(run: &RunArgs, need: Need) -> Result<PathBuf> {
    let kind = run.dataset;
    let dir = match (&run.data_dir, kind) {
        (Some(d), _) => d.clone(),
        (None, Kind::Idx) => {
            return Err(UsageError(
                "--dataset idx: needs --data-dir DIR holding the four IDX files".into(),
            )
            .into());
        }
        (None, Kind::Mnist) if has_all_files(&default_data_dir(), kind) => default_data_dir(),
        (None, _) => fetch::cache_dir(kind)?,
    };
    let mut config = FetchConfig::new(kind, run.mirror.as_deref());
    config.connect_timeout = std::time::Duration::from_secs_f64(run.connect_timeout);
    config.read_timeout = std::time::Duration::from_secs_f64(run.read_timeout);
    fetch::ensure(&dir, kind, need, &config, run.offline, &mut |w| {
        eprintln!("{w}")
    })?;
    Ok(dir)
}

/// A run stopped by Ctrl-C after writing its checkpoint: exit code 130, as a shell reports
/// for SIGINT.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

/// A backend's limits error (`backends::Unfit`) is a usage error (exit code 2), as a bad flag
/// is: `backends::for_set(...).map_err(usage)`.
pub fn usage(e: anyhow::Error) -> anyhow::Error {
    match e.downcast::<Unfit>() {
        Ok(Unfit(why)) => UsageError(why).into(),
        Err(e) => e,
    }
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            c if (c as u32) < 0x20 => out += &format!("\\u{:04x}", c as u32),
            c => out.push(c),
        }
    }
    out + "\""
}
