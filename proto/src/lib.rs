//! hansa-proto: the generated gRPC code for Hansa's wire protocol, and its conversions to and
//! from hansa-core types.

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("hansa.v1");
}

pub mod convert;

pub use convert::ConvertError;
