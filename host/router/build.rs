//! Generates the gRPC service of the Open Inference Protocol from `proto/inference.proto`. protox parses
//! the file in Rust, so building needs no `protoc`.

fn main() {
    println!("cargo:rerun-if-changed=proto/inference.proto");
    let descriptors = protox::compile(["inference.proto"], ["proto"]).expect("parsing proto/inference.proto");
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .bytes(".inference")
        .codec_path("crate::grpc::Codec")
        .compile_fds(descriptors)
        .expect("generating the gRPC code from proto/inference.proto");
}
