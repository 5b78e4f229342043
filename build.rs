//! Lists every file of `shaders/` for `gpu::wgsl::SOURCES`, so that a new WGSL file needs
//! no registration: `$OUT_DIR/wgsl_sources.rs` holds one `(name, include_str!(path))` per
//! file, sorted by name.

use std::fmt::Write;
use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("shaders/ beside Cargo.toml")
        .map(|e| e.expect("a readable entry of shaders/").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .collect();
    files.sort();
    let mut out =
        String::from("/// Every WGSL file of `shaders/`, by name (listed by build.rs).\n");
    out += "pub const SOURCES: &[(&str, &str)] = &[\n";
    for path in &files {
        let name = path
            .file_name()
            .unwrap()
            .to_str()
            .expect("a UTF-8 file name");
        let path = path.to_str().expect("a UTF-8 path");
        writeln!(out, "    ({name:?}, include_str!({path:?})),").unwrap();
    }
    out += "];\n";
    let target = Path::new(&std::env::var("OUT_DIR").unwrap()).join("wgsl_sources.rs");
    std::fs::write(target, out).expect("OUT_DIR is writable");
}
