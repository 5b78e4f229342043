//! Per-dispatch GPU time from timestamp queries inside one compute pass.

use anyhow::Result;

use crate::gpu::device::Gpu;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::readback::{read_back, staging};
use crate::profile::Profile;

/// As `program::submit`, with a timestamp before the first dispatch and after every one; then
/// waits and adds each dispatch's time to `profile`. Needs TIMESTAMP_QUERY_INSIDE_PASSES.
pub async fn submit_profiled(
    gpu: &Gpu,
    ops: &[Dispatch],
    steps: std::ops::Range<usize>,
    stride: u64,
    profile: &mut Profile,
) -> Result<()> {
    let per_chunk = ((wgpu::QUERY_SET_MAX_QUERIES as usize - 1) / ops.len()).max(1);
    let mut s = steps.start;
    while s < steps.end {
        let e = (s + per_chunk).min(steps.end);
        let ticks = timed(gpu, ops, s..e, stride).await?;
        let period = gpu.queue.get_timestamp_period() as f64;
        for (i, w) in ticks.windows(2).enumerate() {
            let ns = w[1].saturating_sub(w[0]) as f64 * period;
            profile.add(&ops[i % ops.len()].label, ns);
        }
        profile.steps += (e - s) as u64;
        s = e;
    }
    Ok(())
}

/// Records and runs `steps` of `ops` with a timestamp around every dispatch; the raw ticks.
async fn timed(
    gpu: &Gpu,
    ops: &[Dispatch],
    steps: std::ops::Range<usize>,
    stride: u64,
) -> Result<Vec<u64>> {
    let count = 1 + steps.len() * ops.len();
    let queries = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
        label: Some("profile timestamps"),
        ty: wgpu::QueryType::Timestamp,
        count: count as u32,
    });
    let resolved = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("profile timestamps (resolved)"),
        size: count as u64 * 8,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let mut enc = gpu
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("profiled steps"),
        });
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("profiled steps"),
            timestamp_writes: None,
        });
        let mut q = 0;
        pass.write_timestamp(&queries, q);
        for step in steps {
            let offset = u32::try_from(step as u64 * stride)?;
            for op in ops {
                op.encode(&mut pass, offset);
                q += 1;
                pass.write_timestamp(&queries, q);
            }
        }
    }
    enc.resolve_query_set(&queries, 0..count as u32, &resolved, 0);
    gpu.scoped("profiling", || gpu.queue.submit([enc.finish()]))?;
    read_back(
        gpu,
        &resolved,
        0,
        count,
        &staging(gpu, "profile read-back", count * 8),
    )
    .await
}
