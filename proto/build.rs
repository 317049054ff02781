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
    // vela.status.v1 is shared by the store and controller protos; it is generated on its own and
    // the others refer to it as an extern path (the generated modules are flat: `pb::status`).
    let status = "protos/vela/status/v1/status.proto";
    println!("cargo:rerun-if-changed={status}");
    tonic_prost_build::configure().compile_fds(protox::compile([status], ["protos"])?)?;
    let fds = protox::compile(files, ["protos"])?;
    tonic_prost_build::configure()
        .bytes(".")
        .extern_path(".vela.status.v1", "crate::pb::status")
        .compile_fds(fds)?;
    Ok(())
}
