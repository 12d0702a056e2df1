fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build finds protoc through PROTOC; the vendored one needs no system package.
    std::env::set_var("PROTOC", protoc);
    tonic_prost_build::configure().compile_protos(&["proto/hansa.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/hansa.proto");
    Ok(())
}
