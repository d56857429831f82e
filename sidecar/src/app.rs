//! The running sidecar: builds listeners, routes and upstreams from a config,
//! applies a new config on reload without dropping requests in flight, and
//! shuts down gracefully.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{
    config::{Config, Listener, ListenerProtocol},
    discovery::Discovery,
    proxy::{HttpProxy, Route, RouteTable, bound, serve_http, serve_tcp},
    telemetry::Telemetry,
    upstream::Upstream,
};

/// The sidecar: its current config, listeners and upstreams.
pub struct App {
    discovery: Discovery,
    running: tokio::sync::Mutex<Running>,
    current: ArcSwap<Current>,
    drain: Duration,
    /// Traces, and the request counters that outlive reloads.
    pub(crate) telemetry: Arc<Telemetry>,
}

/// What the admin API shows: the config in force and its upstreams.
pub struct Current {
    /// The config in force.
    pub config: Arc<Config>,
    /// Its source text.
    pub text: String,
    /// Upstreams by name, sorted.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Bound listener addresses by name.
    pub listeners: Vec<(String, SocketAddr)>,
}

#[derive(Default)]
struct Running {
    listeners: HashMap<String, ListenerHandle>,
    upstreams: HashMap<String, Arc<Upstream>>,
}

struct ListenerHandle {
    cfg: Listener,
    addr: SocketAddr,
    kind: ListenerKind,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

enum ListenerKind {
    Http(Arc<ArcSwap<RouteTable>>),
    Tcp(Arc<ArcSwap<Upstream>>),
}

// === impl App ===

impl App {
    /// Starts the sidecar with `config`; fails if a listener cannot be bound
    /// or an upstream cannot be built.
    pub async fn start(
        config: Config,
        text: String,
        drain: Duration,
        telemetry: Arc<Telemetry>,
    ) -> Result<Arc<Self>, String> {
        let app = Arc::new(Self {
            discovery: Discovery::new(subscriber_id()),
            running: tokio::sync::Mutex::default(),
            current: ArcSwap::from_pointee(Current {
                config: Arc::new(config.clone()),
                text: String::new(),
                upstreams: Vec::new(),
                listeners: Vec::new(),
            }),
            drain,
            telemetry,
        });
        app.apply(config, text).await?;
        Ok(app)
    }

    /// The config in force and its upstreams.
    pub fn current(&self) -> arc_swap::Guard<Arc<Current>> {
        self.current.load()
    }

    /// Whether every upstream has heard from each of its discovery sources.
    pub fn is_ready(&self) -> bool {
        self.current.load().upstreams.iter().all(|u| u.is_ready())
    }

    /// Replaces the running config. On error nothing changes.
    pub async fn apply(&self, config: Config, text: String) -> Result<(), String> {
        let mut running = self.running.lock().await;
        let previous = self.current.load_full();
        let adapters = |c: &Config| -> Vec<(String, String, Duration)> {
            c.adapters
                .iter()
                .map(|(name, a)| (name.clone(), a.address.clone(), a.connect_timeout))
                .collect()
        };
        self.discovery.set_adapters(adapters(&config))?;
        let result = self.apply_locked(&mut running, config, text).await;
        if result.is_err() {
            // Nothing else changed; put the adapters back as they were.
            let _ = self.discovery.set_adapters(adapters(&previous.config));
        }
        result
    }

