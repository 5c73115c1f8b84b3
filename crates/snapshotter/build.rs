//! Generates the snapshots service (server and, for the tests, client) from containerd's
//! protos, vendored in proto/ (v2.1.9, Apache-2.0, headers kept). Needs `protoc` and the
//! well-known types (Debian's protobuf-compiler and libprotobuf-dev, installed by
//! scripts/install-deps.sh).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "proto";
    let snapshots =
        "proto/github.com/containerd/containerd/api/services/snapshots/v1/snapshots.proto";
    println!("cargo:rerun-if-changed={root}");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&[snapshots], &[root])?;
    Ok(())
}
