//! The scheduler's task: owns every replica's state and reconciles it with the desired set.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hansa_core::{
    Assignment, ReplicaState, ReplicaStatus, Resources, RuntimeKind, Unplaced, WorkloadKey,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backoff::{self, Backoff};
use super::nodes;
use super::plan::{self, Action, ReplicaView, RetireReason};
use super::ports::PortAllocator;
use super::replica::{Phase, Replica};
use super::{lock, SchedulerConfig, Shared};
use crate::health::{self, ProbeTarget, Verdict};
use crate::runtime::{template_hash, ReplicaInfo, ReplicaSpec, RunState, Unreachable};
use crate::state;

/// The loop runs at least this often, even without a trigger: events can be missed.
const RESYNC: Duration = Duration::from_secs(1);

enum Event {
    Verdict {
        id: String,
        instance: u64,
        verdict: Verdict,
    },
    Stopped {
        id: String,
        retired: bool,
        result: Result<(), String>,
    },
}

/// The scheduler's task: owns every replica's state.
pub(super) struct Scheduler {
    config: SchedulerConfig,
    shared: Arc<Shared>,
    desired: watch::Receiver<Arc<Vec<Assignment>>>,
    /// The set last written to `assignments.json`.
    persisted: Arc<Vec<Assignment>>,
    runtime_changes: watch::Receiver<u64>,
    replicas: BTreeMap<String, Replica>,
    /// Host ports per node, by node name.
    ports: BTreeMap<String, PortAllocator>,
    next_seq: u64,
    next_instance: u64,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    /// Probers and stops. Dropped (so aborted) with the loop.
    background: JoinSet<()>,
    /// Why a workload's replicas cannot be placed, as last logged (logged once per reason).
    blocked: HashMap<WorkloadKey, String>,
    /// The runtimes that did not answer the last look: no new replica goes to them.
    unreachable: Vec<Unreachable>,
    /// Since when each of them (node, runtime kind) has not answered.
    down_since: HashMap<(Option<String>, RuntimeKind), Instant>,
    /// Replicas given up on while their node was unreachable (id -> node): if the node comes
    /// back with them, they are stopped, not adopted.
    lost: HashMap<String, String>,
}

impl Scheduler {
    pub(super) fn new(
        config: SchedulerConfig,
        shared: Arc<Shared>,
        runtime_changes: watch::Receiver<u64>,
        persisted: Arc<Vec<Assignment>>,
    ) -> Self {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        Self {
            ports: port_allocators(&config),
            desired: shared.desired.subscribe(),
            runtime_changes,
            persisted,
            replicas: BTreeMap::new(),
            next_seq: 0,
            next_instance: 0,
            events_tx,
            events_rx,
            background: JoinSet::new(),
            blocked: HashMap::new(),
            unreachable: Vec::new(),
            down_since: HashMap::new(),
            lost: HashMap::new(),
            shared,
            config,
        }
    }

