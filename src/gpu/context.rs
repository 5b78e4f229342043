//! Choosing an adapter and opening a device on it.

use std::fmt;
use std::sync::{Arc, Mutex};

pub use crate::gpu::error::GpuError;
use crate::gpu::program::{Kernels, Schedule};

/// Which graphics API to look on (`--backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Api {
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl Api {
    #[cfg(not(target_arch = "wasm32"))]
    fn backends(self) -> wgpu::Backends {
        match self {
            Api::Vulkan => wgpu::Backends::VULKAN,
            Api::Metal => wgpu::Backends::METAL,
            Api::Dx12 => wgpu::Backends::DX12,
            Api::Gl => wgpu::Backends::GL,
        }
    }
}

/// How to find adapters: the API (else `WGPU_BACKEND`, else every native API and GL only if
/// those find nothing) and a case-insensitive part of the name (else `WGPU_ADAPTER_NAME`).
#[derive(Clone, Debug, Default)]
pub struct AdapterQuery {
    pub api: Option<Api>,
    pub name: Option<String>,
    /// The matmul kernels (`--kernels`); None: chosen for the adapter.
    pub kernels: Option<Kernels>,
    /// The schedule (`--schedule`); None: auto, measured by `gpu::tune` for the run's shape.
    pub schedule: Option<Schedule>,
    /// With auto: measure again rather than use the cached choice (`--retune`).
    pub retune: bool,
}

/// What `--schedule auto` leaves to measurement (`gpu::tune`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Measure even where a choice is cached.
    pub retune: bool,
    /// Whether the kernel family is measured too (else `--kernels` fixed it).
    pub kernels: bool,
}

/// A device and what the kernels need to know about it (a clone shares the device).
#[derive(Clone)]
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// Whether the device was opened with subgroups (the adapter has them, at least 8 lanes wide),
    /// so that it can run the subgroup kernels.
    pub subgroups: bool,
    /// The matmul kernels training and evaluation use (with the layered schedule).
    pub kernels: Kernels,
    /// How a step is cut into dispatches; layered when opened, `--schedule` or the tuner
    /// (`gpu::tune`) sets it.
    pub schedule: Schedule,
    /// Some while the schedule is still to be measured for the run's shape (`gpu::tune`).
    pub tuning: Option<Tuning>,
    /// What the measurement chose and why, one line, once it has run.
    pub tuned: Option<String>,
    pub timestamps: bool,
    /// Errors no scope caught (wgpu's default would panic) and a lost device, in order.
    errors: Arc<Mutex<Vec<String>>>,
}

impl fmt::Display for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} | {:?} | {:?} | ",
            self.info.name, self.info.backend, self.info.device_type
        )?;
        match (self.tuning, self.schedule) {
            (Some(_), _) => write!(f, "schedule: auto (measured when a run starts)"),
            (None, Schedule::Layered) => {
                write!(f, "kernels: {} | schedule: layered", self.kernels.name())
            }
            (None, Schedule::Fused) => write!(
                f,
                "kernels: {} | schedule: fused",
                self.kernels.fused().name()
            ),
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn enumerate(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    desc.flags = wgpu::InstanceFlags::from_build_config().with_env();
    let instance = wgpu::Instance::new(desc);
    pollster::block_on(instance.enumerate_adapters(backends))
}

/// Every adapter on every API wgpu was built with (GL included), in its order.
#[cfg(not(target_arch = "wasm32"))]
pub fn all_adapters() -> Vec<wgpu::Adapter> {
    enumerate(wgpu::Backends::all())
}

/// Every adapter the query can see, best first: discrete, integrated, virtual, other, CPU.
#[cfg(not(target_arch = "wasm32"))]
pub fn adapters(query: &AdapterQuery) -> Vec<wgpu::Adapter> {
    let mut found = match (query.api, wgpu::Backends::from_env()) {
        (Some(api), _) => enumerate(api.backends()),
        (None, Some(env)) => enumerate(env),
        // GL is only asked when no native API has an adapter: probing it on a headless
        // machine opens EGL and costs time for an adapter that would rank last anyway.
        (None, None) => {
            let native = enumerate(wgpu::Backends::PRIMARY);
            if native.is_empty() {
                enumerate(wgpu::Backends::GL)
            } else {
                native
            }
        }
    };
    found.sort_by_key(|a| rank(a.get_info().device_type));
    found
}

/// The adapter `--device auto|gpu` runs on.
#[cfg(not(target_arch = "wasm32"))]
pub fn pick_adapter(query: &AdapterQuery) -> Result<wgpu::Adapter, GpuError> {
    let all = adapters(query);
    let name = query
        .name
        .clone()
        .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
        .filter(|n| !n.is_empty());
    if all.is_empty() {
        let searched = match (query.api, std::env::var("WGPU_BACKEND")) {
            (Some(api), _) => format!("backend {api:?}"),
            (None, Ok(env)) => format!("WGPU_BACKEND={env}"),
            (None, Err(_)) => "Vulkan, Metal, DX12, GL".to_string(),
        };
        return Err(GpuError::NoAdapter { searched });
    }
    match name {
        None => Ok(all.into_iter().next().unwrap()),
        Some(name) => {
            let lower = name.to_lowercase();
            let found = all
                .iter()
                .map(|a| {
                    let i = a.get_info();
                    format!("{} ({:?})", i.name, i.backend)
                })
                .collect::<Vec<_>>()
                .join(", ");
            all.into_iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&lower))
                .ok_or(GpuError::NoMatch { name, found })
        }
    }
}