    async fn apply_locked(
        &self,
        running: &mut Running,
        config: Config,
        text: String,
    ) -> Result<(), String> {
        // Upstreams: keep unchanged ones whole (pools, state); rebuild the
        // others, carrying their live endpoint state over.
        let mut upstreams = HashMap::new();
        for cfg in &config.upstreams {
            let previous = running.upstreams.get(&cfg.name);
            let up = match previous {
                Some(p) if *p.cfg == *cfg => p.clone(),
                _ => {
                    Upstream::start(
                        Arc::new(cfg.clone()),
                        &self.discovery,
                        previous.map(|p| &**p),
                    )
                    .await?
                }
            };
            upstreams.insert(cfg.name.clone(), up);
        }

        // Listeners: bind the new ones first, so a failure changes nothing.
        let mut fresh = HashMap::new();
        for l in &config.listeners {
            let reuse = running
                .listeners
                .get(&l.name)
                .is_some_and(|h| h.cfg.address == l.address && h.cfg.protocol == l.protocol);
            if !reuse {
                let sock = TcpListener::bind(l.address).await.map_err(|e| {
                    format!("listeners.{}: cannot listen on {}: {e}", l.name, l.address)
                })?;
                fresh.insert(l.name.clone(), sock);
            }
        }

        let mut next = HashMap::new();
        for l in &config.listeners {
            let kind_now = match l.protocol {
                ListenerProtocol::Http => {
                    let routes = config
                        .routes
                        .iter()
                        .filter(|r| r.listeners.is_empty() || r.listeners.contains(&l.name))
                        .map(|r| {
                            let stats = self.telemetry.routes.get(&r.name);
                            Route::new(r, upstreams[&r.upstream].clone(), stats)
                        })
                        .collect();
                    Kind::Http(RouteTable::new(routes))
                }
                ListenerProtocol::Tcp => {
                    let name = l.upstream.as_deref().unwrap_or_default();
                    Kind::Tcp(upstreams[name].clone())
                }
            };
            let handle = match (running.listeners.remove(&l.name), fresh.remove(&l.name)) {
                (Some(mut h), None) => {
                    match (&h.kind, kind_now) {
                        (ListenerKind::Http(r), Kind::Http(t)) => r.store(Arc::new(t)),
                        (ListenerKind::Tcp(u), Kind::Tcp(up)) => u.store(up),
                        _ => unreachable!("a listener keeps its protocol when reused"),
                    }
                    h.cfg = l.clone();
                    h
                }
                (old, Some(sock)) => {
                    if let Some(old) = old {
                        old.stop();
                    }
                    self.spawn_listener(l.clone(), sock, kind_now)
                }
                (None, None) => unreachable!("every listener is either kept or freshly bound"),
            };
            next.insert(l.name.clone(), handle);
        }
        for (_, old) in running.listeners.drain() {
            old.stop();
        }
        running.listeners = next;
        // Replaced and removed upstreams stop following discovery and
        // checking health now, even while requests in flight still hold them.
        let old = std::mem::replace(&mut running.upstreams, upstreams);
        for (name, up) in old {
            match running.upstreams.get(&name) {
                Some(now) if Arc::ptr_eq(now, &up) => {}
                Some(now) => now.take_over(&up),
                None => up.retire(),
            }
        }

        let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        self.telemetry.routes.retain(&names);
        self.telemetry.apply(&config.telemetry);

        let mut ups: Vec<_> = running.upstreams.values().cloned().collect();
        ups.sort_by(|a, b| a.name.cmp(&b.name));
        let mut listeners: Vec<_> = running
            .listeners
            .iter()
            .map(|(n, h)| (n.clone(), h.addr))
            .collect();
        listeners.sort();
        self.current.store(Arc::new(Current {
            config: Arc::new(config),
            text,
            upstreams: ups,
            listeners,
        }));
        Ok(())
    }

    fn spawn_listener(&self, cfg: Listener, sock: TcpListener, kind: Kind) -> ListenerHandle {
        let addr = bound(&sock, cfg.address);
        let (stop, stop_rx) = watch::channel(false);
        let name: Arc<str> = cfg.name.as_str().into();
        tracing::info!(listener = %name, %addr, protocol = ?cfg.protocol, "listening");
        let (kind, task) = match kind {
            Kind::Http(table) => {
                let routes = Arc::new(ArcSwap::from_pointee(table));
                let proxy = Arc::new(HttpProxy::new(routes.clone(), self.telemetry.clone()));
                let task = tokio::spawn(serve_http(
                    name,
                    sock,
                    proxy,
                    stop_rx,
                    self.drain,
                    cfg.client_header_timeout,
                ));
                (ListenerKind::Http(routes), task)
            }
            Kind::Tcp(up) => {
                let up = Arc::new(ArcSwap::new(up));
                let task = tokio::spawn(serve_tcp(name, sock, up.clone(), stop_rx, self.drain));
                (ListenerKind::Tcp(up), task)
            }
        };
        ListenerHandle {
            cfg,
            addr,
            kind,
            stop,
            task,
        }
    }

    /// Stops accepting, lets requests in flight finish (up to the drain
    /// deadline), then returns.
    pub async fn shutdown(&self) {
        let mut running = self.running.lock().await;
        let tasks: Vec<_> = running
            .listeners
            .drain()
            .map(|(_, h)| {
                let _ = h.stop.send(true);
                h.task
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// A listener's routing target before it is attached to a listener.
enum Kind {
    Http(RouteTable),
    Tcp(Arc<Upstream>),
}

// === impl ListenerHandle ===

impl ListenerHandle {
    /// Stops accepting; the task drains its connections in the background.
    fn stop(self) {
        tracing::info!(listener = %self.cfg.name, "listener removed by reload");
        let _ = self.stop.send(true);
    }
}

fn subscriber_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "sidecar".into());
    format!("sidecar/{host}/{}", std::process::id())
}
