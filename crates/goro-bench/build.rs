//! Detects whether goro's `Builder::many_goroutines` exists, so the RSS workload can use it
//! where it does and report its absence where it does not.

fn main() {
    let builder = "../goro/src/builder.rs";
    println!("cargo::rerun-if-changed={builder}");
    println!("cargo::rustc-check-cfg=cfg(goro_many_goroutines)");
    let source = std::fs::read_to_string(builder).unwrap_or_default();
    if source.contains("pub fn many_goroutines(") {
        println!("cargo::rustc-cfg=goro_many_goroutines");
    }
}
