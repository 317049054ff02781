//! Compiles the protos with protox (pure Rust, no system protoc) into OUT_DIR (ADR 0002).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "protos/apache/rocketmq/v2/definition.proto",
        "protos/apache/rocketmq/v2/service.proto",
        "protos/apache/rocketmq/v2/admin.proto",
        "protos/vela/admin/v1/admin.proto",
        "protos/vela/store/v1/store.proto",
        "protos/vela/controller/v1/controller.proto",
        "protos/keda/externalscaler.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    // vela.status.v1 is shared by the store and controller protos; it is generated on its own and
    // the others refer to it as an extern path (the generated modules are flat: `pb::status`).
    // vela.auth.v1 likewise, for the admin and controller protos.
    let status = "protos/vela/status/v1/status.proto";
    let auth = "protos/vela/auth/v1/auth.proto";
    // vela.route.v1 likewise (routes, issue 12).
    let route = "protos/vela/route/v1/route.proto";
    // vela.group.v1 likewise (a group's retry back-off, issue 7).
    let group = "protos/vela/group/v1/group.proto";
    println!("cargo:rerun-if-changed={group}");
    println!("cargo:rerun-if-changed={status}");
    println!("cargo:rerun-if-changed={auth}");
    println!("cargo:rerun-if-changed={route}");
    tonic_prost_build::configure()
        .compile_fds(protox::compile([status, auth, route, group], ["protos"])?)?;
    let fds = protox::compile(files, ["protos"])?;
    tonic_prost_build::configure()
        .bytes(".")
        .extern_path(".vela.status.v1", "crate::pb::status")
        .extern_path(".vela.auth.v1", "crate::pb::auth")
        .extern_path(".vela.route.v1", "crate::pb::route")
        .extern_path(".vela.group.v1", "crate::pb::group")
        .compile_fds(fds)?;
    Ok(())
}
