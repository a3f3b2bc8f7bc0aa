//! Records the versions of the learning crates (from Cargo.lock) for model
//! manifests.
use std::fs;

fn main() {
    let lock = fs::read_to_string("../../Cargo.lock").unwrap_or_default();
    for name in [
        "linfa",
        "linfa-logistic",
        "linfa-bayes",
        "ndarray",
        "argmin",
    ] {
        let needle = format!("name = \"{name}\"\nversion = \"");
        let version = lock
            .find(&needle)
            .and_then(|i| lock[i + needle.len()..].split('"').next())
            .unwrap_or("unknown");
        let var = format!("HAECHI_CRATE_{}", name.replace('-', "_").to_uppercase());
        println!("cargo:rustc-env={var}={version}");
    }
    println!("cargo:rerun-if-changed=../../Cargo.lock");
}
