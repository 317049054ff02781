//! Compiles the protos with protox (pure Rust, no system protoc) into OUT_DIR (ADR 0002).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "protos/apache/rocketmq/v2/definition.proto",
        "protos/apache/rocketmq/v2/service.proto",
        "protos/apache/rocketmq/v2/admin.proto",
        "protos/vela/admin/v1/admin.proto",
        "protos/vela/store/v1/store.proto",
        "protos/vela/controller/v1/controller.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["protos"])?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
