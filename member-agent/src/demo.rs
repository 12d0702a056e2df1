//! The built-in demo HTTP server (`member-agent demo-http`, `hansa demo-http`): what the
//! examples and `hansa dev` run when a template's command is `hansa-demo-http`. It says which
//! replica, cluster and revision answered, so failover and rollouts can be watched with curl.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

/// Arguments of the `demo-http` subcommand.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DemoArgs {
    /// What `GET /` says after the replica's identity [default: $GREETING, else "hello"].
    #[arg(long)]
    pub greeting: Option<String>,
}

/// Who is answering: read once from the replica's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoIdentity {
    pub replica: String,
    pub cluster: String,
    pub workload: String,
    pub revision: String,
    pub greeting: String,
}

impl DemoIdentity {
    fn greeting_line(&self) -> String {
        format!(
            "hello from {} in cluster {} (workload {}, revision {}): {}\n",
            self.replica, self.cluster, self.workload, self.revision, self.greeting
        )
    }
}

/// Where to listen and who we are, from the environment the runtime gives a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoSettings {
    pub host: String,
    pub port: u16,
    pub identity: DemoIdentity,
}

impl DemoSettings {
    /// `HOST` (default 127.0.0.1), `PORT0` or else `PORT` (required), `HANSA_*`, `GREETING`.
    pub fn from_env(args: DemoArgs, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let port_text = var("PORT0").or_else(|| var("PORT")).context(
            "demo-http needs a port: set PORT0 or PORT (a template port does that for a replica)",
        )?;
        let port = port_text.parse().with_context(|| {
            format!("demo-http: PORT0/PORT must be a port number (got {port_text:?})")
        })?;
        let unknown = || "unknown".to_string();
        Ok(Self {
            host: var("HOST").unwrap_or_else(|| "127.0.0.1".to_string()),
            port,
            identity: DemoIdentity {
                replica: var("HANSA_REPLICA_ID").unwrap_or_else(unknown),
                cluster: var("HANSA_CLUSTER").unwrap_or_else(unknown),
                workload: var("HANSA_WORKLOAD").unwrap_or_else(unknown),
                revision: var("HANSA_REVISION").unwrap_or_else(unknown),
                greeting: args
                    .greeting
                    .or_else(|| var("GREETING"))
                    .unwrap_or_else(|| "hello".to_string()),
            },
        })
    }
}

/// Serves the demo until SIGTERM or SIGINT.
pub async fn run_demo_http(args: DemoArgs) -> anyhow::Result<()> {
    let settings = DemoSettings::from_env(args, |name| std::env::var(name).ok())?;
    let listener = TcpListener::bind((settings.host.as_str(), settings.port))
        .await
        .with_context(|| {
            format!(
                "demo-http: cannot listen on {}:{}",
                settings.host, settings.port
            )
        })?;
    serve(listener, settings.identity, termination()).await
}

/// Serves the demo on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    identity: DemoIdentity,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(identity))
        .with_graceful_shutdown(shutdown)
        .await
        .context("demo-http: serving failed")
}

pub fn router(identity: DemoIdentity) -> Router {
    Router::new()
        .route("/", get(hello))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Arc::new(identity))
}

async fn hello(State(identity): State<Arc<DemoIdentity>>) -> String {
    identity.greeting_line()
}

async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // Without signal handlers, the default action (exit) still ends the process.
        _ => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    async fn get_body(port: u16, path: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn settings_come_from_the_replica_environment() {
        let settings = DemoSettings::from_env(
            DemoArgs::default(),
            env(&[
                ("HOST", "127.0.1.1"),
                ("PORT", "1"),
                ("PORT0", "31000"),
                ("HANSA_REPLICA_ID", "web-abc123"),
                ("GREETING", "moin"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.host, "127.0.1.1");
        assert_eq!(settings.port, 31000, "PORT0 wins over PORT");
        assert_eq!(settings.identity.replica, "web-abc123");
        assert_eq!(settings.identity.greeting, "moin");

        let args = DemoArgs {
            greeting: Some("ahoy".to_string()),
        };
        let settings =
            DemoSettings::from_env(args, env(&[("PORT", "8080"), ("GREETING", "moin")])).unwrap();
        assert_eq!(settings.host, "127.0.0.1");
        assert_eq!(
            settings.identity.greeting, "ahoy",
            "the flag wins over GREETING"
        );
    }

    #[test]
    fn a_missing_port_is_a_clear_error() {
        let err = DemoSettings::from_env(DemoArgs::default(), env(&[])).unwrap_err();
        assert!(err.to_string().contains("set PORT0 or PORT"), "{err}");
        let err =
            DemoSettings::from_env(DemoArgs::default(), env(&[("PORT", "http")])).unwrap_err();
        assert!(err.to_string().contains("\"http\""), "{err}");
    }

    #[tokio::test]
    async fn serves_hello_and_healthz_until_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let identity = DemoIdentity {
            replica: "web-abc123".to_string(),
            cluster: "eu-1".to_string(),
            workload: "web".to_string(),
            revision: "4".to_string(),
            greeting: "hello".to_string(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, identity, async {
            let _ = stopped.await;
        }));
        assert_eq!(
            get_body(port, "/").await,
            "hello from web-abc123 in cluster eu-1 (workload web, revision 4): hello\n"
        );
        assert_eq!(get_body(port, "/healthz").await, "ok");
        assert_eq!(
            crate::health::http_get_status("127.0.0.1", port, "/healthz").await,
            Ok(200)
        );
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
