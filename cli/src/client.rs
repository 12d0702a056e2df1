//! A connection to the federation API, failing over among the context's federators.
//!
//! `Failover` is the one place that decides whether a failed call is tried again at another
//! federator: when the federator could not be reached or stopped answering (Unavailable from
//! the transport). A federator that answered "no quorum" has already waited for a leader, so
//! that answer is final. Every command is safe to repeat (apply is idempotent by name, and
//! output is printed only on success).

use std::time::Duration;

use anyhow::{anyhow, Context as _};
use hansa_federator::api::STORE_UNAVAILABLE;
use hansa_federator::security::TlsMaterial;
use hansa_proto::v1::federation_client::FederationClient;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::context::Context;

pub type Client = FederationClient<Channel>;

/// How long a command keeps trying other federators.
const FAILOVER_LIMIT: Duration = Duration::from_secs(10);
/// The pause after every federator of the context failed once.
const ROUND_PAUSE: Duration = Duration::from_millis(200);

/// Connects to the first federator of the context that answers.
pub async fn connect(context: &Context) -> anyhow::Result<Client> {
    Ok(FederationClient::new(
        Failover::new(context)?.connect().await?,
    ))
}

/// Tries the context's federators in turn until a call succeeds, fails for good, or
/// `FAILOVER_LIMIT` has passed.
pub struct Failover {
    tls: TlsMaterial,
    federators: Vec<String>,
    /// The federator to try next (an index into `federators`, growing without bound).
    next: usize,
    deadline: Instant,
    failures: Vec<String>,
}

impl Failover {
    pub fn new(context: &Context) -> anyhow::Result<Failover> {
        if context.federators.is_empty() {
            return Err(anyhow!("the CLI context lists no federators"));
        }
        Ok(Failover {
            tls: TlsMaterial::load(&context.tls_files()).context("load the CLI's certificates")?,
            federators: context.federators.clone(),
            next: 0,
            deadline: Instant::now() + FAILOVER_LIMIT,
            failures: Vec::new(),
        })
    }

    /// A connection to the next federator that accepts one.
    pub async fn connect(&mut self) -> anyhow::Result<Channel> {
        loop {
            let address = self.federators[self.next % self.federators.len()].clone();
            self.next += 1;
            let endpoint = self.tls.endpoint(&address)?;
            match endpoint.connect().await {
                Ok(channel) => return Ok(channel),
                Err(e) => self.failed(&address, &hansa_federator::telemetry::error_chain(&e)),
            }
            self.pause_after_round().await?;
        }
    }

    /// Whether the call that failed with `error` should be tried at another federator; waits
    /// a moment first when every federator has been tried.
    pub async fn retry(&mut self, error: &anyhow::Error) -> bool {
        let Some(remote) = error.downcast_ref::<RemoteError>() else {
            return false;
        };
        if !remote.elsewhere {
            return false;
        }
        let address = self.federators
            [(self.next + self.federators.len() - 1) % self.federators.len()]
        .clone();
        self.failed(&address, &remote.message);
        self.pause_after_round().await.is_ok()
    }

    fn failed(&mut self, address: &str, detail: &str) {
        self.failures.push(format!("{address}: {detail}"));
    }

    async fn pause_after_round(&mut self) -> anyhow::Result<()> {
        if !self.next.is_multiple_of(self.federators.len()) {
            return Ok(());
        }
        if Instant::now() + ROUND_PAUSE >= self.deadline {
            let recent = self.failures.len().saturating_sub(self.federators.len());
            return Err(anyhow!(
                "no federator reachable:\n  {}",
                self.failures[recent..].join("\n  ")
            ));
        }
        tokio::time::sleep(ROUND_PAUSE).await;
        Ok(())
    }
}

/// A federator's refusal, as the user should read it, remembering whether another federator
/// might do better.
#[derive(Debug)]
pub struct RemoteError {
    pub message: String,
    /// The federator was unreachable or went away mid-call.
    pub elsewhere: bool,
    text: String,
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for RemoteError {}

/// A gRPC status as the user should read it: the server's message, without transport noise.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    use tonic::Code;
    let message = status.message().to_string();
    let text = match status.code() {
        Code::InvalidArgument | Code::NotFound | Code::AlreadyExists => message.clone(),
        Code::Unavailable => format!("federation unavailable: {message}"),
        Code::PermissionDenied | Code::Unauthenticated => format!("not allowed: {message}"),
        code => format!("{code}: {message}"),
    };
    let from_store = status.metadata().get(STORE_UNAVAILABLE).is_some();
    anyhow::Error::new(RemoteError {
        elsewhere: status.code() == Code::Unavailable && !from_store,
        message,
        text,
    })
}
