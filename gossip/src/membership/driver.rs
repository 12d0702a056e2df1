//! The task that owns foca: sockets, timers and the member table.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU8, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use foca::{
    AccumulatingRuntime, Foca, OwnedNotification, PeriodicParams, PostcardCodec, State, Timer,
};
use rand::rngs::StdRng;
use rand::RngExt;
use tokio::sync::{broadcast, mpsc};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::gossip::RecordGossip;
use super::sync::{self, FOCA_TAG, SYNC_TAG};
use super::transport::Socket;
use super::{
    lock, Command, Member, MemberState, MembershipConfig, MembershipEvent, Metrics, PeerId, Shared,
    MAX_DATAGRAM,
};
use crate::crypto::{Sealer, OVERHEAD};

/// Fewest times each update or record is passed on by each peer. A peer forwards a new
/// record to 3 peers at once (see `run`) and then in periodic gossip; a peer is missed only if
/// none of the pool's n * 12 sends reaches it (about e^-12 each).
const MIN_TRANSMISSIONS: NonZeroU8 = NonZeroU8::new(12).expect("non-zero");

type Swim = Foca<PeerId, PostcardCodec, StdRng, RecordGossip>;

pub(super) struct Driver {
    foca: Swim,
    runtime: AccumulatingRuntime<PeerId>,
    socket: Socket,
    sealer: Sealer,
    /// foca's timers, earliest first; equal deadlines keep foca's required order.
    timers: BinaryHeap<Reverse<(Instant, Timer<PeerId>)>>,
    join: Vec<SocketAddr>,
    rejoin: Interval,
    /// When to sync member tables with a random member (see [`sync`]).
    state_sync: Interval,
    rng: StdRng,
    shared: Arc<Shared>,
    events: broadcast::Sender<MembershipEvent>,
    /// When the member table was last brought in line with foca.
    refreshed: Instant,
}

/// The member table is refreshed at once when foca reports a member up, down or renamed, and
/// otherwise at most this often (foca does not report suspicions): a full pass costs one
/// lookup per member, too much to do for every datagram in a large pool.
const REFRESH_EVERY: Duration = Duration::from_millis(50);

fn foca_config(config: &MembershipConfig) -> foca::Config {
    let mut foca = foca::Config::new_lan(
        NonZeroU32::new(config.expected_peers.max(1)).unwrap_or(NonZeroU32::MIN),
    );
    // foca derives retransmissions as floor(4 * log10(n + 1)): 3 for a pool of 8,
    // too few for an update to reach everyone reliably. Bandwidth is no concern here.
    foca.max_transmissions = foca.max_transmissions.max(MIN_TRANSMISSIONS);
    foca.probe_period = config.probe_period;
    foca.probe_rtt = config.probe_rtt;
    foca.suspect_to_down_after = config.suspicion_timeout;
    foca.num_indirect_probes =
        NonZeroUsize::new(config.indirect_probes).unwrap_or(NonZeroUsize::MIN);
    // One byte of every datagram tells foca's from ours (see `sync`).
    foca.max_packet_size =
        NonZeroUsize::new(MAX_DATAGRAM - OVERHEAD - 1).unwrap_or(NonZeroUsize::MIN);
    foca.periodic_gossip = Some(PeriodicParams {
        frequency: config.gossip_interval,
        num_members: NonZeroUsize::new(config.gossip_fanout).unwrap_or(NonZeroUsize::MIN),
    });
    // After a partition each side holds the other as down and never probes it again: keep
    // knocking on a couple of down members, so the halves find each other once the network
    // heals (and a peer wrongly declared dead is let back in).
    // A join is news that reaches everyone only while its retransmissions last; when many
    // peers join at once some never hear of some others. Asking a random member for its view
    // now and then fills such gaps.
    foca.periodic_announce = Some(PeriodicParams {
        frequency: config.probe_period * 4,
        num_members: NonZeroUsize::MIN,
    });
    foca.periodic_announce_to_down_members = Some(PeriodicParams {
        frequency: config.probe_period * 2,
        num_members: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
    });
    foca
}

