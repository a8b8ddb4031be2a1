//! App instances: one per (appid, client IP), created on first call. Each holds the instance's
//! slots (10 HTTP calls, 5 sockets, from `limits`), its queue count, and its foreground /
//! background phase, with the timer that cuts in-flight calls `background_grace_ms` after the
//! app went to the background, the sliding window of the TCP sockets it created (20 per
//! 5 minutes); and its network: the profile with the token buckets its calls share, and a
//! signal that cuts calls in flight on a network change or when it goes offline.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::{Config, Limits, NetworkConfig, Overflow};

mod cuts;
use crate::policy::network::{splitmix64, Bucket, Profile};
use crate::policy::SlidingWindow;
pub use cuts::{CallCut, CutBy};

/// An instance's network: its profile, and the token buckets (down, up) all its calls share.
#[derive(Debug)]
pub struct Link {
    /// Shared with every call record made under it.
    pub name: Arc<str>,
    pub profile: Profile,
    origin: tokio::time::Instant,
    down: Mutex<Bucket>,
    up: Mutex<Bucket>,
}

impl Link {
    pub fn new(name: &str, profile: Profile) -> Link {
        Link {
            name: Arc::from(name),
            profile,
            origin: tokio::time::Instant::now(),
            down: Mutex::new(Bucket::new(profile.down_kbps, Duration::ZERO)),
            up: Mutex::new(Bucket::new(profile.up_kbps, Duration::ZERO)),
        }
    }

    fn bucket(&self, down: bool) -> std::sync::MutexGuard<'_, Bucket> {
        let bucket = if down { &self.down } else { &self.up };
        bucket.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Is the direction (down: to the client) rate-limited?
    pub fn shapes(&self, down: bool) -> bool {
        if down {
            self.profile.down_kbps > 0
        } else {
            self.profile.up_kbps > 0
        }
    }

    /// The largest piece to reserve at once in a direction.
    pub fn chunk(&self, down: bool) -> usize {
        self.bucket(down).chunk()
    }

    /// Reserve `n` bytes in a direction; how long to wait before sending them.
    pub fn reserve(&self, down: bool, n: usize) -> Duration {
        let now = tokio::time::Instant::now().saturating_duration_since(self.origin);
        self.bucket(down).take(n as u64, now)
    }
}

/// What calls in flight watch: bumped by each network change; `offline` while the profile is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct NetSignal {
    changes: u64,
    offline: bool,
}

/// Why the network cut a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetCut {
    Change,
    Offline,
}

/// Why a network switch could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    UnknownApp(#[from] UnknownApp),
    #[error("no network profile {0}")]
    UnknownProfile(String),
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Foreground,
    /// In the background, within the grace: in-flight calls continue, new calls are refused.
    Background,
    /// In the background past the grace: in-flight calls were cut.
    Cut,
}

/// Why a slot could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotError {
    /// `overflow: fail` and every HTTP slot is taken.
    HttpFull { limit: usize },
    /// Every socket slot is taken; `task_id` is the refused socket's task number.
    SocketsFull { limit: usize, task_id: u64 },
}

/// Why a TCP socket could not be created: `limit` were created in the last `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpQuotaExceeded {
    pub limit: usize,
    pub window_ms: u64,
    /// Until the oldest creation leaves the window.
    pub wait_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no app {0} in the config")]
pub struct UnknownApp(pub String);

/// One app on one device.
#[derive(Debug)]
pub struct Instance {
    pub appid: String,
    pub client: IpAddr,
    limits: Limits,
    http: Arc<Semaphore>,
    sockets: Arc<Semaphore>,
    queued: AtomicUsize,
    phase: watch::Sender<Phase>,
    /// Bumped on every background/foreground, so a stale grace timer does nothing.
    generation: AtomicU64,
    socket_tasks: AtomicU64,
    /// When the instance was made: the origin of its quota clock.
    born: Instant,
    /// TCP sockets created within `limits.tcp_window`.
    tcp_created: Mutex<SlidingWindow>,
    link: Mutex<Arc<Link>>,
    net: watch::Sender<NetSignal>,
    /// What calls in flight wait for (see [`cuts`]).
    cuts: cuts::Cuts,
}

