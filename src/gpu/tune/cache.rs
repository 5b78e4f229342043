//! Where auto keeps its choices: a file natively, the page's local storage in the browser;
//! one entry per key, the chosen plan and every figure measured.

use super::Figures;
use crate::gpu::plan::Plan;

/// One cached choice as text: `choice \t figures` (the file adds the key in front).
pub(super) fn entry_text(choice: Plan, figures: &Figures) -> String {
    let figs: Vec<String> = figures
        .iter()
        .map(|(c, ms)| format!("{} {ms:.4}", c.name()))
        .collect();
    format!("{}\t{}", choice.name(), figs.join(", "))
}

/// The inverse of [`entry_text`]; None for text that does not parse (measured again).
pub(super) fn parse_entry(choice: &str, figs: &str) -> Option<(Plan, Figures)> {
    let figures = figs
        .split(", ")
        .map(|f| {
            let (c, ms) = f.split_once(' ')?;
            Some((Plan::parse(c)?, ms.parse().ok()?))
        })
        .collect::<Option<Figures>>()?;
    Some((Plan::parse(choice)?, figures))
}

/// The cache file: one line per key, `key \t choice \t figures`, rewritten whole through a
/// temporary file. A line that does not parse is ignored (measured again).
#[cfg(not(target_arch = "wasm32"))]
mod file {
    use std::path::PathBuf;

    use super::{Figures, Plan, entry_text, parse_entry};

    /// `$MNIST_WGPU_CACHE_DIR/schedules.tsv`, else the user cache directory's
    /// `mnist-wgpu/schedules.tsv`.
    pub fn path() -> Option<PathBuf> {
        let dir = match std::env::var_os("MNIST_WGPU_CACHE_DIR") {
            Some(d) => PathBuf::from(d),
            None => dirs::cache_dir()?.join("mnist-wgpu"),
        };
        Some(dir.join("schedules.tsv"))
    }

    /// Every entry: (key, choice, figures).
    pub fn entries() -> Vec<(String, Plan, Figures)> {
        let Some(text) = path().and_then(|p| std::fs::read_to_string(p).ok()) else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|line| {
                let mut cols = line.split('\t');
                let (key, choice, figs) = (cols.next()?, cols.next()?, cols.next()?);
                let (c, f) = parse_entry(choice, figs)?;
                Some((key.to_string(), c, f))
            })
            .collect()
    }

    pub fn lookup(key: &str) -> Option<(Plan, Figures)> {
        entries()
            .into_iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, c, f)| (c, f))
    }

    pub fn cached_how() -> String {
        let at = path().map_or("the cache".into(), |p| p.display().to_string());
        format!("measured earlier, cached in {at} (--retune measures again)")
    }

    /// Records `choice` for `key`; says where, or why it could not.
    pub fn store(key: &str, choice: Plan, figures: &Figures) -> String {
        let Some(path) = path() else {
            return "measured now; no cache directory to keep it in".into();
        };
        let mut lines: Vec<String> = entries()
            .into_iter()
            .filter(|(k, _, _)| k != key)
            .map(|(k, c, f)| format!("{k}\t{}", entry_text(c, &f)))
            .collect();
        lines.push(format!("{key}\t{}", entry_text(choice, figures)));
        let write = std::fs::create_dir_all(path.parent().unwrap()).and_then(|_| {
            crate::modelfile::write_atomic(&path, (lines.join("\n") + "\n").as_bytes())
        });
        match write {
            Ok(()) => format!("measured now, cached in {}", path.display()),
            Err(e) => format!("measured now; {}: not cached ({e})", path.display()),
        }
    }
}

/// In the browser the choice is kept in the page's local storage, one item per key.
#[cfg(target_arch = "wasm32")]
mod local_storage {
    use super::{Figures, Plan, entry_text, parse_entry};

    fn storage() -> Option<web_sys::Storage> {
        web_sys::window()?.local_storage().ok()?
    }

    fn item(key: &str) -> String {
        format!("mnist-wgpu schedule | {key}")
    }

    pub fn lookup(key: &str) -> Option<(Plan, Figures)> {
        let text = storage()?.get_item(&item(key)).ok()??;
        let (choice, figs) = text.split_once('\t')?;
        parse_entry(choice, figs)
    }

    pub fn cached_how() -> String {
        "measured earlier, kept in this browser's local storage (retune=1 measures again)".into()
    }

    pub fn store(key: &str, choice: Plan, figures: &Figures) -> String {
        let kept =
            storage().and_then(|s| s.set_item(&item(key), &entry_text(choice, figures)).ok());
        match kept {
            Some(()) => "measured now, kept in this browser's local storage".into(),
            None => "measured now (this browser keeps no local storage for the page)".into(),
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use file::*;
#[cfg(target_arch = "wasm32")]
pub use local_storage::*;
