//! A connection to the federation API, failing over among the context's federators.

use anyhow::{anyhow, Context as _};
use hansa_federator::security::TlsMaterial;
use hansa_proto::v1::federation_client::FederationClient;
use tonic::transport::Channel;

use crate::context::Context;

pub type Client = FederationClient<Channel>;

/// Connects to the first federator of the context that answers.
pub async fn connect(context: &Context) -> anyhow::Result<Client> {
    let tls = TlsMaterial::load(&context.tls_files()).context("load the CLI's certificates")?;
    let mut failures = Vec::new();
    for address in &context.federators {
        let endpoint = tls.endpoint(address)?;
        match endpoint.connect().await {
            Ok(channel) => return Ok(FederationClient::new(channel)),
            Err(e) => failures.push(format!("{address}: {}", chain(&e))),
        }
    }
    Err(anyhow!(
        "no federator reachable:\n  {}",
        failures.join("\n  ")
    ))
}

/// A gRPC status as the user should read it: the server's message, without transport noise.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    use tonic::Code;
    let message = status.message().to_string();
    match status.code() {
        Code::InvalidArgument | Code::NotFound | Code::AlreadyExists => anyhow!(message),
        Code::Unavailable => anyhow!("federation unavailable: {message}"),
        Code::PermissionDenied | Code::Unauthenticated => anyhow!("not allowed: {message}"),
        code => anyhow!("{code}: {message}"),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
