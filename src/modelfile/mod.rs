//! Model files: the tutorial's `state_dict` as safetensors, f32, readable by
//! `safetensors.torch.load_file` and `nn.Sequential.load_state_dict(strict=True)`.
//!
//! Convention: keys and shapes are PyTorch's (`0.weight: [128, 784]`, `0.bias: [128]`,
//! `2.weight`, ..., layer `l` is module `2*l` because a ReLU sits between every two Linears);
//! the values are copied to and from the flat table of [`Arch::table`]. The architecture is
//! read back from the shapes alone; the metadata (hidden sizes, recipe, accuracy, adapter) is
//! for people.

mod named;
mod sequential;

use sequential::{chained_sizes, linear_layers};

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::model::Arch;

/// Keys under this prefix hold a checkpoint's optimizer state; they are not the model.
pub const OPTIMIZER_PREFIX: &str = "optimizer.";

/// Where `train` writes its model unless told otherwise.
pub const DEFAULT_MODEL_FILE: &str = crate::recipe::Preset::Mlp.model_file();

#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a safetensors file ({reason})")]
    Format { path: PathBuf, reason: String },
    /// A well-formed file that does not hold this kind of model.
    #[error("{path}: {problem}")]
    Content { path: PathBuf, problem: String },
}

/// A model read from a file.
#[derive(Clone, Debug)]
pub struct ModelFile {
    pub arch: Arch,
    /// params: [param_count], the flat table of `arch`
    pub params: Vec<f32>,
    pub metadata: BTreeMap<String, String>,
}

impl ModelFile {
    /// How the model's inputs are normalised: as its metadata says, else as the recipe of its
    /// kind of model trains (the tutorial's (0.5, 0.5) for an MLP, pytorch/examples'
    /// (0.1307, 0.3081) for its CNNs), since PyTorch's own files record none.
    pub fn normalize(&self) -> Result<crate::data::Normalize, String> {
        normalize_of(&self.arch, &self.metadata)
    }
}

/// [`ModelFile::normalize`] of a model `arch` with file metadata `metadata`.
pub fn normalize_of(
    arch: &Arch,
    metadata: &BTreeMap<String, String>,
) -> Result<crate::data::Normalize, String> {
    let preset = crate::recipe::Preset::of(arch).unwrap_or_default();
    match metadata.get("normalize") {
        Some(n) => {
            crate::data::Normalize::parse(n).map_err(|e| format!("metadata `normalize` `{n}`: {e}"))
        }
        None => Ok(preset.defaults().normalize),
    }
}

