//! The settings a [`ReconnectLayer`] carries to every service it builds,
//! and the rules they must meet.

use std::{borrow::Cow, fmt, sync::Arc, time::Duration};

use crate::{classify::Classifier, error::ConfigError, Backoff, ReconnectLayer};

/// Settings shared by every service a layer builds.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) name: Option<Cow<'static, str>>,
    pub(crate) connect_timeout: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) wait_for_ready: bool,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) classifier: Option<Arc<Classifier>>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) wait_timeout: Option<Duration>,
    pub(crate) max_connection_age: Option<Duration>,
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::ConnectTimeoutNotPositive);
        }
        if self.max_attempts == Some(0) {
            return Err(ConfigError::MaxAttemptsNotPositive);
        }
        if self.idle_timeout.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::IdleTimeoutNotPositive);
        }
        if self.wait_timeout.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::WaitTimeoutNotPositive);
        }
        if self.max_connection_age.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::MaxConnectionAgeNotPositive);
        }
        self.backoff.validate()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: None,
            connect_timeout: ReconnectLayer::DEFAULT_CONNECT_TIMEOUT,
            backoff: Backoff::default(),
            wait_for_ready: false,
            max_attempts: None,
            classifier: None,
            idle_timeout: None,
            wait_timeout: None,
            max_connection_age: None,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("name", &self.name)
            .field("connect_timeout", &self.connect_timeout)
            .field("backoff", &self.backoff)
            .field("wait_for_ready", &self.wait_for_ready)
            .field("max_attempts", &self.max_attempts)
            .field("disconnect_on", &self.classifier.is_some())
            .field("idle_timeout", &self.idle_timeout)
            .field("wait_timeout", &self.wait_timeout)
            .field("max_connection_age", &self.max_connection_age)
            .finish()
    }
}
