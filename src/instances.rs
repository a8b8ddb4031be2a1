//! App instances: one per (appid, client IP), created on first call. Each holds the instance's
//! slots (10 HTTP calls, 5 sockets, from `limits`), its queue count, and its foreground /
//! background phase, with the timer that cuts in-flight calls `background_grace_ms` after the
//! app went to the background.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::config::{Config, Limits, Overflow};

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
}

/// Holds a slot until dropped; the queue count is released even when a waiting call is cancelled.
struct QueuedGuard<'a>(&'a AtomicUsize);

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Instance {
    fn new(appid: &str, client: IpAddr, limits: &Limits, phase: Phase) -> Self {
        Instance {
            appid: appid.to_owned(),
            client,
            limits: limits.clone(),
            http: Arc::new(Semaphore::new(limits.requests)),
            sockets: Arc::new(Semaphore::new(limits.sockets)),
            queued: AtomicUsize::new(0),
            phase: watch::channel(phase).0,
            generation: AtomicU64::new(0),
            socket_tasks: AtomicU64::new(0),
        }
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
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

    /// Resolves when the instance's in-flight calls are to be cut (background grace elapsed).
    pub async fn cut(&self) {
        let mut rx = self.phase.subscribe();
        // The sender lives as long as `self`, so this only ends by seeing `Cut`.
        let _ = rx.wait_for(|phase| *phase == Phase::Cut).await;
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
}

impl Instances {
    pub fn new(config: &Config) -> Self {
        Instances {
            limits: std::sync::RwLock::new(limits_of(config)),
            order: std::sync::RwLock::new(config.apps.iter().map(|a| a.appid.clone()).collect()),
            map: Mutex::new(HashMap::new()),
            background_apps: Mutex::new(HashSet::new()),
        }
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
                Arc::new(Instance::new(appid, client, limits, phase))
            });
        Ok(instance.clone())
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

fn limits_of(config: &Config) -> HashMap<String, Limits> {
    config
        .apps
        .iter()
        .map(|a| (a.appid.clone(), a.limits.clone()))
        .collect()
}