/// The subgroup kernels run where the adapter has subgroups and none can be narrower than
/// their 8-invocation workgroup.
pub fn adapter_has_subgroups(adapter: &wgpu::Adapter) -> bool {
    adapter.features().contains(wgpu::Features::SUBGROUP)
        && adapter.get_info().subgroup_min_size >= 8
}

/// Whether the limits allow the wide kernels' workgroups (8 x 16 invocations, 8 KiB).
pub fn wide_fits(l: &wgpu::Limits) -> bool {
    let (lanes, rows) = (crate::gpu::ops::linear::LANES, Kernels::Wide.row_groups());
    l.max_compute_invocations_per_workgroup >= lanes * rows
        && l.max_compute_workgroup_size_x >= lanes
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

/// The kernels `--kernels` leaves to the adapter, from what it reports:
/// - subgroups exactly 8 wide (llvmpipe, where a subgroup is one 8-lane SIMD register):
///   the subgroup kernels, the fastest there;
/// - another CPU-type adapter (SwiftShader, llvmpipe through GL): the plain kernels, which
///   measured faster there than staging A in workgroup memory;
/// - a hardware GPU whose limits allow 8 x 16 invocations: the wide kernels, whose
///   workgroups fill a 32- or 64-wide SIMD unit (not measured on one yet);
/// - otherwise the plain kernels.
pub fn auto_kernels(adapter: &wgpu::Adapter) -> Kernels {
    let info = adapter.get_info();
    if adapter_has_subgroups(adapter) && info.subgroup_max_size == 8 {
        Kernels::Subgroup
    } else if info.device_type != wgpu::DeviceType::Cpu && wide_fits(&adapter.limits()) {
        Kernels::Wide
    } else {
        Kernels::Plain
    }
}

impl Gpu {
    /// Opens a device that runs the matmul kernels `kernels` (None: [`auto_kernels`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(adapter: &wgpu::Adapter, kernels: Option<Kernels>) -> Result<Gpu, GpuError> {
        pollster::block_on(Gpu::open_async(adapter, kernels))
    }

    /// [`Gpu::open`], awaited (the browser's way).
    pub async fn open_async(
        adapter: &wgpu::Adapter,
        kernels: Option<Kernels>,
    ) -> Result<Gpu, GpuError> {
        let info = adapter.get_info();
        let subgroups = adapter_has_subgroups(adapter);
        let kernels = kernels.unwrap_or_else(|| auto_kernels(adapter));
        if let Some(why) = kernels_refused(kernels, subgroups, &adapter.limits()) {
            return Err(GpuError::Kernels {
                adapter: info.name.clone(),
                kernels: kernels.name(),
                why,
                browser: info.backend == wgpu::Backend::BrowserWebGpu,
            });
        }
        let timestamps = adapter.features().contains(
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES,
        );
        let mut features = wgpu::Features::empty();
        if subgroups {
            features |= wgpu::Features::SUBGROUP;
        }
        // For --profile: a timestamp after every dispatch, inside one compute pass.
        if timestamps {
            features |=
                wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        }
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("mnist-wgpu device"),
                required_features: features,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|source| GpuError::Device {
                adapter: info.name.clone(),
                source,
            })?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap().push(one_line(&e.to_string()));
        }));
        let sink = errors.clone();
        device.set_device_lost_callback(move |reason, message| {
            let lost = format!("the device was lost ({reason:?}): {}", one_line(&message));
            sink.lock().unwrap().push(lost);
        });
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            subgroups,
            kernels,
            schedule: Schedule::Layered,
            tuning: None,
            tuned: None,
            timestamps,
            errors,
        })
    }

    /// Every family of matmul kernels this device can run.
    pub fn runnable_kernels(&self) -> Vec<Kernels> {
        kernels_that_fit(self.subgroups, &self.limits)
    }

    /// The error of a GPU failure while doing `what`: one line naming the adapter.
    pub fn failure(&self, what: &str, message: &str) -> GpuError {
        GpuError::Failed {
            adapter: self.info.name.clone(),
            what: what.to_string(),
            message: one_line(message),
            browser: self.info.backend == wgpu::Backend::BrowserWebGpu,
        }
    }

    /// Runs `f` (creating pipelines, submitting) inside validation and out-of-memory error
    /// scopes, so that what the driver rejects comes back as an error: at once natively; in the
    /// browser, where the scopes answer later, at the next [`Gpu::check`] (every read-back).
    pub fn scoped<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T, GpuError> {
        let memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let (invalid, oom) = (validation.pop(), memory.pop());
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(e) = pollster::block_on(invalid).or(pollster::block_on(oom)) {
            return Err(self.failure(what, &e.to_string()));
        }
        #[cfg(target_arch = "wasm32")]
        {
            let (sink, what) = (self.errors.clone(), what.to_string());
            wasm_bindgen_futures::spawn_local(async move {
                if let Some(e) = invalid.await.or(oom.await) {
                    let line = format!("{what}: {}", one_line(&e.to_string()));
                    sink.lock().unwrap().push(line);
                }
            });
        }
        self.check(what)?;
        Ok(out)
    }

    /// Natively, blocks until the device has finished the work submitted so far (and run the
    /// mapping callbacks); in the browser the event loop does that while a read-back awaits.
    pub fn wait(&self) -> Result<(), GpuError> {
        self.wait_for(None)
    }

    /// [`Gpu::wait`] for the submission `index` only (None: all so far), so that later ones
    /// stay queued and the device busy.
    pub fn wait_for(&self, index: Option<wgpu::SubmissionIndex>) -> Result<(), GpuError> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let poll = wgpu::PollType::Wait {
                submission_index: index,
                timeout: None,
            };
            if let Err(e) = self.device.poll(poll) {
                self.check("waiting for the device")?;
                return Err(self.failure("waiting for the device", &e.to_string()));
            }
        }
        #[cfg(target_arch = "wasm32")]
        let _ = index;
        Ok(())
    }

    /// Fails with the first error no scope caught (or a lost device) since the last check.
    pub fn check(&self, what: &str) -> Result<(), GpuError> {
        let mut errors = self.errors.lock().unwrap();
        if errors.is_empty() {
            return Ok(());
        }
        let first = errors.remove(0);
        errors.clear();
        Err(self.failure(what, &first))
    }

    /// The adapter of the query, with the query's kernels or those chosen for it.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(query: &AdapterQuery) -> Result<Gpu, GpuError> {
        let mut gpu = Gpu::open(&pick_adapter(query)?, query.kernels)?;
        gpu.set_schedule(query);
        Ok(gpu)
    }

    /// The query's schedule, or auto: measured when the run's shape is known.
    pub fn set_schedule(&mut self, query: &AdapterQuery) {
        self.schedule = query.schedule.unwrap_or(Schedule::Layered);
        self.tuning = query.schedule.is_none().then_some(Tuning {
            retune: query.retune,
            kernels: query.kernels.is_none(),
        });
    }
}