/// Holds a slot until dropped; the queue count is released even when a waiting call is cancelled.
struct QueuedGuard<'a>(&'a AtomicUsize);

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Instance {
    fn new(appid: &str, client: IpAddr, limits: &Limits, phase: Phase, link: Link) -> Self {
        let offline = link.profile.offline;
        Instance {
            link: Mutex::new(Arc::new(link)),
            net: watch::channel(NetSignal {
                changes: 0,
                offline,
            })
            .0,
            appid: appid.to_owned(),
            client,
            limits: limits.clone(),
            http: Arc::new(Semaphore::new(limits.requests)),
            sockets: Arc::new(Semaphore::new(limits.sockets)),
            queued: AtomicUsize::new(0),
            phase: watch::channel(phase).0,
            generation: AtomicU64::new(0),
            socket_tasks: AtomicU64::new(0),
            born: Instant::now(),
            tcp_created: Mutex::new(SlidingWindow::default()),
            cuts: cuts::Cuts::default(),
        }
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A free HTTP slot now, if there is one (no call waits for one then: waiters get freed
    /// slots first).
    pub fn try_http_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.http.clone().try_acquire_owned().ok()
    }

    /// An HTTP slot (request, uploadFile, downloadFile): FIFO wait with `overflow: queue`, an
    /// error at once with `overflow: fail`. Cancel-safe: drop the future to leave the queue.
    ///
    /// # Errors
    /// [`SlotError::HttpFull`] with `overflow: fail`.
    pub async fn http_slot(&self) -> Result<OwnedSemaphorePermit, SlotError> {
        let full = SlotError::HttpFull {
            limit: self.limits.requests,
        };
        if let Ok(permit) = self.http.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.limits.overflow == Overflow::Fail {
            return Err(full);
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        let _queued = QueuedGuard(&self.queued);
        // The semaphore is never closed, so acquiring only fails if it were.
        self.http.clone().acquire_owned().await.map_err(|_| full)
    }

    /// A socket slot and its task id (1, 2, ... per instance, as the client numbers them).
    ///
    /// # Errors
    /// [`SlotError::SocketsFull`] when the sockets are all open.
    pub fn socket_slot(&self) -> Result<(OwnedSemaphorePermit, u64), SlotError> {
        let task_id = self.socket_tasks.fetch_add(1, Ordering::Relaxed) + 1;
        self.sockets
            .clone()
            .try_acquire_owned()
            .map(|permit| (permit, task_id))
            .map_err(|_| SlotError::SocketsFull {
                limit: self.limits.sockets,
                task_id,
            })
    }

    /// Count one `wx.createTCPSocket` created at `now`, unless `limits.tcp_per_5min` were
    /// created in the `limits.tcp_window` before it.
    ///
    /// # Errors
    /// [`TcpQuotaExceeded`] with the wait until the next one may be created.
    pub fn take_tcp(&self, now: Instant) -> Result<(), TcpQuotaExceeded> {
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let now_ms = ms(now.saturating_duration_since(self.born));
        let window_ms = ms(self.limits.tcp_window);
        let limit = self.limits.tcp_per_5min;
        self.tcp_created
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_take(now_ms, limit, window_ms)
            .map_err(|wait_ms| TcpQuotaExceeded {
                limit,
                window_ms,
                wait_ms,
            })
    }

    /// Resolves when a call in flight now is to be cut: by the background cut or the network
    /// (what [`Instance::cut`] and [`Instance::net_cut`] say, for calls that wait often).
    pub fn call_cut(self: &Arc<Self>) -> CallCut {
        CallCut::new(self.clone())
    }

    /// Resolves when the instance's in-flight calls are to be cut (background grace elapsed).
    pub async fn cut(&self) {
        let mut rx = self.phase.subscribe();
        // The sender lives as long as `self`, so this only ends by seeing `Cut`.
        let _ = rx.wait_for(|phase| *phase == Phase::Cut).await;
    }

    /// The instance's network now (a call keeps the one it started with).
    pub fn link(&self) -> Arc<Link> {
        self.link
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Switch the profile (fresh buckets); going offline cuts calls in flight and sockets.
    pub fn set_link(&self, link: Link) {
        let offline = link.profile.offline;
        *self.link.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(link);
        let changed = self.net.send_if_modified(|s| {
            let changed = s.offline != offline;
            s.offline = offline;
            changed
        });
        if changed {
            self.cuts.network();
        }
    }

    /// A network change: every call in flight and every socket is cut; later calls pass.
    pub fn network_change(&self) {
        self.net.send_modify(|s| s.changes += 1);
        self.cuts.network();
    }

    /// Resolves when the network cuts calls that are in flight now: a network change after
    /// this call, or the instance being (or going) offline. Subscribes at once.
    pub fn net_cut(&self) -> impl std::future::Future<Output = NetCut> + Send + 'static {
        let mut rx = self.net.subscribe();
        let start = rx.borrow_and_update().changes;
        async move {
            let seen = rx
                .wait_for(|s| s.offline || s.changes != start)
                .await
                .map(|s| s.offline);
            match seen {
                Ok(true) => NetCut::Offline,
                Ok(false) => NetCut::Change,
                // The instance is gone: nothing will cut the call any more.
                Err(_) => std::future::pending().await,
            }
        }
    }

    pub fn http_in_flight(&self) -> usize {
        self.limits
            .requests
            .saturating_sub(self.http.available_permits())
    }

    pub fn http_queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn sockets_open(&self) -> usize {
        self.limits
            .sockets
            .saturating_sub(self.sockets.available_permits())
    }

    fn go_background(self: &Arc<Self>) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.phase.send_if_modified(|phase| {
            if *phase == Phase::Foreground {
                *phase = Phase::Background;
                true
            } else {
                false
            }
        });
        let this = self.clone();
        let grace = self.limits.background_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if this.generation.load(Ordering::SeqCst) == generation
                && this.phase() == Phase::Background
            {
                this.phase.send_replace(Phase::Cut);
                this.cuts.background();
            }
        });
    }

    fn go_foreground(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.phase.send_replace(Phase::Foreground);
    }

    fn snapshot(&self) -> InstanceSnapshot {
        InstanceSnapshot {
            client: self.client.to_string(),
            state: if self.phase() == Phase::Foreground {
                "foreground"
            } else {
                "background"
            },
            http_in_flight: self.http_in_flight(),
            http_queued: self.http_queued(),
            sockets: self.sockets_open(),
            network: self.link().name.to_string(),
        }
    }
}

