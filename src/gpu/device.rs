//! Choosing an adapter and opening a device on it: the device, its queue, what the adapter
//! reports (name, limits, subgroups, timestamps) and GPU errors as values. Nothing here knows
//! about kernels or schedules (`gpu::plan` does).

use std::fmt;
use std::sync::{Arc, Mutex};

use crate::gpu::error::GpuError;

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
}

/// A device and what the adapter reports about it (a clone shares the device).
#[derive(Clone)]
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// Whether the device was opened with subgroups (the adapter has them, at least 8 lanes wide),
    /// so that it can run the subgroup kernels.
    pub subgroups: bool,
    /// Whether it has timestamp queries inside compute passes (for `--profile`).
    pub timestamps: bool,
    /// Errors no scope caught (wgpu's default would panic) and a lost device, in order.
    errors: Arc<Mutex<Vec<String>>>,
}

impl fmt::Display for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} | {:?} | {:?}",
            self.info.name, self.info.backend, self.info.device_type
        )
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

impl Gpu {
    /// Whether the adapter is a CPU-type (software) one: lavapipe, llvmpipe, SwiftShader.
    pub fn software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Opens a device on `adapter`, with subgroups and timestamp queries where it has them.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(adapter: &wgpu::Adapter) -> Result<Gpu, GpuError> {
        pollster::block_on(Gpu::open_async(adapter))
    }

    /// [`Gpu::open`], awaited (the browser's way).
    pub async fn open_async(adapter: &wgpu::Adapter) -> Result<Gpu, GpuError> {
        let info = adapter.get_info();
        let subgroups = adapter_has_subgroups(adapter);
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
            timestamps,
            errors,
        })
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

    /// The adapter of the query.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(query: &AdapterQuery) -> Result<Gpu, GpuError> {
        Gpu::open(&pick_adapter(query)?)
    }
}

/// The browser's WebGPU adapter (the one `navigator.gpu.requestAdapter()` gives), called
/// `name` where wgpu finds no name (it maps only `GPUAdapter.info.description`, which Firefox
/// leaves empty); a browser without WebGPU, or one that finds no adapter, is
/// [`GpuError::NoWebGpu`].
pub async fn browser_gpu(name: &str) -> Result<Gpu, GpuError> {
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
    let mut gpu = Gpu::open_async(&adapter).await?;
    if gpu.info.name.trim().is_empty() {
        gpu.info.name = name.to_string();
    }
    Ok(gpu)
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
