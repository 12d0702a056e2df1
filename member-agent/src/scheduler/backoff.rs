//! Restart backoff: 1 s, 2 s, 4 s ... capped, and forgiven once a replica ran healthy long
//! enough.

use std::time::Duration;

/// Restart timing of crashed or unhealthy replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The first restart's delay.
    pub initial: Duration,
    /// No delay grows beyond this.
    pub max: Duration,
    /// A replica that ran healthy this long before failing starts again from `initial`.
    pub reset_after: Duration,
}

impl BackoffConfig {
    pub fn default_initial() -> Duration {
        Duration::from_secs(1)
    }
    pub fn default_max() -> Duration {
        Duration::from_secs(60)
    }
    pub fn default_reset_after() -> Duration {
        Duration::from_secs(10)
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Self::default_initial(),
            max: Self::default_max(),
            reset_after: Self::default_reset_after(),
        }
    }
}

/// One replica's position in the backoff sequence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The delay before the next restart; `ran_healthy_for` is how long the failed run was
    /// healthy (zero if never).
    pub fn next_delay(&mut self, config: &BackoffConfig, ran_healthy_for: Duration) -> Duration {
        if ran_healthy_for >= config.reset_after {
            self.failures = 0;
        }
        let factor = 1u32.checked_shl(self.failures).unwrap_or(u32::MAX);
        self.failures = self.failures.saturating_add(1);
        config.initial.saturating_mul(factor).min(config.max)
    }
}

/// `4s`, `1.5s`, `250ms`: how a delay reads in a status message.
pub fn describe(delay: Duration) -> String {
    if delay.subsec_millis() == 0 && delay >= Duration::from_secs(1) {
        format!("{}s", delay.as_secs())
    } else if delay >= Duration::from_secs(1) {
        format!("{:.1}s", delay.as_secs_f64())
    } else {
        format!("{}ms", delay.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let config = BackoffConfig::default();
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..9)
            .map(|_| backoff.next_delay(&config, Duration::ZERO).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        for _ in 0..100 {
            assert_eq!(
                backoff.next_delay(&config, Duration::ZERO),
                config.max,
                "no overflow"
            );
        }
    }

    #[test]
    fn a_healthy_run_resets_the_sequence() {
        let config = BackoffConfig::default();
        let mut backoff = Backoff::default();
        backoff.next_delay(&config, Duration::ZERO);
        backoff.next_delay(&config, Duration::from_secs(9));
        assert_eq!(
            backoff.next_delay(&config, Duration::ZERO),
            Duration::from_secs(4)
        );
        assert_eq!(
            backoff.next_delay(&config, Duration::from_secs(10)),
            Duration::from_secs(1)
        );
        assert_eq!(
            backoff.next_delay(&config, Duration::ZERO),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn delays_read_naturally() {
        assert_eq!(describe(Duration::from_secs(4)), "4s");
        assert_eq!(describe(Duration::from_millis(1500)), "1.5s");
        assert_eq!(describe(Duration::from_millis(250)), "250ms");
    }
}
