//! Compiles the Raft transport proto with protox (pure Rust, no system protoc; ADR 0002).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["protos/vela/raft/v1/raft.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["protos"])?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