impl Driver {
    pub(super) fn new(
        config: &MembershipConfig,
        identity: PeerId,
        socket: Socket,
        sealer: Sealer,
        gossip: RecordGossip,
        shared: Arc<Shared>,
        events: broadcast::Sender<MembershipEvent>,
    ) -> Self {
        let foca = Foca::with_custom_broadcast(
            identity,
            foca_config(config),
            rand::make_rng(),
            PostcardCodec,
            gossip,
        );
        let mut rejoin = tokio::time::interval(config.rejoin_interval);
        rejoin.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first tick of an interval is immediate; the first sync is the one on join.
        let mut state_sync = tokio::time::interval_at(
            Instant::now() + config.state_sync_interval,
            config.state_sync_interval,
        );
        state_sync.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            foca,
            runtime: AccumulatingRuntime::new(),
            socket,
            sealer,
            timers: BinaryHeap::new(),
            join: config.join.clone(),
            rejoin,
            state_sync,
            rng: rand::make_rng(),
            shared,
            events,
            refreshed: Instant::now(),
        }
    }

    fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        stop: CancellationToken,
    ) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                biased;
                () = stop.cancelled() => {
                    let result = self.foca.leave_cluster(&mut self.runtime);
                    self.settle(result).await;
                    tracing::info!("left the gossip pool");
                    return;
                }
                Some(command) = commands.recv() => {
                    let result = match command {
                        Command::Broadcast(data) => self
                            .foca
                            .add_broadcast(&data)
                            .and_then(|_| self.foca.broadcast(&mut self.runtime)),
                        Command::Announce(addrs) => {
                            self.announce(&addrs).await;
                            Ok(())
                        }
                    };
                    self.settle(result).await;
                }
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => {
                        let applied = Metrics::get(&self.metrics().broadcasts_applied);
                        let mut result = self.receive(&buf[..len], from).await;
                        // A record new to us is forwarded at once rather than at the next
                        // gossip tick: each hop costs a network delay, not up to an interval.
                        // Only the first copy of an update changes our store, so every peer
                        // forwards each update once.
                        if result.is_ok() && Metrics::get(&self.metrics().broadcasts_applied) > applied {
                            result = self.foca.broadcast(&mut self.runtime);
                        }
                        self.settle(result).await;
                    }
                    // Unconnected UDP only fails transiently (e.g. ICMP errors).
                    Err(error) => tracing::debug!(%error, "gossip recv failed"),
                },
                () = sleep_until(next_timer) => {
                    let now = Instant::now();
                    while let Some(Reverse((at, _))) = self.timers.peek() {
                        if *at > now {
                            break;
                        }
                        let Some(Reverse((_, timer))) = self.timers.pop() else { break };
                        let result = self.foca.handle_timer(timer, &mut self.runtime);
                        self.settle(result).await;
                    }
                }
                _ = self.rejoin.tick() => {
                    // Also covers the first join: the first tick is immediate.
                    if self.foca.num_members() == 0 && !self.join.is_empty() {
                        let join = self.join.clone();
                        self.announce(&join).await;
                        self.settle(Ok(())).await;
                    }
                }
                _ = self.state_sync.tick() => {
                    let count = self.foca.num_members();
                    if count > 0 {
                        let pick = self.rng.random_range(0..count);
                        if let Some(addr) = self.foca.iter_members().nth(pick).map(|m| m.id().addr) {
                            self.send_sync(addr, true).await;
                        }
                    }
                }
            }
        }
    }

    /// Announces ourselves to each address (foca's join) and asks it for its member table.
    async fn announce(&mut self, addrs: &[SocketAddr]) {
        let own = self.foca.identity().addr;
        for addr in addrs.iter().filter(|addr| **addr != own) {
            self.send_sync(*addr, true).await;
            // foca accepts an announce addressed to any identity at its address.
            let target = PeerId {
                name: String::new(),
                cluster: String::new(),
                addr: *addr,
                epoch: 0,
            };
            if let Err(error) = self.foca.announce(target, &mut self.runtime) {
                tracing::debug!(%addr, %error, "announce failed");
            }
        }
    }

    /// Sends our member table to `to`, asking for theirs in return when `want_reply`.
    async fn send_sync(&self, to: SocketAddr, want_reply: bool) {
        let datagrams = sync::encode(
            self.foca.iter_membership_state(),
            want_reply,
            MAX_DATAGRAM - OVERHEAD,
        );
        for datagram in datagrams {
            self.send(&datagram, to).await;
        }
    }

    /// Applies a member table another peer sent. Not spread further: it is what that peer
    /// already knows, and spreading a thousand members from every joiner would flood the pool.
    async fn receive_sync(&mut self, body: &[u8], from: SocketAddr) {
        let (want_reply, members) = match sync::decode(body) {
            Ok(decoded) => decoded,
            Err(error) => {
                Metrics::bump(&self.metrics().datagrams_invalid);
                tracing::debug!(%from, %error, "dropped sync datagram");
                return;
            }
        };
        let result = self
            .foca
            .apply_many(members.into_iter(), false, &mut self.runtime);
        self.settle(result).await;
        if want_reply {
            self.send_sync(from, false).await;
        }
    }

    /// Handles one datagram; a foca message's outcome is returned for `settle`.
    async fn receive(&mut self, datagram: &[u8], from: SocketAddr) -> Result<(), foca::Error> {
        Metrics::bump(&self.metrics().datagrams_received);
        let plaintext = match self.sealer.open(datagram) {
            Ok(plaintext) => plaintext,
            Err(error) => {
                Metrics::bump(&self.metrics().datagrams_unauthenticated);
                tracing::debug!(%from, %error, "dropped gossip datagram");
                return Ok(());
            }
        };
        let plaintext = match plaintext.split_first() {
            Some((&FOCA_TAG, message)) => message,
            Some((&SYNC_TAG, body)) => {
                self.receive_sync(body, from).await;
                return Ok(());
            }
            _ => {
                Metrics::bump(&self.metrics().datagrams_invalid);
                tracing::debug!(%from, "dropped gossip datagram of unknown kind");
                return Ok(());
            }
        };
        if let Ok(header) = foca::Codec::<PeerId>::decode_header(&mut PostcardCodec, plaintext) {
            if let Some(member) = lock(&self.shared.members).get_mut(&header.src.addr) {
                member.last_heard = Some(Instant::now());
            }
        }
        let result = self.foca.handle_data(plaintext, &mut self.runtime);
        if result.is_err() {
            Metrics::bump(&self.metrics().datagrams_invalid);
        }
        result
    }

    /// Logs a foca error, then carries out what foca asked for: sends, timers and
    /// notifications, and refreshes the member table.
    async fn settle(&mut self, result: Result<(), foca::Error>) {
        if let Err(error) = result {
            tracing::debug!(%error, "foca refused input");
        }
        self.flush().await;
        let now = Instant::now();
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timers.push(Reverse((now + after, timer)));
        }
        let mut news = false;
        while let Some(notification) = self.runtime.to_notify() {
            match notification {
                OwnedNotification::MemberUp(_)
                | OwnedNotification::MemberDown(_)
                | OwnedNotification::Rename(..) => news = true,
                OwnedNotification::Rejoin(identity) => {
                    tracing::warn!(
                        epoch = identity.epoch,
                        "declared down by the pool; rejoined"
                    );
                    *lock(&self.shared.identity) = identity;
                }
                OwnedNotification::Defunct => tracing::warn!("declared down by the pool"),
                OwnedNotification::Idle => tracing::info!("no live gossip peers left"),
                OwnedNotification::Active => tracing::debug!("joined the gossip pool"),
            }
        }
        if !news && self.refreshed.elapsed() < REFRESH_EVERY {
            return;
        }
        self.refreshed = Instant::now();
        if self.refresh_members() {
            // A peer newly suspect, down or back is news to spread now, not at the next
            // gossip tick: the dead are known sooner, and a wrongly suspected peer hears of it
            // (and its refutation spreads) sooner.
            if let Err(error) = self.foca.gossip(&mut self.runtime) {
                tracing::debug!(%error, "foca could not gossip");
            }
            self.flush().await;
        }
    }

    /// Seals and sends every datagram foca has queued.
    async fn flush(&mut self) {
        let mut plaintext = Vec::with_capacity(MAX_DATAGRAM);
        while let Some((to, data)) = self.runtime.to_send() {
            plaintext.clear();
            plaintext.push(FOCA_TAG);
            plaintext.extend_from_slice(&data);
            self.send(&plaintext, to.addr).await;
        }
    }

    /// Seals one datagram's plaintext and sends it.
    async fn send(&self, plaintext: &[u8], to: SocketAddr) {
        let sealed = self.sealer.seal(plaintext);
        match self.socket.send_to(&sealed, to).await {
            Ok(_) => Metrics::bump(&self.metrics().datagrams_sent),
            Err(error) => tracing::debug!(%to, %error, "gossip send failed"),
        }
    }

    /// Brings the shared member table in line with foca's view and emits an event for
    /// each change; true when any peer's state changed.
    fn refresh_members(&mut self) -> bool {
        let mut urgent = false;
        let mut table = lock(&self.shared.members);
        for member in self.foca.iter_membership_state() {
            let id = member.id();
            let state = match member.state() {
                State::Alive => MemberState::Alive,
                State::Suspect => MemberState::Suspect,
                State::Down => MemberState::Down,
            };
            let entry = table.entry(id.addr).or_insert_with(|| Member {
                name: id.name.clone(),
                cluster: id.cluster.clone(),
                addr: id.addr,
                epoch: id.epoch,
                state: MemberState::Down,
                last_heard: None,
            });
            let renamed = entry.epoch != id.epoch || entry.name != id.name;
            if !renamed && entry.state == state {
                continue;
            }
            let was = entry.state;
            entry.name.clone_from(&id.name);
            entry.cluster.clone_from(&id.cluster);
            entry.epoch = id.epoch;
            entry.state = state;
            let event = match state {
                MemberState::Alive if was != MemberState::Alive || renamed => {
                    // Also a refuted suspicion: spread it before others time it out.
                    urgent = true;
                    MembershipEvent::Up(entry.clone())
                }
                MemberState::Suspect if was == MemberState::Down => {
                    urgent = true;
                    MembershipEvent::Up(entry.clone())
                }
                MemberState::Suspect => {
                    urgent = true;
                    MembershipEvent::Suspect(entry.clone())
                }
                MemberState::Down if was != MemberState::Down => {
                    urgent = true;
                    MembershipEvent::Down(entry.clone())
                }
                _ => continue,
            };
            tracing::debug!(?event, "membership changed");
            // No subscribers is fine.
            let _ = self.events.send(event);
        }
        // foca holds one identity per address, so a table no larger than foca's has no
        // member foca has forgotten (the common case, spared a set of every address).
        if table.len() > self.foca.iter_membership_state().len() {
            let known: HashSet<SocketAddr> = self
                .foca
                .iter_membership_state()
                .map(|m| m.id().addr)
                .collect();
            table.retain(|addr, _| known.contains(addr));
        }
        urgent
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
