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
//!
//! It also compiles the three variadic exec hooks, which are C (below).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    compile_variadic_hooks();
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

/// `execl`, `execlp`, `execle` are variadic, which stable Rust cannot
/// define: they are C (`src/hooks/exec_variadic.c`), compiled here with the
/// C compiler that links Rust programs anyway, and linked in as an object.
fn compile_variadic_hooks() {
    const SOURCE: &str = "src/hooks/exec_variadic.c";
    println!("cargo:rerun-if-changed={SOURCE}");
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let object = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("exec_variadic.o");
    let status = Command::new(&compiler)
        .args(["-c", "-O2", "-fPIC", "-fvisibility=hidden", "-Wall", "-Werror", "-o"])
        .arg(&object)
        .arg(SOURCE)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {compiler:?} for {SOURCE}: {e}"));
    assert!(status.success(), "{compiler} failed on {SOURCE}");
    println!("cargo:rustc-link-arg={}", object.display());
}
