//! Several runtimes on one node: a template with an image goes to `docker`, one without to
//! `process`. Replica ids are unique across them (the scheduler makes them), so a stop or an
//! inspect asks each runtime in turn. With several nodes, each node has its own runtimes
//! (a remote node its own Docker Engine) and a start goes to those of the replica's node.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hansa_core::RuntimeKind;
use tokio::sync::watch;

use super::{
    BoxFuture, LogStream, ReplicaInfo, ReplicaRecord, ReplicaSpec, Runtime, RuntimeError, Survey,
    Unreachable,
};

pub struct MultiRuntime {
    /// Every distinct runtime, once.
    runtimes: Vec<Arc<dyn Runtime>>,
    /// The runtimes of each node, by node name; empty: every start may use any runtime.
    nodes: BTreeMap<String, Vec<Arc<dyn Runtime>>>,
    /// Which of `runtimes` holds each replica we started or saw listed, so that stopping a
    /// replica on one node does not depend on every other node's engine answering.
    homes: Mutex<HashMap<String, usize>>,
    changes: watch::Sender<u64>,
}

impl MultiRuntime {
    /// Offers every runtime of `runtimes` (at most one per kind; the first is the default
    /// kind). Must be called within a Tokio runtime: it forwards their change notifications.
    pub fn new(runtimes: Vec<Arc<dyn Runtime>>) -> Self {
        let changes = watch::channel(0).0;
        for runtime in &runtimes {
            let mut source = runtime.changes();
            let sink = changes.clone();
            tokio::spawn(async move {
                while source.changed().await.is_ok() {
                    sink.send_modify(|n: &mut u64| *n = n.wrapping_add(1));
                }
            });
        }
        Self {
            runtimes,
            nodes: BTreeMap::new(),
            homes: Mutex::new(HashMap::new()),
            changes,
        }
    }

    /// Runtimes per node (a runtime may serve several nodes, e.g. the process runtime, or
    /// one engine reached by two nodes): a replica starts on a runtime of its node.
    pub fn with_nodes(nodes: BTreeMap<String, Vec<Arc<dyn Runtime>>>) -> Self {
        let mut distinct: Vec<Arc<dyn Runtime>> = Vec::new();
        for runtime in nodes.values().flatten() {
            if !distinct.iter().any(|r| Arc::ptr_eq(r, runtime)) {
                distinct.push(runtime.clone());
            }
        }
        Self {
            nodes,
            ..Self::new(distinct)
        }
    }

    /// The kinds offered, in order.
    pub fn kinds(&self) -> Vec<RuntimeKind> {
        self.runtimes.iter().map(|r| r.kind()).collect()
    }

    fn for_kind(&self, kind: RuntimeKind) -> Result<&Arc<dyn Runtime>, RuntimeError> {
        self.runtimes
            .iter()
            .find(|r| r.kind() == kind)
            .ok_or_else(|| {
                let offered: Vec<String> = self.kinds().iter().map(ToString::to_string).collect();
                RuntimeError::RuntimeMissing(kind, offered.join(", "))
            })
    }

