//! What the endpoint's polling thread and its workers share: the registry and the settings.

use super::config::EndpointConfig;
use crate::registry::Registry;

/// What the polling thread and the workers share.
pub(super) struct State {
    pub(super) registry: Registry,
    pub(super) config: EndpointConfig,
}
