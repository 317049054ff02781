//! The thread that writes logs, one per node (ADR 0009). A node's shards each plan their writes
//! under their own lock, as before, and hand them to this one thread; it executes every log's
//! operations in the order that log planned them (one channel, first in first out), keeps taking
//! queued work while there is any, and when the queue runs dry, or all logs together hold
//! [`MAX_UNFLUSHED_BYTES`] unflushed, flushes every log that has something to flush: one
//! `fdatasync` per dirty segment, back to back, each log's callbacks fired right after its own
//! fsyncs. A callback never fires before the fsync that covered its entry, whichever log it
//! belongs to. Barriers (truncation, purge, vote, sync) flush only their own log, and a failed
//! write or fsync poisons only the log it happened in.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use openraft::RaftTypeConfig;
use parking_lot::Mutex;

use super::{MAX_UNFLUSHED_BYTES, WriteOp, Writer, reject};
use crate::LogError;

enum Routed<C: RaftTypeConfig> {
    /// A log opened on this thread.
    Attach { id: u64, writer: Box<Writer<C>> },
    /// One of a log's operations, in the order the log planned them.
    Op { id: u64, op: WriteOp<C> },
    /// A log dropped without a shutdown: flush and close it, then say so.
    Detach { id: u64, done: mpsc::SyncSender<()> },
}

/// A log writer thread that any number of logs share ([`SegmentLogStore::open_on`]). Clones share
/// the thread; it ends once every clone and every log on it is gone.
///
/// [`SegmentLogStore::open_on`]: crate::SegmentLogStore::open_on
pub struct LogWriter<C: RaftTypeConfig> {
    shared: Arc<Shared<C>>,
}

impl<C: RaftTypeConfig> Clone for LogWriter<C> {
    fn clone(&self) -> Self {
        LogWriter {
            shared: self.shared.clone(),
        }
    }
}

impl<C: RaftTypeConfig> std::fmt::Debug for LogWriter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("thread", &self.shared.thread_id)
            .finish_non_exhaustive()
    }
}

struct Shared<C: RaftTypeConfig> {
    /// `None` only while dropping, so the thread sees the channel close before it is joined.
    tx: Mutex<Option<Sender<Routed<C>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: ThreadId,
    next_id: AtomicU64,
}

impl<C: RaftTypeConfig> Drop for Shared<C> {
    fn drop(&mut self) {
        self.tx.get_mut().take();
        if let Some(thread) = self.thread.get_mut().take()
            && std::thread::current().id() != self.thread_id
            && thread.join().is_err()
        {
            tracing::error!("log writer thread panicked");
        }
    }
}

impl<C: RaftTypeConfig> LogWriter<C> {
    /// Starts a writer thread called `name`.
    pub fn spawn(name: &str) -> Result<Self, LogError> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(rx))
            .map_err(|e| LogError::io("spawning log writer thread", Path::new(name), e))?;
        Ok(LogWriter {
            shared: Arc::new(Shared {
                tx: Mutex::new(Some(tx)),
                thread_id: thread.thread().id(),
                thread: Mutex::new(Some(thread)),
                next_id: AtomicU64::new(0),
            }),
        })
    }

    /// Hands one log's writer to the thread; the link is how the log reaches it from now on.
    pub(crate) fn attach(&self, writer: Writer<C>) -> Result<WriterLink<C>, LogError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let tx = self.shared.tx.lock().clone().ok_or(LogError::Closed)?;
        tx.send(Routed::Attach {
            id,
            writer: Box::new(writer),
        })
        .map_err(|_| LogError::Closed)?;
        Ok(WriterLink {
            id,
            tx,
            thread: self.shared.thread_id,
        })
    }
}

/// One log's way to its writer thread.
pub(crate) struct WriterLink<C: RaftTypeConfig> {
    id: u64,
    tx: Sender<Routed<C>>,
    thread: ThreadId,
}

impl<C: RaftTypeConfig> Clone for WriterLink<C> {
    fn clone(&self) -> Self {
        WriterLink {
            id: self.id,
            tx: self.tx.clone(),
            thread: self.thread,
        }
    }
}

impl<C: RaftTypeConfig> WriterLink<C> {
    /// Queues one operation of this log; `Closed` once the thread is gone.
    pub(crate) fn send(&self, op: WriteOp<C>) -> Result<(), LogError> {
        self.tx
            .send(Routed::Op { id: self.id, op })
            .map_err(|_| LogError::Closed)
    }

    /// Flushes and closes this log's writer and waits until it has (not when called on the
    /// writer thread itself, which cannot wait for itself). For a log dropped without a
    /// shutdown, so its directory is unlocked only after its last write.
    pub(crate) fn detach_blocking(self) {
        let (done, closed) = mpsc::sync_channel(1);
        let sent = self.tx.send(Routed::Detach { id: self.id, done });
        if sent.is_ok() && std::thread::current().id() != self.thread {
            let _ = closed.recv();
        }
    }
}

/// Runs until every sender is gone.
fn run<C: RaftTypeConfig>(rx: Receiver<Routed<C>>) {
    let mut logs: HashMap<u64, Writer<C>> = HashMap::new();
    loop {
        let msg = if logs.values().any(Writer::unflushed) {
            match rx.try_recv() {
                Ok(msg) => msg,
                Err(TryRecvError::Empty) => {
                    flush_all(&mut logs);
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
            }
        } else if let Some(wait) = logs
            .values()
            .filter_map(Writer::time_to_background_sync)
            .min()
        {
            match rx.recv_timeout(wait) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => {
                    for writer in logs.values_mut() {
                        if writer.time_to_background_sync() == Some(Duration::ZERO) {
                            writer.sync_dirty();
                        }
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(msg) => msg,
                Err(_) => break,
            }
        };
        match msg {
            Routed::Attach { id, writer } => {
                logs.insert(id, *writer);
            }
            Routed::Op {
                id,
                op: WriteOp::Shutdown { done },
            } => {
                let result = match logs.remove(&id) {
                    Some(mut writer) => writer.close(),
                    None => Err(LogError::Closed),
                };
                let _ = done.send(result);
            }
            Routed::Op { id, op } => match logs.get_mut(&id) {
                Some(writer) => writer.handle(op),
                None => reject(op, "the log is closed"),
            },
            Routed::Detach { id, done } => {
                if let Some(mut writer) = logs.remove(&id) {
                    close(&mut writer);
                }
                let _ = done.send(());
            }
        }
        if logs.values().map(Writer::unflushed_bytes).sum::<u64>() >= MAX_UNFLUSHED_BYTES {
            flush_all(&mut logs);
        }
    }
    for writer in logs.values_mut() {
        close(writer);
    }
}

fn flush_all<C: RaftTypeConfig>(logs: &mut HashMap<u64, Writer<C>>) {
    for writer in logs.values_mut() {
        if writer.unflushed() {
            writer.flush();
        }
    }
}

fn close<C: RaftTypeConfig>(writer: &mut Writer<C>) {
    if let Err(err) = writer.close() {
        tracing::error!(error = %err, "log writer failed to flush while closing a log");
    }
}

#[cfg(test)]
mod tests;
