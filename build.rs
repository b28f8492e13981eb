//! Links GCC's unwinder statically into `libsocksify.so`.
//!
//! The hooks catch panics (`catch_unwind`), so the library needs an
//! unwinder; by default Rust takes it from `libgcc_s.so.1`, which every
//! program we are preloaded into then has to find, map and relocate at
//! start-up: measured, about 40 µs of a 350 µs `/bin/true` (scripts/bench).
//! `libgcc_eh.a` is the same unwinder as a static archive (what `gcc
//! -static-libgcc` uses for shared libraries); linked whole, `--as-needed`
//! drops the `libgcc_s` dependency. Our panics never leave the library, so a
//! private copy of the unwinder is safe. Without the archive the build
//! falls back to `libgcc_s`, with a warning.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if !target.contains("linux-gnu") {
        return;
    }
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let found = Command::new(&compiler)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|path| path.trim().to_owned())
        .filter(|path| Path::new(path).is_absolute() && Path::new(path).is_file());
    match found {
        Some(path) => {
            let dir = Path::new(&path).parent().expect("an absolute file path has a parent");
            println!("cargo:rustc-link-search=native={}", dir.display());
            println!("cargo:rustc-link-lib=static:+whole-archive,-bundle=gcc_eh");
        }
        None => println!("cargo:warning=libgcc_eh.a not found; libsocksify.so will depend on libgcc_s.so.1 (slower start-up)"),
    }
}