/// Serialises `params` (the flat table of `arch`) with `metadata` to safetensors bytes.
pub fn to_bytes(
    arch: &Arch,
    params: &[f32],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, safetensors::SafeTensorError> {
    to_bytes_with(arch, params, &[], metadata)
}

/// As [`to_bytes`], plus `extra` f32 tensors (name, shape, values), e.g. optimizer state.
pub fn to_bytes_with(
    arch: &Arch,
    params: &[f32],
    extra: &[(String, Vec<usize>, &[f32])],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, safetensors::SafeTensorError> {
    assert_eq!(params.len(), arch.param_count());
    let table = arch.table();
    let bytes: &[u8] = bytemuck::cast_slice(params);
    let mut views = table
        .iter()
        .map(|e| {
            let data = &bytes[4 * e.offset..4 * (e.offset + e.len())];
            TensorView::new(Dtype::F32, e.shape.clone(), data).map(|v| (e.name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (name, shape, values) in extra {
        let v = TensorView::new(Dtype::F32, shape.clone(), bytemuck::cast_slice(values))?;
        views.push((name.clone(), v));
    }
    let mut meta: HashMap<String, String> = metadata.clone().into_iter().collect();
    // What safetensors.torch writes: marks the layout as PyTorch's.
    meta.entry("format".into()).or_insert_with(|| "pt".into());
    safetensors::serialize(views, Some(meta))
}

/// What a model file trained here records: `program`, then the data set and its
/// normalisation, the architecture, the recipe (its optimizer among it), the adapter and, when
/// known, the final test figures `(loss, accuracy)`.
pub fn training_metadata(
    program: &str,
    (dataset, normalize): (&str, crate::data::Normalize),
    arch: &Arch,
    r: &crate::recipe::Recipe,
    adapter: &str,
    test: Option<(f64, f64)>,
) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = [
        ("program", program.to_string()),
        ("dataset", dataset.to_string()),
        ("sizes", crate::flags::arch_string(arch)),
        ("epochs", r.epochs.to_string()),
        ("batch_size", r.batch_size.to_string()),
        ("lr", r.lr.to_string()),
        ("momentum", r.momentum().to_string()),
        ("optimizer", r.optimizer.name().to_string()),
        ("weight_decay", r.weight_decay.to_string()),
        ("gamma", r.gamma.to_string()),
        ("shuffle", r.shuffle.to_string()),
        ("normalize", normalize.name()),
        ("seed", r.seed.to_string()),
        ("adapter", adapter.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    // An MLP's hidden sizes (a CNN has none to set: its recipe names it).
    match arch.net_name() {
        None => m.insert("hidden".into(), crate::flags::hidden_string(arch)),
        Some(net) => m.insert("recipe".into(), net.to_string()),
    };
    if let Some((loss, accuracy)) = test {
        m.insert("accuracy".into(), format!("{accuracy:.4}"));
        m.insert("test_loss".into(), format!("{loss:.6}"));
    }
    m
}

/// Writes a model file atomically: a partial write never replaces or leaves a model behind.
/// (Files are the native program's; the page downloads [`to_bytes`] instead.)
#[cfg(not(target_arch = "wasm32"))]
pub fn save(
    path: &Path,
    arch: &Arch,
    params: &[f32],
    metadata: &BTreeMap<String, String>,
) -> Result<(), ModelFileError> {
    let bytes = to_bytes(arch, params, metadata).map_err(|e| ModelFileError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    write_atomic(path, &bytes).map_err(|source| ModelFileError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to a temporary file in `path`'s directory, syncs it, and renames it over
/// `path`; on any failure the temporary file is removed and `path` is untouched.
#[cfg(not(target_arch = "wasm32"))]
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // The rename itself is durable once the directory is synced; not every platform can
        // open a directory, so this is best effort.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a model file, checking that it holds the tutorial's kind of network with `input`
/// inputs and `classes` outputs.
pub fn load(path: &Path, input: usize, classes: usize) -> Result<ModelFile, ModelFileError> {
    let bytes = fs::read(path).map_err(|source| ModelFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    from_bytes(&bytes, input, classes).map_err(|e| e.at(path))
}

/// Why bytes are not a model, before the file's name is attached.
#[derive(Debug)]
pub enum Problem {
    Format(String),
    Content(String),
}

impl Problem {
    /// The error of the file at `path` (or the page's file name) having this problem.
    pub fn at(self, path: &Path) -> ModelFileError {
        let path = path.to_path_buf();
        match self {
            Problem::Format(reason) => ModelFileError::Format { path, reason },
            Problem::Content(problem) => ModelFileError::Content { path, problem },
        }
    }
}

/// Parses and checks a model from safetensors bytes; see [`load`].
pub fn from_bytes(bytes: &[u8], input: usize, classes: usize) -> Result<ModelFile, Problem> {
    if bytes.is_empty() {
        return Err(Problem::Format("the file is empty".into()));
    }
    let st = SafeTensors::deserialize(bytes).map_err(|e| Problem::Format(e.to_string()))?;
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| Problem::Format(e.to_string()))?;
    let metadata: BTreeMap<String, String> = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    // A checkpoint's optimizer state is not part of the model; a model reader skips it.
    let tensors: HashMap<String, TensorView<'_>> = st
        .tensors()
        .into_iter()
        .filter(|(k, _)| !k.starts_with(OPTIMIZER_PREFIX))
        .collect();
    let (arch, params) = match tensors.contains_key("0.weight") {
        false
            if tensors
                .keys()
                .any(|k| !k.starts_with(|c: char| c.is_ascii_digit())) =>
        {
            named::model(&tensors, input, classes)?
        }
        _ => {
            let layers = linear_layers(tensors)?;
            // The keys 0, 2, 4, ... name the Linears of the tutorial's kind of model.
            let sizes = chained_sizes(&layers, input, classes)?;
            let arch = Arch::mlp(sizes[0], &sizes[1..sizes.len() - 1], sizes[sizes.len() - 1]);
            let by_name = layers
                .iter()
                .flat_map(|(wn, w, bn, b)| [(wn.as_str(), w), (bn.as_str(), b)])
                .collect();
            let params = flat_params(&arch, &by_name)?;
            (arch, params)
        }
    };
    Ok(ModelFile {
        arch,
        params,
        metadata,
    })
}

fn content(s: String) -> Problem {
    Problem::Content(s)
}

/// The tensors in the flat table of `arch`, all finite, from those of `by_name` (which holds
/// each of the table's keys with its shape, in F32).
fn flat_params(arch: &Arch, by_name: &HashMap<&str, &TensorView<'_>>) -> Result<Vec<f32>, Problem> {
    let mut params = vec![0f32; arch.param_count()];
    for e in arch.table() {
        let view = by_name[e.name.as_str()];
        for (dst, src) in params[e.range()]
            .iter_mut()
            .zip(view.data().chunks_exact(4))
        {
            *dst = f32::from_le_bytes([src[0], src[1], src[2], src[3]]);
        }
        if let Some(bad) = params[e.range()].iter().position(|v| !v.is_finite()) {
            return Err(content(format!(
                "tensor `{}` holds a non-finite value ({} at index {bad})",
                e.name,
                params[e.offset + bad]
            )));
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tutorial() -> (Arch, Vec<f32>) {
        let a = Arch::mlp(784, &[128, 128, 64, 64], 10);
        let p = a.init(3);
        (a, p)
    }

    #[test]
    fn round_trip_keeps_every_bit_and_the_metadata() {
        let (a, p) = tutorial();
        let meta = BTreeMap::from([("hidden".to_string(), "128,128,64,64".to_string())]);
        let bytes = to_bytes(&a, &p, &meta).unwrap();
        let m = from_bytes(&bytes, 784, 10).unwrap();
        assert_eq!(m.arch, a);
        assert_eq!(m.params, p);
        assert_eq!(m.metadata["hidden"], "128,128,64,64");
        assert_eq!(m.metadata["format"], "pt");
    }

    fn rewrite(
        a: &Arch,
        p: &[f32],
        edit: impl Fn(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>),
    ) -> Vec<u8> {
        let bytes: &[u8] = bytemuck::cast_slice(p);
        let mut ts: Vec<_> = a
            .table()
            .iter()
            .map(|e| {
                (
                    e.name.clone(),
                    Dtype::F32,
                    e.shape.clone(),
                    bytes[4 * e.offset..4 * (e.offset + e.len())].to_vec(),
                )
            })
            .collect();
        edit(&mut ts);
        let views: Vec<_> = ts
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    fn problem(bytes: &[u8]) -> String {
        match from_bytes(bytes, 784, 10) {
            Ok(_) => panic!("accepted a bad model"),
            Err(Problem::Format(s) | Problem::Content(s)) => s,
        }
    }

    #[test]
    fn bad_models_are_named() {
        let (a, p) = tutorial();
        let good = to_bytes(&a, &p, &BTreeMap::new()).unwrap();
        assert!(problem(&[]).contains("empty"));
        assert!(!problem(b"PK\x03\x04 this is a zip").is_empty());
        assert!(!problem(&good[..good.len() - 100]).is_empty());
        let missing = rewrite(&a, &p, |t| t.retain(|e| e.0 != "4.bias"));
        assert!(problem(&missing).contains("missing tensor `4.bias`"));
        let extra = rewrite(&a, &p, |t| {
            t.retain(|e| e.0 != "4.weight" && e.0 != "4.bias")
        });
        assert!(
            problem(&extra).contains("unexpected tensor `6.bias`"),
            "{}",
            problem(&extra)
        );
        let f16 = rewrite(&a, &p, |t| {
            t[1].1 = Dtype::F16;
            let half = t[1].3.len() / 2;
            t[1].3.truncate(half);
        });
        assert!(problem(&f16).contains("`0.bias` is F16, expected F32"));
        let small = Arch::mlp(100, &[16], 10);
        let sp = small.init(1);
        assert!(
            problem(&to_bytes(&small, &sp, &BTreeMap::new()).unwrap()).contains("takes 100 inputs")
        );
        let wide = Arch::mlp(784, &[16], 12);
        let wp = wide.init(1);
        assert!(problem(&to_bytes(&wide, &wp, &BTreeMap::new()).unwrap()).contains("12 outputs"));
        let unchained = rewrite(&a, &p, |t| {
            t[2].2 = vec![128, 64];
            t[2].3.truncate(128 * 64 * 4);
        });
        assert!(
            problem(&unchained).contains("do not chain"),
            "{}",
            problem(&unchained)
        );
        let nan = rewrite(&a, &p, |t| {
            t[3].3[..4].copy_from_slice(&f32::NAN.to_le_bytes())
        });
        assert!(problem(&nan).contains("non-finite"));
    }

    #[test]
    fn atomic_write_replaces_whole_files_only() {
        let dir = std::env::temp_dir().join(format!("mnist-wgpu-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.safetensors");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        // A target that cannot be replaced (a directory): the error leaves no temporary file.
        let blocked = dir.join("sub");
        fs::create_dir_all(blocked.join("x")).unwrap();
        assert!(write_atomic(&blocked, b"data").is_err());
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "left behind: {names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
