//! The parameters' layout on the device, and the conversion to and from PyTorch's.
//!
//! Files and the CPU keep PyTorch's flat table (`model::Arch::table`: `w: [out, in]` then
//! `b: [out]` per layer, packed). On the device every row of a weight is padded with zeros to a
//! multiple of 4 floats and every tensor starts at a multiple of 4, so that each product reads
//! and writes whole vec4 everywhere, whatever the layer sizes: one kernel per product, no
//! scalar twin. Gradients and momentum use the same layout; the padding is zero in all three
//! and stays zero (its gradient is zero: the padding columns of the batch-major activations
//! are zero).

use crate::model::{Arch, Layer};

pub fn pad4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// Where the tensors of the model's Linear layer l live in the device's flat buffers, in
/// floats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerAt {
    /// `in`, `out` of the layer.
    pub inp: usize,
    pub out: usize,
    /// w: [out, ldw] at `w_off`, ldw = pad4(in), columns past `in` zero
    pub w_off: usize,
    pub ldw: usize,
    /// b: [out] at `b_off`, with pad4(out) floats of room
    pub b_off: usize,
}

/// One tensor of the device layout: `rows` rows of `cols` floats, each row `ld` floats from the
/// one before, from `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Block {
    rows: usize,
    cols: usize,
    ld: usize,
    off: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceLayout {
    /// The model whose layout this is.
    pub arch: Arch,
    /// Where each Linear layer's tensors live, in order.
    pub layers: Vec<LayerAt>,
    /// Each layer of the list's tensors' offsets, in `Layer::params` order (none for a layer
    /// without tensors); a Linear's weight is padded rows (`LayerAt`), every other tensor one
    /// flat block.
    pub tensors: Vec<Vec<usize>>,
    /// Floats in each of params, grads and momentum: a multiple of 4.
    pub len: usize,
    /// Every tensor in PyTorch's order (`Arch::table`).
    blocks: Vec<Block>,
}

impl DeviceLayout {
    pub fn new(arch: &Arch) -> DeviceLayout {
        let (mut at, mut layers, mut blocks) = (0, Vec::new(), Vec::new());
        // One flat tensor of n floats at `off`, the next starting at a multiple of 4.
        let flat = |blocks: &mut Vec<Block>, off: usize, n: usize| {
            blocks.push(Block {
                rows: 1,
                cols: n,
                ld: n,
                off,
            });
            off + pad4(n)
        };
        let tensors = (arch.layers().iter())
            .map(|layer| match *layer {
                Layer::Linear { inp, out } => {
                    let ldw = pad4(inp);
                    let l = LayerAt {
                        inp,
                        out,
                        w_off: at,
                        ldw,
                        b_off: at + out * ldw,
                    };
                    layers.push(l);
                    blocks.push(Block {
                        rows: out,
                        cols: inp,
                        ld: ldw,
                        off: at,
                    });
                    at = flat(&mut blocks, l.b_off, out);
                    vec![l.w_off, l.b_off]
                }
                // Every other kind's tensors (a Conv2d's weight [cout, cin * k * k], bias
                // [cout]): each one flat block, in state_dict order.
                _ => (layer.params().iter())
                    .map(|(_, shape)| {
                        let off = at;
                        at = flat(&mut blocks, off, shape.iter().product());
                        off
                    })
                    .collect(),
            })
            .collect();
        DeviceLayout {
            arch: arch.clone(),
            layers,
            tensors,
            len: at,
            blocks,
        }
    }

    /// The layer sizes, input first (`Arch::sizes`).
    pub fn sizes(&self) -> Vec<usize> {
        let first = self.layers.first().map_or(0, |l| l.inp);
        std::iter::once(first)
            .chain(self.layers.iter().map(|l| l.out))
            .collect()
    }

