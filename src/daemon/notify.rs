//! Placeholder until the systemd notify module lands.
use std::time::Duration;
pub fn ready() {}
pub fn stopping() {}
pub fn watchdog_interval() -> Option<Duration> {
    None
}
pub fn spawn_watchdog(_interval: Duration, _healthy: impl Fn() -> bool + Send + 'static) {}
