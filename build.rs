//! Generates the gRPC messages and service (src/api/grpc.rs includes them)
//! from proto/pyward/v1/pyward.proto. The .proto is parsed in Rust (protox),
//! so a fresh machine builds with cargo alone: no protoc to install.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/pyward/v1/pyward.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .compile_fds(descriptors)?;
    Ok(())
}