    /// PyTorch's flat parameters (as `Arch::table`) in this layout, padding zero.
    pub fn to_device(&self, flat: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; self.len];
        let mut src = 0;
        for b in &self.blocks {
            for r in 0..b.rows {
                let row = b.off + r * b.ld;
                out[row..row + b.cols].copy_from_slice(&flat[src..src + b.cols]);
                src += b.cols;
            }
        }
        assert_eq!(
            src,
            flat.len(),
            "the flat parameters do not match the layout"
        );
        out
    }

    /// The parameters of one model in PyTorch's flat order.
    pub fn param_count(&self) -> usize {
        self.blocks.iter().map(|b| b.rows * b.cols).sum()
    }

    /// A set's flat parameters (PyTorch's order, model after model) in this layout, each
    /// model `len` floats after the one before.
    pub fn to_device_set(&self, flat: &[f32]) -> Vec<f32> {
        let n = self.param_count().max(1);
        flat.chunks(n).flat_map(|p| self.to_device(p)).collect()
    }

    /// A set's device buffer in PyTorch's flat order, model after model.
    pub fn from_device_set(&self, device: &[f32]) -> Vec<f32> {
        device
            .chunks(self.len.max(1))
            .flat_map(|d| self.from_device(d))
            .collect()
    }

    /// The device's buffer in PyTorch's flat order.
    pub fn from_device(&self, device: &[f32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(device.len());
        for b in &self.blocks {
            for r in 0..b.rows {
                let row = b.off + r * b.ld;
                out.extend_from_slice(&device[row..row + b.cols]);
            }
        }
        out
    }
}

/// One layer of the table both fused dispatches read (`gpu::fused`): where each layer's
/// weights, input rows, output rows and gradient rows live; WGSL twin `Layer` in
/// layer_table.wgsl.
/// Offsets are in floats.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LayerRow {
    pub inp: u32,
    pub out: u32,
    pub w_off: u32,
    pub b_off: u32,
    pub ldw: u32,
    pub x_off: u32,
    pub y_off: u32,
    pub dz_off: u32,
    pub tile0: u32,
    pub pad: [u32; 3],
}

/// The table of `layout` for batches of `bp` columns, and the weight tiles in all.
pub fn layer_rows(layout: &DeviceLayout, bp: usize) -> (Vec<LayerRow>, usize) {
    let (mut x, mut dz, mut tiles) = (0, 0, 0);
    let rows = layout
        .layers
        .iter()
        .map(|l| {
            let y = x + bp * l.ldw;
            let row = LayerRow {
                inp: l.inp as u32,
                out: l.out as u32,
                w_off: l.w_off as u32,
                b_off: l.b_off as u32,
                ldw: l.ldw as u32,
                x_off: x as u32,
                y_off: y as u32,
                dz_off: dz as u32,
                tile0: tiles as u32,
                pad: [0; 3],
            };
            x = y;
            dz += bp * pad4(l.out);
            tiles += l.out.div_ceil(8) * l.ldw.div_ceil(8).next_multiple_of(8);
            row
        })
        .collect();
    (rows, tiles)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Conv2d's tensors are one block each, every tensor starting at a multiple of 4.
    #[test]
    fn a_cnn_round_trips() {
        let arch = Arch::cnn_small();
        let layout = DeviceLayout::new(&arch);
        assert_eq!(layout.tensors[0], [0, 252]);
        assert!(layout.tensors[1].is_empty(), "MaxPool2d has no tensors");
        assert_eq!(layout.layers.len(), 2);
        let flat: Vec<f32> = (0..arch.param_count()).map(|i| i as f32 + 1.0).collect();
        let dev = layout.to_device(&flat);
        assert_eq!(dev.iter().filter(|&&v| v != 0.0).count(), flat.len());
        assert_eq!(layout.from_device(&dev), flat);
    }

    #[test]
    fn round_trip_with_padding() {
        let arch = Arch::mlp(5, &[3, 6], 2);
        let layout = DeviceLayout::new(&arch);
        assert_eq!(layout.layers[0].ldw, 8);
        assert!(
            layout
                .layers
                .iter()
                .all(|l| l.w_off % 4 == 0 && l.b_off % 4 == 0)
        );
        assert_eq!(layout.len % 4, 0);
        let flat: Vec<f32> = (0..arch.param_count()).map(|i| i as f32 + 1.0).collect();
        let dev = layout.to_device(&flat);
        assert_eq!(dev.iter().filter(|&&v| v != 0.0).count(), flat.len());
        assert_eq!(layout.from_device(&dev), flat);
        // w0 row 1 starts at 8 on the device and at 5 in the file
        assert_eq!(dev[8], flat[5]);
    }
}
