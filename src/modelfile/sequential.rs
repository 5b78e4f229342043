//! Model files of an `nn.Sequential` of the tutorial's kind: Linear layers keyed 0, 2, 4, ...

use std::collections::HashMap;

use safetensors::{Dtype, tensor::TensorView};

use super::{Problem, content};

/// (weight name, weight, bias name, bias) of one Linear layer.
pub(super) type Layer<'a> = (String, TensorView<'a>, String, TensorView<'a>);

/// Layers 0, 2, 4, ... until a weight is missing, each an F32 `[out, in]` weight and an
/// `[out]` bias; any other key is unexpected.
pub(super) fn linear_layers(
    mut tensors: HashMap<String, TensorView<'_>>,
) -> Result<Vec<Layer<'_>>, Problem> {
    let f32_only = |name: &str, t: &TensorView<'_>| match t.dtype() {
        Dtype::F32 => Ok(()),
        other => Err(content(format!(
            "tensor `{name}` is {other:?}, expected F32"
        ))),
    };
    let mut layers = Vec::new();
    loop {
        let l = layers.len();
        let (wname, bname) = (format!("{}.weight", 2 * l), format!("{}.bias", 2 * l));
        let Some(w) = tensors.remove(&wname) else {
            if l == 0 {
                return Err(content(
                    "missing tensor `0.weight` (expected the tutorial's nn.Sequential state_dict: \
                     0.weight, 0.bias, 2.weight, ...)"
                        .into(),
                ));
            }
            break;
        };
        f32_only(&wname, &w)?;
        let b = tensors
            .remove(&bname)
            .ok_or_else(|| content(format!("missing tensor `{bname}`")))?;
        f32_only(&bname, &b)?;
        let (ws, bs) = (w.shape().to_vec(), b.shape().to_vec());
        if ws.len() != 2 || ws.contains(&0) {
            return Err(content(format!(
                "tensor `{wname}` has shape {ws:?}, expected [out, in]"
            )));
        }
        if bs != [ws[0]] {
            return Err(content(format!(
                "tensor `{bname}` has shape {bs:?}, expected [{}] to match `{wname}` {ws:?}",
                ws[0]
            )));
        }
        layers.push((wname, w, bname, b));
    }
    if let Some(extra) = tensors.keys().min() {
        return Err(content(format!(
            "unexpected tensor `{extra}` (after {} Linear layers; keys must be 0.weight, 0.bias, \
             2.weight, ... with no gaps)",
            layers.len()
        )));
    }
    Ok(layers)
}

/// The layer sizes, input first, once each weight's input is the previous one's output and
/// the ends fit the data.
pub(super) fn chained_sizes(
    layers: &[Layer<'_>],
    input: usize,
    classes: usize,
) -> Result<Vec<usize>, Problem> {
    let mut sizes = vec![layers[0].1.shape()[1]];
    for (name, w, _, _) in layers {
        let (o, i) = (w.shape()[0], w.shape()[1]);
        let prev = *sizes.last().unwrap();
        if i != prev {
            return Err(content(format!(
                "shapes do not chain: `{name}` is [{o}, {i}] but the layer before it gives {prev} outputs"
            )));
        }
        sizes.push(o);
    }
    if sizes[0] != input {
        return Err(content(format!(
            "the model takes {} inputs (`0.weight` is [{}, {}]), the images have {input} pixels",
            sizes[0], sizes[1], sizes[0]
        )));
    }
    if *sizes.last().unwrap() != classes {
        return Err(content(format!(
            "the model has {} outputs (`{}`), the data set has {classes} classes",
            sizes.last().unwrap(),
            layers.last().unwrap().0
        )));
    }
    Ok(sizes)
}
