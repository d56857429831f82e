//! Nacos as a [`Registry`]: each watched service follows a gRPC push session
//! (or, in poll mode, the v1 HTTP query), fails over across the servers, and
//! falls back to polling the HTTP query while no push session can be had.
//!
//! Every answer is a full set: a push carries the whole service, and so does
//! the subscription's own answer, which brings a watch back in sync after each
//! reconnect. A failure is reported (the runtime turns the watch stale and
//! keeps its set) only when neither the push session nor the HTTP query
//! works.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use discovery_core::{Answer, Backoff, InvalidTarget, ListError, Registry, RegistryError, Target};
use futures_util::{StreamExt, stream::BoxStream};
use tokio::{sync::mpsc, time::Instant};
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    config::{Mode, NacosConfig},
    convert,
    grpc::Session,
    http::Http,
    model::ServiceInfo,
    target::ServiceKey,
};

/// A push session that lived this long resets the reconnection back-off.
const STABLE_SESSION: Duration = Duration::from_secs(10);

/// First wait after a failure.
const BACKOFF_MIN: Duration = Duration::from_millis(200);

type Item = Result<Answer, RegistryError>;

/// The Nacos servers, as a registry of services.
#[derive(Clone)]
pub struct NacosRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: NacosConfig,
    http: Http,
    /// The server whose gRPC session worked last; sessions start there.
    preferred: AtomicUsize,
}

/// Why the registry could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

// === impl NacosRegistry ===

impl NacosRegistry {
    /// A registry over the configured servers. Nothing is contacted yet.
    pub fn new(cfg: NacosConfig) -> Result<Self, ConfigError> {
        if cfg.servers.is_empty() {
            return Err(ConfigError("no nacos server given".into()));
        }
        for s in &cfg.servers {
            s.grpc_uri(cfg.grpc_port_offset).map_err(ConfigError)?;
        }
        let http = Http::new(&cfg).map_err(ConfigError)?;
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                http,
                preferred: AtomicUsize::new(0),
            }),
        })
    }

    /// Logs in once (when credentials are configured), so that a wrong
    /// password shows at start. The adapter keeps running either way.
    pub async fn check_login(&self) -> Result<(), String> {
        self.inner.http.token().await.map(drop)
    }
}

impl Registry for NacosRegistry {
    fn validate(&self, target: &Target) -> Result<(), InvalidTarget> {
        ServiceKey::from_target(target).map(drop)
    }

    fn watch(&self, target: &Target) -> BoxStream<'static, Item> {
        let (tx, rx) = mpsc::channel(1);
        match ServiceKey::from_target(target) {
            Ok(key) => {
                let inner = self.inner.clone();
                tokio::spawn(async move {
                    match inner.cfg.mode {
                        Mode::Push => inner.push_watch(key, tx).await,
                        Mode::Poll => inner.poll_watch(key, tx).await,
                    }
                });
            }
            Err(e) => {
                let _ = tx.try_send(Err(RegistryError::new(e.to_string())));
            }
        }
        ReceiverStream::new(rx).boxed()
    }

    /// The services of a namespace and group (arguments `namespace_id`,
    /// `group_name`).
    async fn list_services(
        &self,
        args: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<String>, ListError> {
        if let Some(k) = args.keys().find(|k| {
            !matches!(
                k.as_str(),
                "namespace_id" | "namespaceId" | "group_name" | "groupName"
            )
        }) {
            return Err(InvalidTarget(format!(
                "unknown argument {k:?} (known: namespace_id, group_name)"
            ))
            .into());
        }
        let key = ServiceKey::from_target(&Target {
            service: "list".into(),
            args: args.clone(),
        })?;
        self.inner
            .http
            .services(&key)
            .await
            .map_err(|e| RegistryError::new(e).into())
    }
}

// === impl Inner ===

impl Inner {
    /// Follows `key` by push; see the module's documentation.
    async fn push_watch(&self, key: ServiceKey, tx: mpsc::Sender<Item>) {
        let mut grpc_backoff = Backoff::new(BACKOFF_MIN, self.cfg.backoff_max);
        let mut http_backoff = Backoff::new(BACKOFF_MIN, self.cfg.backoff_max);
        let mut next_grpc = Instant::now();
        let mut next_poll = Instant::now();
        let mut grpc_error = String::new();
        loop {
            if Instant::now() >= next_grpc {
                match self.open(&key).await {
                    Ok((session, info)) => {
                        let started = Instant::now();
                        if !send(&tx, self.answer(&key, info).await).await {
                            return;
                        }
                        tracing::info!(service = %key.label(), server = session.server(), "subscribed");
                        let Some(reason) = self.follow(&key, session, &tx).await else {
                            return;
                        };
                        tracing::warn!(service = %key.label(), error = %reason, "push session lost; reconnecting");
                        grpc_error = reason;
                        // Reconnect at once after a session that held; a
                        // session that keeps failing young backs off.
                        let delay = if started.elapsed() >= STABLE_SESSION {
                            grpc_backoff.reset();
                            Duration::ZERO
                        } else {
                            grpc_backoff.next_delay()
                        };
                        next_grpc = Instant::now() + delay;
                        next_poll = next_grpc;
                        continue;
                    }
                    Err(e) => {
                        tracing::debug!(service = %key.label(), error = %e, "no push session");
                        grpc_error = e;
                        next_grpc = Instant::now() + grpc_backoff.next_delay();
                    }
                }
            }
            if Instant::now() >= next_poll {
                let answer = match self.http.instances(&key).await {
                    Ok(info) => self.answer(&key, info).await,
                    Err(e) => Err(RegistryError::new(e)),
                };
                let answer = answer.map_err(|e| {
                    let e = e.to_string();
                    RegistryError::new(if e == grpc_error {
                        e
                    } else {
                        format!("push: {grpc_error}; v1 query: {e}")
                    })
                });
                next_poll = Instant::now()
                    + match &answer {
                        Ok(_) => {
                            http_backoff.reset();
                            self.cfg.poll_interval
                        }
                        Err(_) => http_backoff.next_delay(),
                    };
                if !send(&tx, answer).await {
                    return;
                }
            }
            tokio::select! {
                () = tokio::time::sleep_until(next_grpc.min(next_poll)) => {}
                () = tx.closed() => return,
            }
        }
    }