/// The browser's WebGPU adapter (the one `navigator.gpu.requestAdapter()` gives), with
/// `kernels` or those chosen for it, called `name` where wgpu finds no name (it maps only
/// `GPUAdapter.info.description`, which Firefox leaves empty); a browser without WebGPU, or one
/// that finds no adapter, is [`GpuError::NoWebGpu`].
pub async fn browser_gpu(kernels: Option<Kernels>, name: &str) -> Result<Gpu, GpuError> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::BROWSER_WEBGPU;
    let instance = wgpu::Instance::new(desc);
    let options = wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    };
    let adapter = instance
        .request_adapter(&options)
        .await
        .map_err(|e| GpuError::NoWebGpu(one_line(&e.to_string())))?;
    let named = |n: &mut String| {
        if n.trim().is_empty() {
            *n = name.to_string();
        }
    };
    match Gpu::open_async(&adapter, kernels).await {
        Ok(mut gpu) => {
            named(&mut gpu.info.name);
            Ok(gpu)
        }
        Err(GpuError::Kernels {
            mut adapter,
            kernels,
            why,
            browser,
        }) => {
            named(&mut adapter);
            Err(GpuError::Kernels {
                adapter,
                kernels,
                why,
                browser,
            })
        }
        Err(e) => Err(e),
    }
}

/// wgpu's messages span lines ("Caused by: ..."); an error here is one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
