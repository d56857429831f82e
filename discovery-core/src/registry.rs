//! The one trait an adapter implements: watch a service in its registry.

use std::{collections::BTreeMap, fmt, future::Future};

use futures_util::stream::BoxStream;

use crate::Answer;

/// What a subscriber watches: a service name and registry-specific arguments.
///
/// Two subscribers with equal targets share one registry watch.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// The service name as the registry knows it.
    pub service: String,
    /// Registry-specific arguments (namespace, tag, datacenter...).
    pub args: BTreeMap<String, String>,
}

/// A registry call that failed; the watch turns stale and keeps its set.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RegistryError {
    message: String,
}

/// A watch target the registry cannot serve (unknown argument, bad value).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidTarget(pub String);

/// A service registry, as an adapter sees it.
///
/// `watch` returns a stream of full answers for one target: each item is the
/// whole current endpoint set (or "not found"), or an error when the registry
/// could not be read. The stream paces itself: it yields when the registry has
/// something new or fails, and waits (with [`Backoff`](crate::Backoff)) before
/// retrying after an error. If the stream ends, the runtime starts a new one
/// after a back-off. The runtime drops the stream when the last subscriber of
/// the target leaves.
pub trait Registry: Send + Sync + 'static {
    /// Checks a target before a watch is opened. The default accepts targets
    /// without arguments only.
    fn validate(&self, target: &Target) -> Result<(), InvalidTarget> {
        match target.args.keys().next() {
            None => Ok(()),
            Some(k) => Err(InvalidTarget(format!("unknown watch argument {k:?}"))),
        }
    }

    /// Watches one target; see the trait's documentation.
    fn watch(&self, target: &Target) -> BoxStream<'static, Result<Answer, RegistryError>>;

    /// Lists the services the registry knows. The default answers that the
    /// registry cannot list services.
    fn list_services(
        &self,
        args: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<Vec<String>, ListError>> + Send {
        let _ = args;
        async { Err(ListError::Unsupported) }
    }
}

/// Why `ListServices` failed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The registry has no way to list services.
    #[error("this registry cannot list services")]
    Unsupported,
    /// The arguments were refused.
    #[error(transparent)]
    InvalidArgs(#[from] InvalidTarget),
    /// The registry call failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

// === impl Target ===

impl Target {
    /// A target without arguments.
    pub fn service(name: impl Into<String>) -> Self {
        Self {
            service: name.into(),
            args: BTreeMap::new(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.service)?;
        if !self.args.is_empty() {
            f.write_str("{")?;
            for (i, (k, v)) in self.args.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{k}={v}")?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

// === impl RegistryError ===

impl RegistryError {
    /// An error with this message; it should name the registry call and what
    /// went wrong.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}
