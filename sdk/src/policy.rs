//! What a consumer group's Settings reply tells a push consumer: FIFO or not, the receive batch
//! and long-polling time, and the group's retry policy (how many deliveries a message gets and
//! how long a failed one waits before the next).

use std::time::Duration;

use vela_proto::pb::rocketmq::{self as pb, retry_policy};

use crate::client::ExponentialBackoff;

/// Deliveries of one message before it is dead-lettered, until the server says (RocketMQ's
/// default: 16 retries + the first delivery).
const DEFAULT_MAX_ATTEMPTS: u32 = 17;
/// Receive batch until the server says (the proxy's default).
const DEFAULT_BATCH: u32 = 32;
/// Long polling until the server says (the proxy's maximum).
const DEFAULT_LONG_POLLING: Duration = Duration::from_secs(20);
/// Most messages one receive may ask for.
const MAX_BATCH: u32 = vela_proto::MAX_RECEIVE_BATCH;

/// A consumer group's settings as the server last sent them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ConsumerSettings {
    /// The group consumes in order per message group.
    pub(crate) fifo: bool,
    pub(crate) batch_size: u32,
    pub(crate) long_polling: Duration,
    pub(crate) retry: RetryPolicy,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        ConsumerSettings {
            fifo: false,
            batch_size: DEFAULT_BATCH,
            long_polling: DEFAULT_LONG_POLLING,
            retry: RetryPolicy::default(),
        }
    }
}

impl ConsumerSettings {
    /// Folds in a Settings reply's subscription and retry policy; absent or nonsensical fields
    /// keep what was there.
    pub(crate) fn adopt(
        &mut self,
        subscription: &pb::Subscription,
        policy: Option<&pb::RetryPolicy>,
    ) {
        if let Some(fifo) = subscription.fifo {
            self.fifo = fifo;
        }
        if let Some(batch) = subscription
            .receive_batch_size
            .and_then(|b| u32::try_from(b).ok())
            && batch > 0
        {
            self.batch_size = batch.min(MAX_BATCH);
        }
        if let Some(d) = subscription
            .long_polling_timeout
            .and_then(|d| Duration::try_from(d).ok())
            && !d.is_zero()
        {
            self.long_polling = d;
        }
        if let Some(policy) = policy {
            self.retry.adopt(policy);
        }
    }
}

/// How a group retries a message its consumer failed to process.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RetryPolicy {
    /// Deliveries in all, the first included.
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
}

/// The wait before the next delivery of a failed message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Backoff {
    Exponential(ExponentialBackoff),
    /// The wait after delivery `n` is entry `n - 1` (the last entry once past the end).
    Customized(Vec<Duration>),
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::Exponential(ExponentialBackoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(2 * 3600),
                multiplier: 2.0,
            }),
        }
    }
}

impl RetryPolicy {
    fn adopt(&mut self, policy: &pb::RetryPolicy) {
        if let Ok(attempts) = u32::try_from(policy.max_attempts)
            && attempts > 0
        {
            self.max_attempts = attempts;
        }
        match &policy.strategy {
            Some(retry_policy::Strategy::ExponentialBackoff(e)) => {
                self.backoff = Backoff::Exponential(ExponentialBackoff::from_proto(e));
            }
            Some(retry_policy::Strategy::CustomizedBackoff(c)) => {
                let table: Vec<Duration> = c
                    .next
                    .iter()
                    .filter_map(|d| Duration::try_from(*d).ok())
                    .collect();
                if !table.is_empty() {
                    self.backoff = Backoff::Customized(table);
                }
            }
            None => {}
        }
    }

    /// How long a message that failed on delivery `attempt` (1-based) waits before the next.
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let attempt = attempt.max(1);
        match &self.backoff {
            Backoff::Exponential(e) => e.delay(attempt),
            Backoff::Customized(table) => {
                let index = usize::try_from(attempt - 1)
                    .unwrap_or(usize::MAX)
                    .min(table.len().saturating_sub(1));
                table.get(index).copied().unwrap_or_default()
            }
        }
    }

    /// Whether delivery `attempt` was the last the group allows.
    pub(crate) fn exhausted(&self, attempt: u32) -> bool {
        attempt >= self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::proto_duration;

    fn secs(s: u64) -> Option<prost_types::Duration> {
        proto_duration(Duration::from_secs(s))
    }

    #[test]
    fn adopts_the_subscription_and_a_customized_table() {
        let mut s = ConsumerSettings::default();
        s.adopt(
            &pb::Subscription {
                fifo: Some(true),
                receive_batch_size: Some(64),
                long_polling_timeout: secs(15),
                ..Default::default()
            },
            Some(&pb::RetryPolicy {
                max_attempts: 3,
                strategy: Some(retry_policy::Strategy::CustomizedBackoff(
                    pb::CustomizedBackoff {
                        next: vec![secs(1).unwrap(), secs(5).unwrap()],
                    },
                )),
            }),
        );
        assert!(s.fifo);
        assert_eq!(s.batch_size, 32, "capped at what one receive may ask");
        assert_eq!(s.long_polling, Duration::from_secs(15));
        assert_eq!(s.retry.max_attempts, 3);
        assert_eq!(s.retry.delay(0), Duration::from_secs(1));
        assert_eq!(s.retry.delay(1), Duration::from_secs(1));
        assert_eq!(s.retry.delay(2), Duration::from_secs(5));
        assert_eq!(
            s.retry.delay(9),
            Duration::from_secs(5),
            "the last entry past the end"
        );
        assert!(!s.retry.exhausted(2) && s.retry.exhausted(3) && s.retry.exhausted(4));

        // Unset and zero fields keep what was adopted; an empty table keeps the old one.
        s.adopt(
            &pb::Subscription {
                receive_batch_size: Some(0),
                long_polling_timeout: secs(0),
                ..Default::default()
            },
            Some(&pb::RetryPolicy {
                max_attempts: 0,
                strategy: Some(retry_policy::Strategy::CustomizedBackoff(
                    pb::CustomizedBackoff { next: vec![] },
                )),
            }),
        );
        assert!(s.fifo);
        assert_eq!(s.batch_size, 32);
        assert_eq!(s.long_polling, Duration::from_secs(15));
        assert_eq!(s.retry.max_attempts, 3);
        assert_eq!(s.retry.delay(2), Duration::from_secs(5));
    }

    #[test]
    fn an_exponential_policy_grows_and_caps() {
        let mut s = ConsumerSettings::default();
        s.adopt(
            &pb::Subscription::default(),
            Some(&pb::RetryPolicy {
                max_attempts: 5,
                strategy: Some(retry_policy::Strategy::ExponentialBackoff(
                    pb::ExponentialBackoff {
                        initial: secs(2),
                        max: secs(10),
                        multiplier: 2.0,
                    },
                )),
            }),
        );
        assert_eq!(s.retry.delay(1), Duration::from_secs(2));
        assert_eq!(s.retry.delay(3), Duration::from_secs(8));
        assert_eq!(s.retry.delay(4), Duration::from_secs(10));
        assert_eq!(s.batch_size, 32);
        assert!(!s.fifo);
    }
}