/// `GET /api/state`'s view of one instance.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InstanceSnapshot {
    pub client: String,
    pub state: &'static str,
    pub http_in_flight: usize,
    pub http_queued: usize,
    pub sockets: usize,
    /// The network profile's name.
    pub network: String,
}

/// `GET /api/state`'s view of one app.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AppSnapshot {
    pub appid: String,
    pub instances: Vec<InstanceSnapshot>,
}

/// Every instance of every app.
#[derive(Debug)]
pub struct Instances {
    limits: std::sync::RwLock<HashMap<String, Limits>>,
    /// Config order, for stable listings.
    order: std::sync::RwLock<Vec<String>>,
    /// appid → client → instance (looked up by &str: no allocation per call).
    map: Mutex<HashMap<String, HashMap<IpAddr, Arc<Instance>>>>,
    /// Apps sent to the background as a whole: instances made later start there too.
    background_apps: Mutex<HashSet<String>>,
    network: std::sync::RwLock<NetworkConfig>,
    /// Apps switched to a profile as a whole: instances made later start with it.
    app_profiles: Mutex<HashMap<String, String>>,
    /// The loss rolls' random state (splitmix64).
    rng: AtomicU64,
    /// Bumped after instances may have been removed (a reconfigure): a [`LastInstance`] kept
    /// from before is not used again.
    generation: AtomicU64,
}

/// The instance a connection's last call ran in, for its next call (a connection's calls are
/// one app's on one client, almost always): no lookup in the shared map per call.
#[derive(Debug, Default)]
pub struct LastInstance(Mutex<Option<(u64, Arc<Instance>)>>);

