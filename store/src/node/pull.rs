//! PullMessage: reading one queue from an offset without touching consumer state. The leader
//! answers from its applied state (after a read barrier, so a deposed leader does not serve
//! a stale view), reads the records from the log (or the tier), and long-polls when the queue
//! holds nothing past the offset yet.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use vela_proto::domain::{GroupName, MAX_RECEIVE_BATCH, MessageFilter};
use vela_proto::store_api::{PullRequest, Pulled, PulledMessage, StoreError};

use super::Store;
use crate::command::{RecordRef, TagSubscription};
use crate::shard::Shard;

/// Index entries one pull looks at (matching or not) before it answers with what it found.
const PULL_SCAN: u64 = 65_536;

/// Each waiting pull registers for wakeups under a key of its own: a wake releases one waiter
/// per key, and pulls do not take part in the hand-on between a group's receivers.
static NEXT_WAITER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// [`StoreApi::pull`](vela_proto::StoreApi::pull) on the shard `req` names, which this
    /// node must lead.
    pub async fn pull_shard(&self, req: &PullRequest) -> Result<Pulled, StoreError> {
        if req.max_messages == 0 || req.max_messages > MAX_RECEIVE_BATCH {
            return Err(StoreError::Invalid(format!(
                "pull of {} messages is outside 1..={MAX_RECEIVE_BATCH}",
                req.max_messages
            )));
        }
        let shard = self.led(req.shard)?;
        self.read_barrier(&shard).await?;
        let waiter = GroupName::new(format!(
            "vela-pull-{}",
            NEXT_WAITER.fetch_add(1, Ordering::Relaxed)
        ))
        .map_err(|e| StoreError::Internal(e.to_string()))?;
        let tags = match &req.filter {
            MessageFilter::Tag(tags) => TagSubscription::from(tags),
            MessageFilter::Sql(_) => TagSubscription::All,
        };
        let deadline = Instant::now() + req.wait.min(Duration::from_secs(3600));
        let _registered = Forget {
            shard: &shard,
            topic: &req.topic,
            key: &waiter,
        };
        let mut from = req.offset;
        loop {
            let notify = shard.shared.wakeups.subscribe(&req.topic, &waiter);
            let mut woken = std::pin::pin!(notify.notified());
            woken.as_mut().enable();
            let window = shard.shared.applied.read().state.pull_window(
                &req.topic,
                req.queue_id,
                from,
                &tags,
                req.max_messages as usize,
                PULL_SCAN,
            );
            if req.offset > window.max_offset {
                return Err(StoreError::Invalid(format!(
                    "offset {} is past the end of {}/{} ({})",
                    req.offset, req.topic, req.queue_id, window.max_offset
                )));
            }
            let messages = read(&shard, &window.entries, &req.filter).await?;
            let scanned = window.scanned_to > from.max(window.min_offset);
            if !messages.is_empty() || Instant::now() >= deadline {
                return Ok(Pulled {
                    messages,
                    next_offset: window.scanned_to.max(from),
                    min_offset: window.min_offset,
                    max_offset: window.max_offset,
                });
            }
            if scanned {
                // Looked at messages that did not match: go on from there at once.
                from = window.scanned_to;
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep_until(deadline) => {}
                () = self.cancel.cancelled() => {
                    return Err(StoreError::Unavailable("store is shutting down".into()));
                }
            }
        }
    }
}

/// Removes a pull's wakeup key when the pull ends, however it ends.
struct Forget<'a> {
    shard: &'a Shard,
    topic: &'a vela_proto::domain::TopicName,
    key: &'a GroupName,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.shard.shared.wakeups.forget(self.topic, self.key);
    }
}

/// The records behind `entries`, as pulled messages; an SQL92 filter is evaluated on them. A
/// record retention removed meanwhile is left out.
async fn read(
    shard: &Shard,
    entries: &[(u64, RecordRef, i64)],
    filter: &MessageFilter,
) -> Result<Vec<PulledMessage>, StoreError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let refs: Vec<RecordRef> = entries.iter().map(|(_, r, _)| *r).collect();
    let records = shard.read_records(&refs).await.map_err(StoreError::from)?;
    Ok(entries
        .iter()
        .zip(records)
        .filter_map(|(&(offset, _, store_timestamp_ms), record)| {
            let message = record?;
            let keep = match filter {
                MessageFilter::Sql(sql) => sql.matches(message.tag.as_deref(), &message.properties),
                MessageFilter::Tag(_) => true,
            };
            keep.then_some(PulledMessage {
                offset,
                store_timestamp_ms,
                message,
            })
        })
        .collect())
}
