//! Compiles the Nacos 2 gRPC service definition with protox (pure Rust, no
//! system `protoc`): the client side only.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/nacos_grpc_service.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
