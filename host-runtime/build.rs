//! Builds the guard component for wasm32 and hands its path to the crate, which embeds it.
//!
//! The inner build uses its own target folder: one shared with the outer build would wait
//! forever on the outer build's lock.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";
const PROFILE: &str = "wasm-release";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let workspace = manifest_dir
        .parent()
        .unwrap_or(Path::new(".."))
        .to_path_buf();
    for watched in [
        "guard-core/src",
        "guard-core/rules",
        "guard-core/model",
        "guard-core/Cargo.toml",
        "guard-montgomery",
        "guard-wasm/component",
        "guard-wasm/wit",
        "Cargo.lock",
        // Profiles and shared dependency features live here.
        "Cargo.toml",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    println!("cargo:rerun-if-env-changed=SIGIL_GUARD_WASM");

    // A prebuilt module may be named instead (for packagers); it is checked at load time.
    if let Some(prebuilt) = env::var_os("SIGIL_GUARD_WASM") {
        println!(
            "cargo:rustc-env=SIGIL_GUARD_WASM_PATH={}",
            PathBuf::from(prebuilt).display()
        );
        return;
    }

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    // OUT_DIR is <target>/<profile>/build/<pkg>/out; the guest gets a sibling of <profile>,
    // one per checkout: two clones sharing a target folder would otherwise overwrite each
    // other's module at the one output path while each believes its own build is fresh.
    let checkout = {
        use std::hash::{Hash as _, Hasher as _};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        workspace.hash(&mut hasher);
        format!("{:016x}", hasher.finish())
    };
    let guest_target = out_dir
        .ancestors()
        .nth(4)
        .map(|t| t.join("guest").join(&checkout))
        .unwrap_or_else(|| out_dir.join("guest"));

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&workspace)
        .args([
            "build",
            "--package",
            "guard-component",
            "--target",
            TARGET,
            "--profile",
            PROFILE,
        ])
        .args([
            "--config",
            "target.wasm32-unknown-unknown.linker=\"wasm-component-ld\"",
        ])
        .env("CARGO_TARGET_DIR", &guest_target);
    // What the outer build set for itself must not leak into the guest's build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        command.env_remove(var);
    }
    let status = command.status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => fail(&format!(
            "building the guard component failed ({s}). Is the wasm32 target installed? Run `scripts/setup`."
        )),
        Err(e) => fail(&format!("could not run cargo to build the guard component: {e}")),
    }
    let module = guest_target
        .join(TARGET)
        .join(PROFILE)
        .join("guard_component.wasm");
    if !module.is_file() {
        fail(&format!(
            "the guard component was not written at {}",
            module.display()
        ));
    }
    println!("cargo:rustc-env=SIGIL_GUARD_WASM_PATH={}", module.display());
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