    /// Follows `key` by polling the v1 HTTP query.
    async fn poll_watch(&self, key: ServiceKey, tx: mpsc::Sender<Item>) {
        let mut backoff = Backoff::new(BACKOFF_MIN, self.cfg.backoff_max);
        loop {
            let answer = match self.http.instances(&key).await {
                Ok(info) => self.answer(&key, info).await,
                Err(e) => Err(RegistryError::new(e)),
            };
            let delay = match &answer {
                Ok(_) => {
                    backoff.reset();
                    self.cfg.poll_interval
                }
                Err(_) => backoff.next_delay(),
            };
            if !send(&tx, answer).await {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = tx.closed() => return,
            }
        }
    }

    /// A push session subscribed to `key`, from the first server that gives
    /// one, with the service as it is now.
    async fn open(&self, key: &ServiceKey) -> Result<(Session, ServiceInfo), String> {
        let servers = &self.cfg.servers;
        let first = self.preferred.load(Ordering::Relaxed) % servers.len();
        let mut errors = Vec::new();
        for i in 0..servers.len() {
            let idx = (first + i) % servers.len();
            let token = self.http.token().await?;
            let attempt = async {
                let mut session = Session::open(&servers[idx], &self.cfg).await?;
                let info = session.subscribe(key, token.clone()).await?;
                Ok::<_, String>((session, info))
            };
            match attempt.await {
                Ok(ok) => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Ok(ok);
                }
                Err(e) => {
                    if token.is_some() && e.contains("refused") {
                        // Perhaps the token expired early: log in again next time.
                        self.http.invalidate_token().await;
                    }
                    errors.push(e);
                }
            }
        }
        Err(errors.join("; "))
    }

    /// Passes pushes on until the session fails (the reason) or the watch
    /// closes (`None`).
    async fn follow(
        &self,
        key: &ServiceKey,
        mut session: Session,
        tx: &mpsc::Sender<Item>,
    ) -> Option<String> {
        let ticker = |period: Duration| {
            let mut t = tokio::time::interval_at(Instant::now() + period, period);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        };
        let mut health = ticker(self.cfg.health_interval);
        let mut resync = ticker(self.cfg.resync_interval);
        loop {
            tokio::select! {
                () = tx.closed() => return None,
                push = session.next_push(key) => match push {
                    Ok(info) => {
                        tracing::debug!(service = %key.label(), "push received");
                        if !send(tx, self.answer(key, info).await).await {
                            return None;
                        }
                    }
                    Err(e) => return Some(e),
                },
                _ = health.tick() => {
                    if let Err(e) = session.health_check().await {
                        return Some(e);
                    }
                }
                _ = resync.tick() => {
                    // Servers miss pushes (rnacos does not push an instance
                    // made healthy again by a heartbeat): re-read the whole
                    // service from time to time.
                    let token = match self.http.token().await {
                        Ok(t) => t,
                        Err(e) => return Some(e),
                    };
                    match session.subscribe(key, token).await {
                        Ok(info) => {
                            if !send(tx, self.answer(key, info).await).await {
                                return None;
                            }
                        }
                        Err(e) => return Some(e),
                    }
                }
            }
        }
    }

    /// The answer a service's state gives: its endpoints, or, with no
    /// instance at all, whether the service exists.
    async fn answer(&self, key: &ServiceKey, info: ServiceInfo) -> Item {
        let hosts = info.hosts.unwrap_or_default();
        if !hosts.is_empty() {
            return Ok(Answer::Found(convert::endpoints(
                &hosts,
                key,
                &self.cfg.endpoints,
            )));
        }
        // Nacos lists no instances for an unknown service as for an empty one.
        match self.http.exists(key).await {
            Ok(true) => Ok(Answer::Found(Vec::new())),
            Ok(false) => Ok(Answer::NotFound),
            Err(e) => Err(RegistryError::new(e)),
        }
    }
}

/// Sends one item; `false` when the watch is gone.
async fn send(tx: &mpsc::Sender<Item>, item: Item) -> bool {
    tx.send(item).await.is_ok()
}