impl Instances {
    pub fn new(config: &Config) -> Self {
        Instances {
            limits: std::sync::RwLock::new(limits_of(config)),
            order: std::sync::RwLock::new(config.apps.iter().map(|a| a.appid.clone()).collect()),
            map: Mutex::new(HashMap::new()),
            background_apps: Mutex::new(HashSet::new()),
            network: std::sync::RwLock::new(config.network.clone()),
            app_profiles: Mutex::new(HashMap::new()),
            rng: AtomicU64::new(config.network.seed.unwrap_or_else(clock_seed)),
            generation: AtomicU64::new(0),
        }
    }

    /// The next random value for a loss roll (deterministic in call order for a given seed).
    pub fn draw(&self) -> u64 {
        let mut state = self.rng.load(Ordering::Relaxed);
        loop {
            let (next, value) = splitmix64(state);
            match self
                .rng
                .compare_exchange_weak(state, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return value,
                Err(now) => state = now,
            }
        }
    }

    /// A fresh link for a profile name, if there is such a profile.
    pub fn link_for(&self, name: &str) -> Option<Link> {
        let network = self.network.read().unwrap_or_else(PoisonError::into_inner);
        network.profile(name).map(|p| Link::new(name, p))
    }

    /// The link a new instance of `appid` starts with.
    fn initial_link(&self, appid: &str) -> Link {
        let chosen = self
            .app_profiles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(appid)
            .cloned();
        let default = self
            .network
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .default
            .clone();
        chosen
            .and_then(|name| self.link_for(&name))
            .or_else(|| self.link_for(&default))
            .unwrap_or_else(|| Link::new("online", Profile::default()))
    }

    /// Switch the app (or only its instance on `client`) to a profile; returns how many
    /// instances were touched.
    ///
    /// # Errors
    /// An unknown profile (checked first) or app.
    pub fn set_network(
        &self,
        appid: &str,
        client: Option<IpAddr>,
        profile: &str,
    ) -> Result<usize, NetworkError> {
        if self.link_for(profile).is_none() {
            return Err(NetworkError::UnknownProfile(profile.to_owned()));
        }
        let targets = self.targets(appid, client)?;
        if client.is_none() {
            self.app_profiles
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(appid.to_owned(), profile.to_owned());
        }
        for instance in &targets {
            if let Some(link) = self.link_for(profile) {
                instance.set_link(link);
            }
        }
        Ok(targets.len())
    }

    /// A network change for the app (or its instance on `client`).
    ///
    /// # Errors
    /// `appid` is not configured.
    pub fn network_change(&self, appid: &str, client: Option<IpAddr>) -> Result<usize, UnknownApp> {
        let targets = self.targets(appid, client)?;
        for instance in &targets {
            instance.network_change();
        }
        Ok(targets.len())
    }

