//! Reading results back: one copy through a MAP_READ staging buffer, and the training losses
//! read back one submission behind, so that the device is never idle while the host waits.
//!
//! Why the second: a read-back that waits for its copy before the next submission is queued
//! leaves the device idle for the wait, the mapping's callback and the recording of the next
//! submission. In Firefox every mapping also waits for the browser's next check for finished
//! GPU work (about 100 ms). Queuing submission k+1 before awaiting submission k's losses hides
//! all of that behind k+1's work.

use std::collections::VecDeque;
use std::ops::Range;

use anyhow::{Result, ensure};
use futures_channel::oneshot;

use crate::gpu::device::Gpu;

/// A MAP_READ buffer of `bytes` for [`read_back`].
pub fn staging(gpu: &Gpu, label: &str, bytes: usize) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// A mapping of the first `bytes` of a staging buffer, asked for right after the submission
/// `index` that fills them.
pub struct Mapping {
    bytes: u64,
    index: wgpu::SubmissionIndex,
    mapped: oneshot::Receiver<Result<(), wgpu::BufferAsyncError>>,
}

impl Mapping {
    /// Asks for `staging[..bytes]` to be mapped once the submission `index` is done.
    pub fn after(staging: &wgpu::Buffer, bytes: u64, index: wgpu::SubmissionIndex) -> Self {
        let (tx, mapped) = oneshot::channel();
        staging
            .slice(..bytes)
            .map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
        Mapping {
            bytes,
            index,
            mapped,
        }
    }

    /// Waits for the mapping (natively by blocking on that submission, in the browser by
    /// awaiting it while the event loop runs), copies the values out and unmaps.
    pub async fn finish<T: bytemuck::Pod>(
        self,
        gpu: &Gpu,
        staging: &wgpu::Buffer,
    ) -> Result<Vec<T>> {
        gpu.wait_for(Some(self.index))?;
        let mapped = self.mapped.await;
        gpu.check("waiting for the device")?;
        let failed = |why: &str| gpu.failure("mapping a read-back buffer", why);
        match mapped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(failed(&e.to_string()).into()),
            Err(_) => return Err(failed("callback dropped").into()),
        }
        let slice = staging.slice(..self.bytes);
        let view = slice
            .get_mapped_range()
            .map_err(|e| gpu.failure("reading a read-back buffer", &e.to_string()))?;
        let out = bytemuck::pod_collect_to_vec(&view);
        drop(view);
        staging.unmap();
        Ok(out)
    }
}

/// Copies `count` elements from `src` (from element `offset`) through `staging`, a MAP_READ
/// buffer large enough for them, and waits for them.
pub async fn read_back<T: bytemuck::Pod>(
    gpu: &Gpu,
    src: &wgpu::Buffer,
    offset: usize,
    count: usize,
    staging: &wgpu::Buffer,
) -> Result<Vec<T>> {
    let size = std::mem::size_of::<T>() as u64;
    let bytes = count as u64 * size;
    ensure!(
        staging.size() >= bytes,
        "read-back: staging holds {} bytes, needs {bytes}",
        staging.size()
    );
    let mut enc = gpu
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("read-back"),
        });
    enc.copy_buffer_to_buffer(src, offset as u64 * size, staging, 0, bytes);
    let index = gpu.scoped("reading back", || gpu.queue.submit([enc.finish()]))?;
    Mapping::after(staging, bytes, index)
        .finish(gpu, staging)
        .await
}

/// The training losses' read-backs in flight: a training submission ends with a copy of its
/// steps' losses into a free slot, mapped as soon as it is submitted; [`LossReads::take`]
/// awaits them in order.
pub struct LossReads {
    /// slots: 2 x [steps per epoch] f32, MAP_READ
    slots: [wgpu::Buffer; 2],
    /// (steps, slot, mapping), oldest first.
    pending: VecDeque<(Range<usize>, usize, Mapping)>,
}

impl LossReads {
    pub fn new(gpu: &Gpu, steps_per_epoch: usize) -> LossReads {
        let slot = |i| staging(gpu, &format!("losses read-back {i}"), 4 * steps_per_epoch);
        LossReads {
            slots: [slot(0), slot(1)],
            pending: VecDeque::new(),
        }
    }

    /// A free slot for the next submission's losses: when both are in flight, the older read
    /// is finished and dropped (its steps' losses are still on the device).
    pub async fn free_slot(&mut self, gpu: &Gpu) -> Result<usize> {
        if self.pending.len() == self.slots.len() {
            let (_, slot, m) = self.pending.pop_front().expect("a read in flight");
            m.finish::<f32>(gpu, &self.slots[slot]).await?;
        }
        let busy: Vec<usize> = self.pending.iter().map(|p| p.1).collect();
        Ok((0..self.slots.len()).find(|s| !busy.contains(s)).unwrap())
    }

    /// Records the copy of `losses[steps]` into `slot`, at the end of the submission being
    /// recorded in `enc`.
    pub fn copy(
        &self,
        enc: &mut wgpu::CommandEncoder,
        losses: &wgpu::Buffer,
        steps: &Range<usize>,
        slot: usize,
    ) {
        let bytes = 4 * steps.len() as u64;
        enc.copy_buffer_to_buffer(losses, 4 * steps.start as u64, &self.slots[slot], 0, bytes);
    }

    /// Asks for `slot` to be mapped once submission `index` is done.
    pub fn submitted(&mut self, steps: Range<usize>, slot: usize, index: wgpu::SubmissionIndex) {
        let bytes = 4 * steps.len() as u64;
        let m = Mapping::after(&self.slots[slot], bytes, index);
        self.pending.push_back((steps, slot, m));
    }

    /// The losses of `steps` if the oldest read in flight is exactly those; None (every read
    /// in flight finished and dropped) otherwise, and the caller reads them from the device.
    pub async fn take(&mut self, gpu: &Gpu, steps: &Range<usize>) -> Result<Option<Vec<f32>>> {
        if let Some(i) = self.pending.iter().position(|p| &p.0 == steps) {
            for _ in 0..i {
                let (_, slot, m) = self.pending.pop_front().unwrap();
                m.finish::<f32>(gpu, &self.slots[slot]).await?;
            }
            let (_, slot, m) = self.pending.pop_front().unwrap();
            return Ok(Some(m.finish(gpu, &self.slots[slot]).await?));
        }
        self.drain(gpu).await?;
        Ok(None)
    }

    /// Finishes and drops every read in flight.
    pub async fn drain(&mut self, gpu: &Gpu) -> Result<()> {
        while let Some((_, slot, m)) = self.pending.pop_front() {
            m.finish::<f32>(gpu, &self.slots[slot]).await?;
        }
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.slots.iter().map(|s| s.size()).sum()
    }
}
