//! Model files of a module class rather than an `nn.Sequential`: their keys are the class's
//! attributes (`conv1.weight`, `fc1.bias`), and the file is the model of the known net whose
//! keys and shapes it holds exactly.

use std::collections::HashMap;

use safetensors::{Dtype, tensor::TensorView};

use super::{Problem, content, flat_params};
use crate::model::Arch;
use crate::recipe::Preset;

/// The nets a file may hold, by the recipe that trains each.
const NETS: [Preset; 2] = [Preset::CnnSmall, Preset::Cnn];

/// The model and its flat parameters of a file whose tensors are `tensors`, for images of
/// `input` pixels and `classes` classes.
pub(super) fn model(
    tensors: &HashMap<String, TensorView<'_>>,
    input: usize,
    classes: usize,
) -> Result<(Arch, Vec<f32>), Problem> {
    let fits = |arch: &Arch| {
        let table = arch.table();
        table.len() == tensors.len()
            && table.iter().all(|e| {
                tensors
                    .get(&e.name)
                    .is_some_and(|t| t.shape() == e.shape && t.dtype() == Dtype::F32)
            })
    };
    let Some(preset) = NETS.into_iter().find(|p| fits(&p.arch(&[]))) else {
        return Err(content(format!(
            "its tensors fit no model this program knows: expected the tutorial's nn.Sequential \
             (0.weight, 0.bias, 2.weight, ...), or the Net of {} ({}), all F32",
            NETS.map(|p| format!("--recipe {}", p.name())).join(" or "),
            NETS.map(|p| first_key(&p.arch(&[]))).join("; ")
        )));
    };
    let arch = preset.arch(&[]);
    if (arch.input(), arch.output()) != (input, classes) {
        return Err(content(format!(
            "the model of --recipe {} takes {} inputs and gives {} classes; the data set has {input} \
             pixels and {classes} classes",
            preset.name(),
            arch.input(),
            arch.output()
        )));
    }
    let by_name = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let params = flat_params(&arch, &by_name)?;
    Ok((arch, params))
}

/// `conv1.weight [10, 1, 5, 5]`: how a net's first tensor tells it apart.
fn first_key(arch: &Arch) -> String {
    let e = &arch.table()[0];
    format!("{} {:?}", e.name, e.shape)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{from_bytes, to_bytes};
    use crate::model::{Arch, Conv2d, Layer};

    #[test]
    fn a_cnn_file_round_trips_and_an_unknown_one_is_refused() {
        let a = Arch::cnn_small();
        let p = a.init(2);
        let bytes = to_bytes(&a, &p, &BTreeMap::new()).unwrap();
        let m = from_bytes(&bytes, 784, 10).unwrap();
        assert_eq!((m.arch, m.params), (a, p));
        // conv1 of 12 channels: the keys of cnn-small, not its shapes.
        let layers = vec![Layer::Conv2d(Conv2d::new(1, 12, 5)), Layer::Flatten];
        let names = vec!["conv1".to_string(), "view".to_string()];
        let mut layers_all = layers;
        layers_all.extend([
            Layer::Linear {
                inp: 12 * 24 * 24,
                out: 10,
            },
            Layer::LogSoftmax,
        ]);
        let odd = Arch::named(
            [1, 28, 28],
            layers_all,
            [names, vec!["fc2".into(), "out".into()]].concat(),
        )
        .unwrap();
        let bytes = to_bytes(&odd, &odd.init(1), &BTreeMap::new()).unwrap();
        let err = format!("{:?}", from_bytes(&bytes, 784, 10).unwrap_err());
        assert!(
            err.contains("fit no model") && err.contains("conv1.weight [10, 1, 5, 5]"),
            "{err}"
        );
    }
}
