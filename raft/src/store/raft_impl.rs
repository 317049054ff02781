//! openraft's storage traits on top of the store: `RaftLogStorage` for `SegmentLogStore`,
//! `RaftLogReader` for `LogHandle`. Kept apart so an openraft alpha bump touches one file.

use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;

use openraft::OptionalSend;
use openraft::alias::{LogIdOf, VoteOf};
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};

use crate::LogError;

use super::{LogHandle, SegmentLogStore};
use crate::entry::LogTypes;

impl<C> RaftLogReader<C> for LogHandle<C>
where
    C: LogTypes,
{
    /// openraft's view hides what it purged (the store's own reads do not).
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, io::Error> {
        self.entries_after_purge(range).map_err(|err| {
            let damage = match &err {
                LogError::Corrupt {
                    path,
                    offset,
                    reason,
                } => Some((path.clone(), *offset, reason.clone())),
                LogError::Gap {
                    path,
                    expected,
                    found,
                } => Some((
                    path.clone(),
                    0,
                    format!("expected first index {expected}, found {found}"),
                )),
                _ => None,
            };
            if let Some(damage) = damage {
                self.inner.damage_seen.lock().get_or_insert(damage);
            }
            io::Error::from(err)
        })
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        Ok(self.vote())
    }
}

impl<C> RaftLogStorage<C> for SegmentLogStore<C>
where
    C: LogTypes,
{
    type LogReader = LogHandle<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let (last_purged_log_id, last_log_id) = self.log_state();
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        Ok(SegmentLogStore::save_vote(self, vote).await?)
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        Ok(SegmentLogStore::save_committed(self, committed)?)
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        Ok(SegmentLogStore::read_committed(self))
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        Ok(self.append_entries(entries, Some(callback))?)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        Ok(SegmentLogStore::truncate_after(self, last_log_id).await?)
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        Ok(self.purge_upto(log_id).await?)
    }
}
