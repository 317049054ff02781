//! The planner: turns appends, truncations, purges, votes and committed ids into writer
//! operations, in order, while keeping the in-memory index in step. It runs in the caller's task
//! under the log's lock; encoding happens before the lock is taken.

use std::sync::Arc;

use bytes::Bytes;
use openraft::alias::{LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use tokio::sync::oneshot;

use super::{LogIndex, SegmentLogStore, SegmentMeta, now_ms};
use crate::LogError;
use crate::codec::{EncodeError, MAX_RECORD_BODY, SEGMENT_HEADER_LEN, encode_footer};
use crate::entry::{LogTypes, StoredLogId, StoredVote, encode_entry};
use crate::segment::SegmentFile;
use crate::writer::WriteOp;

impl<C: LogTypes> LogIndex<C> {
    /// Seals the active segment: writes its footer (from the offsets in memory, which stay
    /// pinned until the writer has written it) and fsyncs it.
    fn seal_last(&mut self, seq: u64, ops: &mut Vec<WriteOp<C>>) {
        let Some(segment) = self.segments.last_mut() else {
            return;
        };
        if segment.sealed {
            return;
        }
        let Some(offsets) = &segment.offsets else {
            return;
        };
        let mut footer = Vec::with_capacity(offsets.len() * 4 + 64);
        encode_footer(
            offsets,
            segment.records_end,
            segment.first_append_ms,
            segment.last_append_ms,
            &mut footer,
        );
        let trailer_at = footer.len() - crate::codec::FOOTER_TRAILER_LEN;
        let file_len = segment.records_end + footer.len() as u64;
        match crate::codec::decode_footer_trailer(&footer[trailer_at..], file_len) {
            Ok(trailer) => segment.footer = Some(trailer),
            Err(e) => {
                // Cannot happen for a footer just encoded; sealing without one keeps the
                // offsets in memory instead.
                tracing::error!(segment = %segment.file.path.display(), error = %e, "footer does not verify; keeping offsets in memory");
                segment.sealed = true;
                return;
            }
        }
        segment.sealed = true;
        // Pinned until a later append is written, not this one: the writer may publish this
        // append's sequence number after writing its records but before the seal that follows
        // them (a race the power-loss sweep found under load), whereas anything numbered after
        // it is queued behind the seal.
        if segment.pinned_until.replace(seq + 1).is_none() {
            self.pinned += 1;
        }
        ops.push(WriteOp::Seal {
            segment: segment.file.clone(),
            footer: Bytes::from(footer),
            at: segment.records_end,
        });
    }
}

/// The run of an append's bytes going to one segment: (segment, file offset, start in the
/// encoded bytes).
type Chunk = Option<(Arc<SegmentFile>, u64, usize)>;

/// Queues the write of the pending run, which ends at `end` of the encoded bytes.
fn flush_chunk<C: LogTypes>(
    chunk: &mut Chunk,
    bytes: &Bytes,
    end: usize,
    seq: u64,
    ops: &mut Vec<WriteOp<C>>,
) {
    if let Some((segment, offset, start)) = chunk.take() {
        ops.push(WriteOp::Append {
            segment,
            offset,
            bytes: bytes.slice(start..end),
            seq,
        });
    }
}

impl<C: LogTypes> SegmentLogStore<C> {
    /// Plans an append: encodes outside the lock, then under it assigns every record its segment
    /// and offset, caches the entries (readable from now on) and queues the writes in order.
    pub(crate) fn append_entries<I>(
        &self,
        entries: I,
        callback: Option<IOFlushed<C>>,
    ) -> Result<(), LogError>
    where
        I: IntoIterator<Item = C::Entry>,
    {
        self.plan_append(entries, callback, false)
    }

    /// [`append_entries`](Self::append_entries); `restoring` lets an empty log take entries at
    /// or below openraft's purge point (history restored under a snapshot, see
    /// [`SegmentLogStore::restore_history`]).
    fn plan_append<I>(
        &self,
        entries: I,
        callback: Option<IOFlushed<C>>,
        restoring: bool,
    ) -> Result<(), LogError>
    where
        I: IntoIterator<Item = C::Entry>,
    {
        let mut buf = Vec::new();
        let mut records: Vec<(C::Entry, usize)> = Vec::new();
        for entry in entries {
            if let Some((prev, _)) = records.last()
                && entry.index() != prev.index() + 1
            {
                return Err(LogError::NonContiguous {
                    expected: prev.index() + 1,
                    found: entry.index(),
                });
            }
            let len = encode_entry::<C>(&entry, &mut buf).map_err(|e| match e {
                EncodeError::Payload(reason) => LogError::Encode(reason),
                EncodeError::TooLarge(len) => LogError::RecordTooLarge {
                    len,
                    max: MAX_RECORD_BODY,
                },
            })?;
            records.push((entry, len));
        }
        let bytes = Bytes::from(buf);

        let mut guard = self.inner.state.write();
        let st = &mut *guard;
        self.inner.status.check()?;
        let tx = st.sender()?;
        let Some((first, _)) = records.first() else {
            if let Some(callback) = callback {
                tx.send(WriteOp::Flushed(callback))
                    .map_err(|_| LogError::Closed)?;
            }
            return Ok(());
        };
        match (st.last_index(), &st.last_purged) {
            (Some(last), _) if first.index() != last + 1 => {
                return Err(LogError::NonContiguous {
                    expected: last + 1,
                    found: first.index(),
                });
            }
            (None, Some(purged)) if first.index() <= purged.index && !restoring => {
                return Err(LogError::BeforePurged {
                    index: first.index(),
                    purged: purged.index,
                });
            }
            _ => {}
        }

        let seq = st.next_seq;
        st.next_seq += 1;
        let now = now_ms();
        let segment_bytes = self.inner.cfg.segment_bytes;
        let mut ops = Vec::with_capacity(4);
        let mut chunk: Chunk = None;
        let mut pos = 0usize;
        for (entry, len) in records {
            let index = entry.index();
            // A full segment left unsealed (a crash before its footer) is sealed first.
            if st
                .segments
                .last()
                .is_some_and(|s| !s.sealed && s.records_end >= segment_bytes)
            {
                flush_chunk(&mut chunk, &bytes, pos, seq, &mut ops);
                st.seal_last(seq, &mut ops);
            }
            if st.segments.last().is_none_or(|s| s.sealed) {
                let file = Arc::new(SegmentFile::planned(&self.inner.cfg.dir, index));
                ops.push(WriteOp::CreateSegment {
                    segment: file.clone(),
                    created_ms: now,
                });
                st.segments.push(SegmentMeta {
                    file,
                    count: 0,
                    records_end: SEGMENT_HEADER_LEN as u64,
                    offsets: Some(Vec::new()),
                    pinned_until: None,
                    footer: None,
                    sealed: false,
                    damage: None,
                    first_append_ms: now,
                    last_append_ms: now,
                });
            }
            let Some(segment) = st.segments.last_mut() else {
                return Err(LogError::Closed);
            };
            chunk.get_or_insert_with(|| (segment.file.clone(), segment.records_end, pos));
            let offset = u32::try_from(segment.records_end).map_err(|_| {
                LogError::Config(format!(
                    "segment {} grew past 4 GiB",
                    segment.file.path.display()
                ))
            })?;
            segment.offsets.get_or_insert_with(Vec::new).push(offset);
            segment.records_end += len as u64;
            segment.count += 1;
            segment.last_append_ms = now;
            pos += len;
            st.last_log_id = Some(entry.log_id());
            let cached = C::cached_size(&entry, len);
            st.cache.push(index, Arc::new(entry), cached, seq);
            let full = st
                .segments
                .last()
                .is_some_and(|s| s.records_end >= segment_bytes);
            if full {
                flush_chunk(&mut chunk, &bytes, pos, seq, &mut ops);
                st.seal_last(seq, &mut ops);
            }
        }
        flush_chunk(&mut chunk, &bytes, pos, seq, &mut ops);
        if let Some(callback) = callback {
            ops.push(WriteOp::Flushed(callback));
        }
        let written = self.inner.status.written_seq();
        st.cache.evict(written);
        st.unpin_offsets(written);
        for op in ops {
            tx.send(op).map_err(|_| LogError::Closed)?;
        }
        Ok(())
    }

    /// Replaces the whole log with `entries` (contiguous, oldest first) and waits until they are
    /// durable. For a replica that installs a snapshot from another member: the entries are the
    /// retained history below and up to the snapshot, which the state machine reads message
    /// bodies from (ADR 0014). openraft's purge point is left as it is (openraft purges up to
    /// the snapshot itself, before or after this; purge is logical, the entries stay).
    pub async fn restore_history(&self, entries: Vec<C::Entry>) -> Result<(), LogError> {
        self.truncate_after(None).await?;
        if entries.is_empty() {
            return Ok(());
        }
        self.plan_append(entries, None, true)?;
        self.sync().await
    }

    /// Appends more restored history after [`restore_history`](Self::restore_history) (the
    /// history arrives in batches); contiguous with what the log holds, waits until durable.
    pub async fn restore_more_history(&self, entries: Vec<C::Entry>) -> Result<(), LogError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.plan_append(entries, None, true)?;
        self.sync().await
    }

    /// Removes every entry after `last_log_id` (all of them for `None`) and waits until the files
    /// are cut. A sealed segment that is cut becomes the active segment again, its footer cut
    /// off with the records.
    pub(crate) async fn truncate_after(
        &self,
        last_log_id: Option<LogIdOf<C>>,
    ) -> Result<(), LogError> {
        let keep_upto = last_log_id.as_ref().map(|id| id.index);
        let (done, rx) = oneshot::channel();
        {
            let mut guard = self.inner.state.write();
            let st = &mut *guard;
            self.inner.status.check()?;
            let tx = st.sender()?;
            let Some(last) = st.last_index() else {
                return Ok(());
            };
            if keep_upto.is_some_and(|k| k >= last) {
                return Ok(());
            }
            let mut remove = Vec::new();
            while st
                .segments
                .last()
                .is_some_and(|s| keep_upto.is_none_or(|k| s.first_index() > k))
            {
                if let Some(segment) = st.segments.pop() {
                    self.inner.footers.forget(segment.first_index());
                    remove.push(segment.file);
                }
            }
            let mut cut = None;
            if let (Some(segment), Some(k)) = (st.segments.last_mut(), keep_upto) {
                let keep = (k - segment.first_index() + 1) as usize;
                if (keep as u64) < segment.count {
                    let mut offsets = segment.load_offsets()?;
                    let new_end = u64::from(offsets[keep]);
                    offsets.truncate(keep);
                    self.inner.footers.forget(segment.first_index());
                    segment.offsets = Some(offsets);
                    segment.pinned_until = None;
                    segment.footer = None;
                    segment.sealed = false;
                    segment.count = keep as u64;
                    segment.records_end = new_end;
                    segment.last_append_ms = now_ms();
                    cut = Some((segment.file.clone(), new_end));
                }
            }
            st.last_log_id = if st.segments.is_empty() {
                None
            } else {
                last_log_id
            };
            st.cache.truncate_after(keep_upto);
            st.truncations += 1;
            st.recount_pinned();
            tx.send(WriteOp::Truncate { remove, cut, done })
                .map_err(|_| LogError::Closed)?;
        }
        rx.await.map_err(|_| LogError::Closed)?
    }

    /// openraft's purge: persists `log_id` as the purge point. It deletes nothing (purge is a
    /// logical floor: the files hold what retention keeps), except with `compact_on_purge`,
    /// where it then compacts up to the purge point, and when the purge point passes the end of
    /// the files (a snapshot replaced the whole log), where every segment goes.
    pub(crate) async fn purge_upto(&self, log_id: LogIdOf<C>) -> Result<(), LogError> {
        let purged_state = postcard::to_allocvec(&Some(StoredLogId::of(&log_id)))?;
        let (done, rx) = oneshot::channel();
        let compact = {
            let mut guard = self.inner.state.write();
            let st = &mut *guard;
            self.inner.status.check()?;
            let tx = st.sender()?;
            if st
                .last_purged
                .as_ref()
                .is_some_and(|p| p.index >= log_id.index)
            {
                return Ok(());
            }
            let upto = log_id.index;
            let mut remove = Vec::new();
            // Only a purge point beyond the last entry means the log was replaced (a snapshot
            // from elsewhere); purging up to the last entry keeps it.
            if st.last_index().is_some_and(|last| last < upto) {
                for segment in st.segments.drain(..) {
                    self.inner.footers.forget(segment.first_index());
                    remove.push(segment.file);
                }
                st.last_log_id = None;
                st.cache.purge_upto(upto);
                // Readers (and the cache of cold reads) must not trust anything read before.
                st.truncations += 1;
                st.recount_pinned();
            }
            st.last_purged = Some(log_id);
            tx.send(WriteOp::Purge {
                purged_state,
                remove,
                done,
            })
            .map_err(|_| LogError::Closed)?;
            self.inner.cfg.compact_on_purge.then_some(upto + 1)
        };
        rx.await.map_err(|_| LogError::Closed)??;
        if let Some(below) = compact {
            self.compact_below(below).await?;
        }
        Ok(())
    }

    pub(crate) async fn save_vote(&self, vote: &VoteOf<C>) -> Result<(), LogError> {
        let vote_state = postcard::to_allocvec(&Some(StoredVote::of::<C>(vote)))?;
        let (done, rx) = oneshot::channel();
        {
            let st = self.inner.state.read();
            self.inner.status.check()?;
            st.sender()?
                .send(WriteOp::SaveVote { vote_state, done })
                .map_err(|_| LogError::Closed)?;
        }
        rx.await.map_err(|_| LogError::Closed)??;
        self.inner.state.write().vote = Some(vote.clone());
        Ok(())
    }

    pub(crate) fn save_committed(&self, committed: Option<LogIdOf<C>>) -> Result<(), LogError> {
        let committed_state = postcard::to_allocvec(&committed.as_ref().map(StoredLogId::of))?;
        let mut st = self.inner.state.write();
        self.inner.status.check()?;
        st.sender()?
            .send(WriteOp::SaveCommitted { committed_state })
            .map_err(|_| LogError::Closed)?;
        st.committed = committed;
        Ok(())
    }

    pub(crate) fn read_committed(&self) -> Option<LogIdOf<C>> {
        self.inner.state.read().committed
    }

    /// `(last purged, last log id)`: openraft's log state. Without entries the last log id is the
    /// last purged one.
    pub(crate) fn log_state(&self) -> (Option<LogIdOf<C>>, Option<LogIdOf<C>>) {
        let st = self.inner.state.read();
        let last = st.last_log_id.or(st.last_purged);
        (st.last_purged, last)
    }
}
