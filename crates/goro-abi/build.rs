//! Compiles the g register (a C `__thread` slot behind non-inlined accessors).

fn main() {
    println!("cargo:rerun-if-changed=src/g_register.c");
    println!("cargo:rerun-if-changed=src/layout_check.c");
    println!("cargo:rerun-if-changed=include/goro/g.h");
    cc::Build::new()
        .file("src/g_register.c")
        // Compiled into the library so that the layout test can run on every target,
        // including under QEMU; it is two small functions.
        .file("src/layout_check.c")
        .include("include")
        // initial-exec TLS is a single thread-pointer-relative load; the default model
        // for position-independent code would call __tls_get_addr on every getg().
        .flag_if_supported("-ftls-model=initial-exec")
        .opt_level(2)
        .compile("goro_abi_gregister");
    println!(
        "cargo:include={}/include",
        std::env::var("CARGO_MANIFEST_DIR").unwrap()
    );
}