    /// The instance of `appid` on `client`, if one was made (nothing is made here).
    pub fn find(&self, appid: &str, client: IpAddr) -> Option<Arc<Instance>> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(appid)
            .and_then(|by_client| by_client.get(&client))
            .cloned()
    }

    /// The instance of `appid` on `client`, made on first use.
    ///
    /// # Errors
    /// `appid` is not configured.
    pub fn get(&self, appid: &str, client: IpAddr) -> Result<Arc<Instance>, UnknownApp> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(instance) = map.get(appid).and_then(|by_client| by_client.get(&client)) {
            return Ok(instance.clone());
        }
        let limits = self
            .limits
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(appid)
            .cloned()
            .ok_or_else(|| UnknownApp(appid.to_owned()))?;
        let limits = &limits;
        let instance = map
            .entry(appid.to_owned())
            .or_default()
            .entry(client)
            .or_insert_with(|| {
                let background = self
                    .background_apps
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .contains(appid);
                let phase = if background {
                    Phase::Background
                } else {
                    Phase::Foreground
                };
                Arc::new(Instance::new(
                    appid,
                    client,
                    limits,
                    phase,
                    self.initial_link(appid),
                ))
            });
        Ok(instance.clone())
    }

    /// [`Instances::get`], through the connection's `last` instance when it is still the one.
    ///
    /// # Errors
    /// `appid` is not configured.
    pub fn get_via(
        &self,
        last: &LastInstance,
        appid: &str,
        client: IpAddr,
    ) -> Result<Arc<Instance>, UnknownApp> {
        // Read before the lookup: a reconfigure after it makes what is kept here stale.
        let generation = self.generation.load(Ordering::Acquire);
        let mut kept = last.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((g, instance)) = kept.as_ref() {
            if *g == generation && instance.client == client && instance.appid == appid {
                return Ok(instance.clone());
            }
        }
        let instance = self.get(appid, client)?;
        *kept = Some((generation, instance.clone()));
        Ok(instance)
    }

    /// Send the app (or only its instance on `client`) to the background; returns how many
    /// instances were touched. Must run inside a tokio runtime (it starts the grace timers).
    ///
    /// # Errors
    /// `appid` is not configured.
    pub fn background(&self, appid: &str, client: Option<IpAddr>) -> Result<usize, UnknownApp> {
        let targets = self.targets(appid, client)?;
        if client.is_none() {
            self.background_apps
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(appid.to_owned());
        }
        for instance in &targets {
            instance.go_background();
        }
        Ok(targets.len())
    }

    /// Bring the app (or its instance on `client`) back to the foreground, cancelling a pending cut.
    ///
    /// # Errors
    /// `appid` is not configured.
    pub fn foreground(&self, appid: &str, client: Option<IpAddr>) -> Result<usize, UnknownApp> {
        let targets = self.targets(appid, client)?;
        if client.is_none() {
            self.background_apps
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(appid);
        }
        for instance in &targets {
            instance.go_foreground();
        }
        Ok(targets.len())
    }

    fn targets(
        &self,
        appid: &str,
        client: Option<IpAddr>,
    ) -> Result<Vec<Arc<Instance>>, UnknownApp> {
        match client {
            // A named device gets its instance now, so its next call sees the new phase.
            Some(ip) => Ok(vec![self.get(appid, ip)?]),
            None => {
                let known = self
                    .limits
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .contains_key(appid);
                if !known {
                    return Err(UnknownApp(appid.to_owned()));
                }
                let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
                Ok(map
                    .get(appid)
                    .map(|by_client| by_client.values().cloned().collect())
                    .unwrap_or_default())
            }
        }
    }

    /// A new config: apps added or removed, limits for instances made from now on (an
    /// instance keeps the slots it was made with; its calls in flight hold them).
    pub fn reconfigure(&self, config: &Config) {
        *self.limits.write().unwrap_or_else(PoisonError::into_inner) = limits_of(config);
        *self.network.write().unwrap_or_else(PoisonError::into_inner) = config.network.clone();
        *self.order.write().unwrap_or_else(PoisonError::into_inner) =
            config.apps.iter().map(|a| a.appid.clone()).collect();
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|appid, _| config.apps.iter().any(|a| &a.appid == appid));
        for by_client in map.values_mut() {
            by_client.retain(|_, instance| {
                let fresh = config
                    .apps
                    .iter()
                    .find(|a| a.appid == instance.appid)
                    .is_some_and(|a| a.limits == instance.limits);
                // An instance with other limits is made anew on its next call, once idle.
                fresh
                    || instance.http_in_flight() + instance.sockets_open() > 0
                    || instance.phase() != Phase::Foreground
            });
        }
        // Once the removals are done, still under the lock: a call that reads the new
        // generation finds the map as it is after them.
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Every app with its instances, in config order.
    pub fn snapshot(&self) -> Vec<AppSnapshot> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let order = self.order.read().unwrap_or_else(PoisonError::into_inner);
        order
            .iter()
            .map(|appid| {
                let mut instances: Vec<InstanceSnapshot> = map
                    .get(appid)
                    .map(|by_client| by_client.values().map(|i| i.snapshot()).collect())
                    .unwrap_or_default();
                instances.sort_by(|a, b| a.client.cmp(&b.client));
                AppSnapshot {
                    appid: appid.clone(),
                    instances,
                }
            })
            .collect()
    }
}