    fn homes(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.homes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn index_of(&self, runtime: &Arc<dyn Runtime>) -> Option<usize> {
        self.runtimes.iter().position(|r| Arc::ptr_eq(r, runtime))
    }

    /// The runtimes to ask about replica `id`: the one known to hold it, else all of them.
    fn candidates(&self, id: &str) -> Vec<&Arc<dyn Runtime>> {
        match self.homes().get(id) {
            Some(&home) => vec![&self.runtimes[home]],
            None => self.runtimes.iter().collect(),
        }
    }

    /// The runtime that runs replica `id`, if any does. A runtime that fails to answer is
    /// skipped; its error is returned only when no runtime has the replica.
    async fn holder(&self, id: &str) -> Result<Option<&Arc<dyn Runtime>>, RuntimeError> {
        let mut failed = None;
        for runtime in self.candidates(id) {
            match runtime.inspect(id).await {
                Ok(Some(_)) => return Ok(Some(runtime)),
                Ok(None) => {}
                Err(e) => failed = Some(e),
            }
        }
        failed.map_or(Ok(None), Err)
    }

    /// Runs `action` on each runtime that may hold `id`; all are tried, the first error is
    /// returned.
    async fn on_each<'a, F>(&'a self, id: &str, action: F) -> Result<(), RuntimeError>
    where
        F: Fn(&'a Arc<dyn Runtime>) -> BoxFuture<'a, Result<(), RuntimeError>>,
    {
        let mut first_error = None;
        for runtime in self.candidates(id) {
            if let Err(e) = action(runtime).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Runtime for MultiRuntime {
    fn kind(&self) -> RuntimeKind {
        self.runtimes
            .first()
            .map_or(RuntimeKind::Process, |r| r.kind())
    }

    fn start(&self, spec: ReplicaSpec) -> BoxFuture<'_, Result<ReplicaRecord, RuntimeError>> {
        Box::pin(async move {
            let kind = spec.template.runtime_kind();
            let runtime = match self.nodes.get(&spec.node) {
                Some(on_node) => on_node.iter().find(|r| r.kind() == kind).ok_or_else(|| {
                    let offered: Vec<String> =
                        on_node.iter().map(|r| r.kind().to_string()).collect();
                    RuntimeError::RuntimeMissing(
                        kind,
                        format!("node {} offers {}", spec.node, offered.join(", ")),
                    )
                })?,
                None => self.for_kind(kind)?,
            };
            let id = spec.id.clone();
            let record = runtime.start(spec).await?;
            if let Some(home) = self.index_of(runtime) {
                self.homes().insert(id, home);
            }
            Ok(record)
        })
    }

    fn stop<'a>(&'a self, id: &'a str, grace: Duration) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move { self.on_each(id, |runtime| runtime.stop(id, grace)).await })
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move {
            self.on_each(id, |runtime| runtime.remove(id)).await?;
            self.homes().remove(id);
            Ok(())
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ReplicaInfo>, RuntimeError>> {
        Box::pin(async move {
            let mut all = Vec::new();
            for runtime in &self.runtimes {
                all.extend(runtime.list().await?);
            }
            Ok(all)
        })
    }

    /// Asks every runtime at once; one that fails or does not answer in time is reported for
    /// each node it serves, and the others' replicas are returned.
    fn survey(&self) -> BoxFuture<'_, Survey> {
        Box::pin(async move {
            let surveys = futures::future::join_all(self.runtimes.iter().map(|r| r.survey())).await;
            let mut out = Survey::default();
            for (index, (runtime, survey)) in self.runtimes.iter().zip(surveys).enumerate() {
                {
                    let mut homes = self.homes();
                    for info in &survey.replicas {
                        homes.insert(info.record.id.clone(), index);
                    }
                }
                out.replicas.extend(survey.replicas);
                for failed in survey.unreachable {
                    let served: Vec<&String> = self
                        .nodes
                        .iter()
                        .filter(|(_, on_node)| on_node.iter().any(|r| Arc::ptr_eq(r, runtime)))
                        .map(|(node, _)| node)
                        .collect();
                    if served.is_empty() {
                        out.unreachable.push(failed);
                        continue;
                    }
                    out.unreachable
                        .extend(served.into_iter().map(|node| Unreachable {
                            node: Some(node.clone()),
                            ..failed.clone()
                        }));
                }
            }
            out
        })
    }

    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ReplicaInfo>, RuntimeError>> {
        Box::pin(async move {
            match self.holder(id).await? {
                Some(runtime) => runtime.inspect(id).await,
                None => Ok(None),
            }
        })
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn logs<'a>(
        &'a self,
        id: &'a str,
        follow: bool,
        tail: Option<u32>,
    ) -> BoxFuture<'a, Result<LogStream, RuntimeError>> {
        Box::pin(async move {
            if let Some(runtime) = self.holder(id).await? {
                return runtime.logs(id, follow, tail).await;
            }
            // A replica in backoff runs nowhere; the runtime that kept its output answers.
            for runtime in &self.runtimes {
                match runtime.logs(id, follow, tail).await {
                    Err(RuntimeError::UnknownReplica(_)) => continue,
                    other => return other,
                }
            }
            Err(RuntimeError::UnknownReplica(id.to_string()))
        })
    }

    fn exec<'a>(
        &'a self,
        id: &'a str,
        command: &'a [String],
    ) -> BoxFuture<'a, Option<Result<i64, String>>> {
        Box::pin(async move {
            match self.holder(id).await {
                Ok(Some(runtime)) => runtime.exec(id, command).await,
                Ok(None) => None,
                Err(e) => Some(Err(e.to_string())),
            }
        })
    }
}
