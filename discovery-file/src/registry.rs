//! The file as a [`Registry`]: one loader re-reads the file when it changes
//! and every watched service follows the loader's latest result.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use discovery_core::{Answer, ListError, Registry, RegistryError, RegistryMetrics, Target};
use futures_util::{StreamExt, stream::BoxStream};
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::WatchStream;

use crate::file::{Services, parse};

/// The latest read of the file: the services, or why the file was refused.
type Loaded = Arc<Result<Arc<Services>, String>>;

/// A registry backed by one YAML file.
pub struct FileRegistry {
    rx: watch::Receiver<Loaded>,
}

// === impl FileRegistry ===

impl FileRegistry {
    /// Starts watching `path`: re-read on every change notification, and every
    /// `poll` in case notifications are not available (network filesystems).
    pub fn start(path: PathBuf, poll: Duration) -> Self {
        Self::start_with_metrics(path, poll, RegistryMetrics::new())
    }

    /// [`Self::start`], timing each read of the file in `metrics` (operation
    /// `read_file`).
    pub fn start_with_metrics(path: PathBuf, poll: Duration, metrics: RegistryMetrics) -> Self {
        let first = load(&path, &metrics);
        if let Err(e) = first.as_ref() {
            tracing::error!(path = %path.display(), error = %e, "endpoint file refused");
        }
        let (tx, rx) = watch::channel(first);
        tokio::spawn(reload_loop(path, poll, tx, metrics));
        Self { rx }
    }
}

impl Registry for FileRegistry {
    fn watch(&self, target: &Target) -> BoxStream<'static, Result<Answer, RegistryError>> {
        let service = target.service.clone();
        WatchStream::new(self.rx.clone())
            .map(move |loaded| match loaded.as_ref() {
                Ok(services) => Ok(match services.get(&service) {
                    Some(endpoints) => Answer::Found(endpoints.clone()),
                    None => Answer::NotFound,
                }),
                Err(e) => Err(RegistryError::new(e.clone())),
            })
            .boxed()
    }

    async fn list_services(
        &self,
        args: &BTreeMap<String, String>,
    ) -> Result<Vec<String>, ListError> {
        if let Some(k) = args.keys().next() {
            return Err(discovery_core::InvalidTarget(format!("unknown argument {k:?}")).into());
        }
        match self.rx.borrow().as_ref() {
            Ok(s) => Ok(s.keys().cloned().collect()),
            Err(e) => Err(RegistryError::new(e.clone()).into()),
        }
    }
}

fn load(path: &Path, metrics: &RegistryMetrics) -> Loaded {
    let timer = metrics.start("read_file");
    let result = match std::fs::read_to_string(path) {
        Ok(text) => parse(&text)
            .map(Arc::new)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    };
    timer.finish(result.is_ok());
    Arc::new(result)
}

/// A cheap fingerprint to notice changes when polling.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

async fn reload_loop(
    path: PathBuf,
    poll: Duration,
    tx: watch::Sender<Loaded>,
    metrics: RegistryMetrics,
) {
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let name = path.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        // Reads (ours included) are access events: only changes matter, or
        // every reload would trigger the next.
        if let Ok(ev) = ev
            && !ev.kind.is_access()
            && ev
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
        {
            let _ = ev_tx.send(());
        }
    });
    // Watch the directory: editors and `mv` replace the file, which ends a
    // watch on the file itself.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match watcher.as_mut() {
        Ok(w) => {
            if let Err(e) = w.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory; polling only");
            }
        }
        Err(e) => tracing::warn!(error = %e, "file notifications unavailable; polling only"),
    }
    let mut last = stamp(&path);
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = ev_rx.recv() => {
                if ev.is_none() {
                    break;
                }
                // Let a burst of events from one save settle, then read once.
                tokio::time::sleep(Duration::from_millis(5)).await;
                while ev_rx.try_recv().is_ok() {}
            }
            _ = ticker.tick() => {
                let now = stamp(&path);
                if now == last {
                    continue;
                }
            }
        }
        last = stamp(&path);
        let loaded = load(&path, &metrics);
        match loaded.as_ref() {
            Ok(s) => {
                tracing::info!(path = %path.display(), services = s.len(), "endpoint file loaded")
            }
            Err(e) => {
                tracing::error!(error = %e, "endpoint file refused; the last good file stays in force")
            }
        }
        tx.send_replace(loaded);
    }
    drop(watcher);
}