/// A seed for the loss rolls when the config names none.
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn limits_of(config: &Config) -> HashMap<String, Limits> {
    config
        .apps
        .iter()
        .map(|a| (a.appid.clone(), a.limits.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn instances(limits: &str) -> Instances {
        let yaml = format!(
            "apps:\n  - appid: wx0123456789abcdef\n    limits: {limits}\n  - appid: wxfedcba9876543210\n    limits: {limits}\n"
        );
        let config = Config::from_yaml_str(&yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        Instances::new(&config)
    }

    /// The platform's window (5 minutes) slides on tokio's paused clock.
    #[tokio::test(start_paused = true)]
    async fn take_tcp_counts_per_instance_in_a_sliding_window() {
        let all = instances("{tcp_per_5min: 2}");
        let a = all
            .get("wx0123456789abcdef", "127.0.0.1".parse().unwrap())
            .unwrap();
        assert_eq!(a.take_tcp(Instant::now()), Ok(()));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(a.take_tcp(Instant::now()), Ok(()));
        let full = |wait_ms| {
            Err(TcpQuotaExceeded {
                limit: 2,
                window_ms: 300_000,
                wait_ms,
            })
        };
        assert_eq!(a.take_tcp(Instant::now()), full(240_000));
        // Other instances (another device, another app) have their own window.
        let b = all
            .get("wx0123456789abcdef", "127.0.0.2".parse().unwrap())
            .unwrap();
        let c = all
            .get("wxfedcba9876543210", "127.0.0.1".parse().unwrap())
            .unwrap();
        assert_eq!(b.take_tcp(Instant::now()), Ok(()));
        assert_eq!(c.take_tcp(Instant::now()), Ok(()));
        // The first leaves the window 5 minutes after it was taken, not before.
        tokio::time::advance(Duration::from_millis(239_999)).await;
        assert_eq!(a.take_tcp(Instant::now()), full(1));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(a.take_tcp(Instant::now()), Ok(()));
        assert_eq!(a.take_tcp(Instant::now()), full(60_000));
        // The same instance is found again: its window is kept.
        let again = all
            .get("wx0123456789abcdef", "127.0.0.1".parse().unwrap())
            .unwrap();
        assert_eq!(again.take_tcp(Instant::now()), full(60_000));
    }

    /// A connection's kept instance is its app's on its client, and never one a reconfigure
    /// took out of the map: the next call gets the instance made anew (or no app at all).
    #[test]
    fn a_kept_instance_is_the_map_s_until_a_reconfigure() {
        let all = instances("{requests: 10}");
        let last = LastInstance::default();
        let (a, b) = ("wx0123456789abcdef", "wxfedcba9876543210");
        let here: IpAddr = "127.0.0.1".parse().unwrap();
        let there: IpAddr = "127.0.0.2".parse().unwrap();
        let first = all.get_via(&last, a, here).unwrap();
        assert!(Arc::ptr_eq(&first, &all.get_via(&last, a, here).unwrap()));
        assert!(Arc::ptr_eq(&first, &all.get(a, here).unwrap()));
        // Another app or another client is looked up, not served from the kept one.
        let other = all.get_via(&last, b, here).unwrap();
        assert_eq!((other.appid.as_str(), other.client), (b, here));
        let elsewhere = all.get_via(&last, a, there).unwrap();
        assert_eq!((elsewhere.appid.as_str(), elsewhere.client), (a, there));
        assert!(Arc::ptr_eq(&first, &all.get_via(&last, a, here).unwrap()));
        // New limits: the idle instance is made anew, and the kept one is not used again.
        let yaml = format!("apps:\n  - appid: {a}\n    limits: {{requests: 3}}\n");
        let config = Config::from_yaml_str(&yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        all.reconfigure(&config);
        let fresh = all.get_via(&last, a, here).unwrap();
        assert!(!Arc::ptr_eq(&first, &fresh));
        assert!(Arc::ptr_eq(&fresh, &all.get(a, here).unwrap()));
        // An app taken out of the config has no instance, kept or not.
        let _ = all.get_via(&last, b, here);
        let yaml = format!("apps:\n  - appid: {a}\n");
        let config = Config::from_yaml_str(&yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        all.reconfigure(&config);
        assert!(all.get_via(&last, b, here).is_err());
    }
}