    pub(super) async fn run(mut self, shutdown: CancellationToken) {
        let mut runtime_open = true;
        loop {
            let wake = self.next_wake();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(event) = self.events_rx.recv() => self.handle(event),
                _ = self.desired.changed() => {}
                changed = self.runtime_changes.changed(), if runtime_open => {
                    runtime_open = changed.is_ok();
                }
                Some(done) = self.background.join_next(), if !self.background.is_empty() => {
                    if let Err(e) = done {
                        if e.is_panic() {
                            tracing::error!(error = %e, "a scheduler task panicked");
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            while let Ok(event) = self.events_rx.try_recv() {
                self.handle(event);
            }
            self.reconcile().await;
        }
        tracing::info!("local scheduler stopped; its replicas keep running");
    }

    fn next_wake(&self) -> Instant {
        let resync = Instant::now() + RESYNC;
        self.replicas
            .values()
            .filter_map(|r| match r.phase {
                Phase::Backoff {
                    until,
                    cleaned: true,
                    ..
                } => Some(until),
                _ => None,
            })
            .fold(resync, Instant::min)
    }

    pub(super) async fn reconcile(&mut self) {
        if self.shared.stopped.load(Ordering::SeqCst) {
            // `stop_all` stops the processes; the loop only lets go of them.
            self.background.abort_all();
            self.replicas.clear();
            self.ports = port_allocators(&self.config);
            self.publish();
            return;
        }
        let desired = self.desired.borrow_and_update().clone();
        self.persist(&desired).await;
        self.observe(&desired).await;
        self.act(&desired).await;
        self.restart_due(&desired).await;
        self.drive_stops();
        self.drive_probers();
        self.publish();
    }

    async fn persist(&mut self, desired: &Arc<Vec<Assignment>>) {
        if Arc::ptr_eq(desired, &self.persisted) {
            return;
        }
        match state::save_assignments(&self.config.data_dir, desired).await {
            Ok(()) => self.persisted = desired.clone(),
            // Retried on the next pass.
            Err(e) => tracing::error!(error = %e, "cannot persist the assignment set"),
        }
    }

    /// Notices exited replicas and adopts replicas the runtime runs that we do not know (those
    /// a previous agent started).
    /// A runtime that does not answer (a node's engine is down) leaves its replicas as they
    /// were, marked unreachable, while the other runtimes' replicas are looked after as usual.
    async fn observe(&mut self, desired: &[Assignment]) {
        let survey = self.shared.runtime.survey().await;
        for failed in &survey.unreachable {
            if !self.unreachable.contains(failed) {
                tracing::error!(%failed, "cannot list replicas");
            }
        }
        let mut by_id: HashMap<String, ReplicaInfo> = survey
            .replicas
            .into_iter()
            .map(|info| (info.record.id.clone(), info))
            .collect();
        self.unreachable = survey.unreachable;
        let now = Instant::now();
        let down: Vec<(Option<String>, RuntimeKind)> = self
            .unreachable
            .iter()
            .map(|u| (u.node.clone(), u.kind))
            .collect();
        self.down_since.retain(|key, _| down.contains(key));
        for key in down {
            self.down_since.entry(key).or_insert(now);
        }
        let live: Vec<String> = self
            .replicas
            .values()
            .filter(|r| matches!(r.phase, Phase::Live))
            .map(|r| r.id.clone())
            .collect();
        for id in live {
            let Some(replica) = self.replicas.get_mut(&id) else {
                continue;
            };
            let kind = replica.template.as_ref().map(|t| t.runtime_kind());
            replica.unreachable = match by_id.get(&id) {
                Some(_) => None,
                None => self
                    .unreachable
                    .iter()
                    .find(|u| u.covers(&replica.node, kind))
                    .map(ToString::to_string),
            };
            let runtime_answered = replica.unreachable.is_none();
            match by_id.get(&id).map(|info| &info.run) {
                Some(RunState::Running) => {}
                Some(RunState::Exited { reason }) => {
                    let reason = reason.clone();
                    self.fail(&id, ReplicaState::Failed, &reason);
                }
                None if runtime_answered => {
                    self.fail(&id, ReplicaState::Failed, "vanished from the runtime")
                }
                None => {}
            }
        }
        by_id.retain(|id, _| !self.replicas.contains_key(id));
        let mut unknown: Vec<ReplicaInfo> = by_id.into_values().collect();
        unknown.sort_by_key(|info| (info.record.started_at_ms, info.record.id.clone()));
        for info in unknown {
            let id = info.record.id.clone();
            self.adopt(info, desired);
            if let Some(node) = self.lost.remove(&id) {
                tracing::info!(replica = %id, %node, "a replaced replica is back with its node");
                self.retire(&id, &RetireReason::Lost);
            }
        }
        self.give_up_unreachable();
        // An adopted replica learns its template when its revision is assigned.
        for replica in self.replicas.values_mut().filter(|r| r.template.is_none()) {
            replica.template = find(desired, &replica.workload, Some(replica.revision))
                .map(|a| Arc::new(a.template.clone()));
        }
    }

    /// Replicas whose node's runtime has not answered for `replace_unreachable_after` leave
    /// the table when another reachable node can run them, so the plan starts their
    /// replacements there; they are remembered in `lost` until their node comes back.
    fn give_up_unreachable(&mut self) {
        let Some(after) = self.config.replace_unreachable_after else {
            return;
        };
        let now = Instant::now();
        let long_down: Vec<&Unreachable> = self
            .unreachable
            .iter()
            .filter(|u| {
                self.down_since
                    .get(&(u.node.clone(), u.kind))
                    .is_some_and(|since| now.duration_since(*since) >= after)
            })
            .collect();
        if long_down.is_empty() {
            return;
        }
        let answering = |node: &str, kind: RuntimeKind| {
            !self.unreachable.iter().any(|u| u.covers(node, Some(kind)))
        };
        let lost: Vec<(String, String)> =
            self.replicas
                .values()
                .filter(|r| !matches!(r.phase, Phase::Retiring))
                .filter_map(|r| {
                    let kind = r.template.as_ref()?.runtime_kind();
                    let down = long_down.iter().find(|u| u.covers(&r.node, Some(kind)))?;
                    let elsewhere =
                        self.config.nodes.iter().any(|n| {
                            n.name != r.node && n.offers(kind) && answering(&n.name, kind)
                        });
                    elsewhere.then(|| (r.id.clone(), down.to_string()))
                })
                .collect();
        for (id, why) in lost {
            let Some(mut replica) = self.replicas.remove(&id) else {
                continue;
            };
            replica.stop_probing();
            if let Some(ports) = self.ports.get_mut(&replica.node) {
                ports.release(&id);
            }
            tracing::warn!(
                replica = %id,
                workload = %replica.workload,
                node = %replica.node,
                reason = %why,
                after_seconds = after.as_secs(),
                "replacing a replica on an unreachable node"
            );
            self.lost.insert(id, replica.node);
        }
    }

    fn adopt(&mut self, info: ReplicaInfo, desired: &[Assignment]) {
        let record = info.record;
        let template = find(desired, &record.workload, Some(record.revision))
            .map(|a| Arc::new(a.template.clone()));
        let has_check = template.as_ref().is_some_and(|t| t.health_check.is_some());
        tracing::info!(
            replica = %record.id,
            workload = %record.workload,
            revision = record.revision,
            "adopted a replica started by a previous agent"
        );
        let node = self.node_of(&record);
        if let Some(ports) = self.ports.get_mut(&node) {
            ports.reserve(&record.id, &record.host_ports);
        }
        let replica = Replica {
            id: record.id.clone(),
            workload: record.workload,
            revision: record.revision,
            node,
            template,
            host_ports: record.host_ports,
            endpoints: record.endpoints,
            seq: self.next_seq(),
            phase: Phase::Live,
            restarts: 0,
            backoff: Backoff::default(),
            healthy_since: (!has_check).then(Instant::now),
            message: String::new(),
            unreachable: None,
            instance: self.next_instance(),
            started_at_ms: record.started_at_ms,
            prober: None,
            stop_in_flight: false,
        };
        self.replicas.insert(record.id.clone(), replica);
        if let RunState::Exited { reason } = info.run {
            self.fail(&record.id, ReplicaState::Failed, &reason);
        }
    }

    /// Starts and retires replicas as [`plan::plan`] decides.
    async fn act(&mut self, desired: &[Assignment]) {
        let views: Vec<ReplicaView<'_>> = self
            .replicas
            .values()
            .map(|r| ReplicaView {
                id: &r.id,
                workload: &r.workload,
                revision: r.revision,
                seq: r.seq,
                ready: r.ready(),
                retiring: matches!(r.phase, Phase::Retiring),
            })
            .collect();
        let actions = plan::plan(desired, &views);
        self.blocked
            .retain(|workload, _| desired.iter().any(|a| &a.workload == workload));
        let mut unplaced = Vec::new();
        for action in actions {
            match action {
                Action::Retire { id, reason } => self.retire(&id, &reason),
                Action::Start { workload, count } => {
                    let Some(assignment) = find(desired, &workload, None) else {
                        continue;
                    };
                    for started in 0..count {
                        if !self.start_new(assignment).await {
                            if let Some(reason) = self.blocked.get(&workload) {
                                unplaced.push(Unplaced {
                                    workload: workload.clone(),
                                    replicas: count - started,
                                    reason: reason.clone(),
                                });
                            }
                            break;
                        }
                    }
                }
            }
        }
        *lock(&self.shared.unplaced) = unplaced;
    }

    fn retire(&mut self, id: &str, reason: &RetireReason) {
        let Some(replica) = self.replicas.get_mut(id) else {
            return;
        };
        tracing::info!(replica = id, %reason, "stopping replica");
        replica.stop_probing();
        replica.healthy_since = None;
        replica.phase = Phase::Retiring;
        replica.message = format!("stopping: {reason}");
    }

    /// Places one new replica of `assignment` on a node ([`nodes::choose`]) and starts it;
    /// false when it fits no node (resources or ports), which is logged and retried on the
    /// next pass.
    async fn start_new(&mut self, assignment: &Assignment) -> bool {
        let template = &assignment.template;
        let kind = template.runtime_kind();
        // A node whose runtime for this template did not answer takes nothing new.
        let unreachable = |node: &str| self.unreachable.iter().find(|u| u.covers(node, Some(kind)));
        let reachable: Vec<nodes::NodeSpec> = self
            .config
            .nodes
            .iter()
            .filter(|n| unreachable(&n.name).is_none())
            .cloned()
            .collect();
        let offered = self.config.nodes.iter().any(|n| n.offers(kind));
        if offered && !reachable.iter().any(|n| n.offers(kind)) {
            let why = self
                .config
                .nodes
                .iter()
                .find_map(|n| unreachable(&n.name))
                .map_or_else(String::new, ToString::to_string);
            self.block(&assignment.workload, why);
            return false;
        }
        let node = match nodes::choose(&reachable, &self.in_use(), kind, &template.resources) {
            Ok(node) => node,
            Err(no_node) => {
                self.block(&assignment.workload, no_node.to_string());
                return false;
            }
        };
        let id = self.new_id(&assignment.workload.name);
        let Some(ports) = self.ports.get_mut(&node) else {
            return false;
        };
        let host_ports = match ports.allocate(&id, &template.ports) {
            Ok(ports) => ports,
            Err(e) => {
                self.block(&assignment.workload, format!("node {node}: {e}"));
                return false;
            }
        };
        self.blocked.remove(&assignment.workload);
        let spec = self.spec(&id, &node, assignment, &host_ports);
        tracing::info!(replica = %id, workload = %assignment.workload, %node, "placed a replica");
        let replica = Replica {
            id: id.clone(),
            workload: assignment.workload.clone(),
            revision: assignment.revision,
            node,
            template: Some(Arc::new(template.clone())),
            endpoints: spec.endpoints(),
            host_ports,
            seq: self.next_seq(),
            phase: Phase::Live,
            restarts: 0,
            backoff: Backoff::default(),
            healthy_since: None,
            message: String::new(),
            unreachable: None,
            instance: 0,
            started_at_ms: 0,
            prober: None,
            stop_in_flight: false,
        };
        self.replicas.insert(id.clone(), replica);
        self.launch(&id).await;
        true
    }

    fn block(&mut self, workload: &WorkloadKey, reason: String) {
        if self.blocked.get(workload) != Some(&reason) {
            tracing::warn!(%workload, %reason, "cannot place a replica; will retry");
            self.blocked.insert(workload.clone(), reason);
        }
    }

    /// Starts (or restarts) a replica's process.
    async fn launch(&mut self, id: &str) {
        let Some(replica) = self.replicas.get(id) else {
            return;
        };
        let Some(template) = replica.template.clone() else {
            return;
        };
        let spec = ReplicaSpec {
            id: id.to_string(),
            workload: replica.workload.clone(),
            revision: replica.revision,
            cluster: self.config.cluster.clone(),
            node: replica.node.clone(),
            node_address: self.node_address(replica),
            template_hash: template_hash(&template),
            template: (*template).clone(),
            host_ports: replica.host_ports.clone(),
        };
        let result = {
            let _gate = self.shared.start_gate.lock().await;
            if self.shared.stopped.load(Ordering::SeqCst) {
                return;
            }
            self.shared.runtime.start(spec).await
        };
        let instance = self.next_instance();
        let Some(replica) = self.replicas.get_mut(id) else {
            return;
        };
        match result {
            Ok(record) => {
                replica.instance = instance;
                replica.phase = Phase::Live;
                replica.started_at_ms = record.started_at_ms;
                replica.message.clear();
                replica.healthy_since = template.health_check.is_none().then(Instant::now);
            }
            Err(e) => {
                tracing::warn!(replica = id, error = %e, "cannot start replica");
                self.fail(id, ReplicaState::Failed, &e.to_string());
            }
        }
    }

    /// A run ended badly: back off, clean up what is left of it, restart later.
    fn fail(&mut self, id: &str, shown: ReplicaState, reason: &str) {
        let Some(replica) = self.replicas.get_mut(id) else {
            return;
        };
        replica.stop_probing();
        replica.unreachable = None;
        let ran_healthy = replica
            .healthy_since
            .take()
            .map(|since| since.elapsed())
            .unwrap_or_default();
        let delay = replica
            .backoff
            .next_delay(&self.config.backoff, ran_healthy);
        replica.phase = Phase::Backoff {
            until: Instant::now() + delay,
            shown,
            cleaned: false,
        };
        replica.message = format!("{reason}; restarting in {}", backoff::describe(delay));
        tracing::warn!(replica = id, %shown, message = %replica.message, "replica failed");
    }

    async fn restart_due(&mut self, desired: &[Assignment]) {
        let now = Instant::now();
        let due: Vec<String> = self
            .replicas
            .values()
            .filter(|r| {
                matches!(r.phase, Phase::Backoff { until, cleaned: true, .. } if until <= now)
                    && !r.stop_in_flight
            })
            .map(|r| r.id.clone())
            .collect();
        for id in due {
            let Some(replica) = self.replicas.get_mut(&id) else {
                continue;
            };
            if replica.template.is_none() {
                let Some(assignment) = find(desired, &replica.workload, Some(replica.revision))
                else {
                    continue;
                };
                replica.template = Some(Arc::new(assignment.template.clone()));
            }
            replica.restarts = replica.restarts.saturating_add(1);
            tracing::info!(replica = %id, restarts = replica.restarts, "restarting replica");
            self.launch(&id).await;
        }
    }

    /// Spawns the stops the replicas need: cleanup after a failed run, or retirement.
    fn drive_stops(&mut self) {
        for replica in self.replicas.values_mut() {
            let retire = match replica.phase {
                Phase::Retiring => true,
                Phase::Backoff { cleaned: false, .. } => false,
                _ => continue,
            };
            if replica.stop_in_flight {
                continue;
            }
            replica.stop_in_flight = true;
            let runtime = self.shared.runtime.clone();
            let grace = self.config.stop_grace;
            let events = self.events_tx.clone();
            let id = replica.id.clone();
            self.background.spawn(async move {
                let mut result = runtime.stop(&id, grace).await;
                if retire && result.is_ok() {
                    result = runtime.remove(&id).await;
                }
                let result = result.map_err(|e| e.to_string());
                let _ = events.send(Event::Stopped {
                    id,
                    retired: retire,
                    result,
                });
            });
        }
    }

    /// Starts a prober for every running replica with a health check that has none.
    fn drive_probers(&mut self) {
        let now_ms = now_ms();
        let ids: Vec<String> = self
            .replicas
            .values()
            .filter(|r| matches!(r.phase, Phase::Live) && r.prober.is_none())
            .filter(|r| {
                r.template
                    .as_ref()
                    .is_some_and(|t| t.health_check.is_some())
            })
            .map(|r| r.id.clone())
            .collect();
        for id in ids {
            let Some(replica) = self.replicas.get(&id) else {
                continue;
            };
            let Some(template) = replica.template.clone() else {
                continue;
            };
            let Some(check) = template.health_check.clone() else {
                continue;
            };
            let node_address = self.node_address(replica);
            let spec = ReplicaSpec {
                id: id.clone(),
                workload: replica.workload.clone(),
                revision: replica.revision,
                cluster: self.config.cluster.clone(),
                node: replica.node.clone(),
                node_address: node_address.clone(),
                template_hash: String::new(),
                template: (*template).clone(),
                host_ports: replica.host_ports.clone(),
            };
            let target = ProbeTarget {
                address: node_address,
                ports: template
                    .ports
                    .iter()
                    .map(|p| p.name.clone())
                    .zip(replica.host_ports.iter().copied())
                    .collect(),
                env: spec.environment(),
                cwd: state::replica_dir(&self.config.data_dir, &id).ok(),
                inside: template.image.is_some().then(|| health::Inside {
                    runtime: self.shared.runtime.clone(),
                    replica: id.clone(),
                }),
            };
            let ran_for = Duration::from_millis(now_ms.saturating_sub(replica.started_at_ms));
            let grace = Duration::from_secs(u64::from(check.grace_seconds)).saturating_sub(ran_for);
            let instance = replica.instance;
            let events = self.events_tx.clone();
            let prober = self
                .background
                .spawn(health::run_prober(check, target, grace, {
                    let id = id.clone();
                    move |verdict| {
                        let event = Event::Verdict {
                            id: id.clone(),
                            instance,
                            verdict,
                        };
                        events.send(event).is_ok()
                    }
                }));
            if let Some(replica) = self.replicas.get_mut(&id) {
                replica.prober = Some(prober);
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Verdict {
                id,
                instance,
                verdict,
            } => {
                let Some(replica) = self.replicas.get_mut(&id) else {
                    return;
                };
                if replica.instance != instance || !matches!(replica.phase, Phase::Live) {
                    return;
                }
                match verdict {
                    Verdict::Healthy => {
                        tracing::info!(replica = %id, "replica is healthy");
                        replica.healthy_since = Some(Instant::now());
                        replica.message.clear();
                    }
                    Verdict::Unhealthy { reason } => {
                        // The prober ends after this verdict.
                        replica.prober = None;
                        self.fail(&id, ReplicaState::Unhealthy, &reason);
                    }
                }
            }
            Event::Stopped {
                id,
                retired,
                result,
            } => {
                let Some(replica) = self.replicas.get_mut(&id) else {
                    return;
                };
                replica.stop_in_flight = false;
                if let Err(e) = result {
                    // Retried on the next pass.
                    tracing::error!(replica = %id, error = %e, "cannot stop replica");
                    return;
                }
                match &mut replica.phase {
                    Phase::Retiring if retired => {
                        self.replicas.remove(&id);
                        for ports in self.ports.values_mut() {
                            ports.release(&id);
                        }
                    }
                    Phase::Backoff { cleaned, .. } if !retired => *cleaned = true,
                    _ => {}
                }
            }
        }
    }

    fn publish(&mut self) {
        let mut statuses: Vec<ReplicaStatus> =
            self.replicas.values().map(Replica::status).collect();
        statuses.sort_by(|a, b| (&a.workload, &a.id).cmp(&(&b.workload, &b.id)));
        *lock(&self.shared.in_use) = self.in_use();
        let changed = {
            let mut published = lock(&self.shared.statuses);
            let changed = *published != statuses;
            if changed {
                *published = statuses;
            }
            changed
        };
        if changed {
            self.shared.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The requests of the replicas on each node, by node name.
    fn in_use(&self) -> BTreeMap<String, Resources> {
        let mut in_use: BTreeMap<String, Resources> = BTreeMap::new();
        for replica in self.replicas.values() {
            let used = in_use.entry(replica.node.clone()).or_default();
            *used = used.saturating_add(&replica.requests());
        }
        in_use
    }

    /// The node of an adopted replica: the one recorded; for a record from before nodes, the
    /// node whose address its endpoints point at, else the first node.
    fn node_of(&self, record: &crate::runtime::ReplicaRecord) -> String {
        if !record.node.is_empty() {
            return record.node.clone();
        }
        let first = &self.config.nodes[0];
        record
            .endpoints
            .first()
            .and_then(|e| self.config.nodes.iter().find(|n| n.address == e.address))
            .unwrap_or(first)
            .name
            .clone()
    }

    /// Where a replica binds: its node's address (for a node no longer configured, where its
    /// endpoints point).
    fn node_address(&self, replica: &Replica) -> String {
        self.config
            .nodes
            .iter()
            .find(|n| n.name == replica.node)
            .map(|n| n.address.clone())
            .or_else(|| replica.endpoints.first().map(|e| e.address.clone()))
            .unwrap_or_else(|| self.config.nodes[0].address.clone())
    }

    fn spec(
        &self,
        id: &str,
        node: &str,
        assignment: &Assignment,
        host_ports: &[u16],
    ) -> ReplicaSpec {
        let address = self
            .config
            .nodes
            .iter()
            .find(|n| n.name == node)
            .map_or_else(
                || self.config.nodes[0].address.clone(),
                |n| n.address.clone(),
            );
        ReplicaSpec {
            id: id.to_string(),
            workload: assignment.workload.clone(),
            revision: assignment.revision,
            cluster: self.config.cluster.clone(),
            node: node.to_string(),
            node_address: address,
            template_hash: template_hash(&assignment.template),
            template: assignment.template.clone(),
            host_ports: host_ports.to_vec(),
        }
    }

    /// `<workload>-<6 lowercase hex>`, unique among replicas and replica directories.
    fn new_id(&self, workload: &str) -> String {
        // Bounded, so that the id stays a valid directory name (see `state::is_valid_id`).
        let prefix: String = workload
            .chars()
            .take(60)
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        loop {
            let id = format!("{prefix}-{}", random_hex6());
            let on_disk = state::replica_dir(&self.config.data_dir, &id).map(|dir| dir.exists());
            if !self.replicas.contains_key(&id) && matches!(on_disk, Ok(false)) {
                return id;
            }
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn next_instance(&mut self) -> u64 {
        self.next_instance += 1;
        self.next_instance
    }
}

fn port_allocators(config: &SchedulerConfig) -> BTreeMap<String, PortAllocator> {
    config
        .nodes
        .iter()
        .map(|n| (n.name.clone(), PortAllocator::new(n.address.clone())))
        .collect()
}

/// The assignment of `workload` (of `revision`, if given); the last one wins, as in the plan.
fn find<'a>(
    desired: &'a [Assignment],
    workload: &WorkloadKey,
    revision: Option<u64>,
) -> Option<&'a Assignment> {
    desired
        .iter()
        .rev()
        .find(|a| &a.workload == workload && revision.is_none_or(|r| r == a.revision))
}

/// Six random lowercase hex digits, from std's randomly keyed hasher (no extra dependency).
fn random_hex6() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:06x}", hasher.finish() & 0xff_ffff)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}
