//! Group commit: calls hand their durable writes to one writer thread, which commits every
//! write waiting at that moment in one transaction and then answers each call. A call is
//! acknowledged only after its write is stored, and a busy service pays one commit (one `fsync`)
//! per batch rather than per call.

use std::sync::{Mutex, RwLock};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

/// Why a write was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// The writer is gone (the service is stopping).
    #[error("the writer has stopped")]
    Stopped,
    /// The batch's transaction failed; none of it was stored.
    #[error("{0}")]
    Failed(String),
}

type Reply<R> = oneshot::Sender<Result<R, JournalError>>;

/// The writer's queue: each write with where its answer goes.
type Queue<T, R> = mpsc::Sender<(T, Reply<R>)>;

/// A writer thread and the queue in front of it.
pub struct Journal<T, R> {
    /// `None` once closed: no new write is taken.
    queue: RwLock<Option<Queue<T, R>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<T, R> std::fmt::Debug for Journal<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

impl<T: Send + 'static, R: Send + 'static> Journal<T, R> {
    /// Starts the writer. `write` stores a batch in one transaction and answers one result per
    /// item, in order; at most `max_batch` items go in one batch, and at most `capacity` wait
    /// (callers beyond that wait for room, which slows them rather than growing memory).
    pub fn start<E: std::fmt::Display>(
        name: &str,
        capacity: usize,
        max_batch: usize,
        mut write: impl FnMut(Vec<T>) -> Result<Vec<R>, E> + Send + 'static,
    ) -> std::io::Result<Self> {
        let (queue, mut waiting) = mpsc::channel::<(T, Reply<R>)>(capacity.max(1));
        let max_batch = max_batch.max(1);
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                while let Some(first) = waiting.blocking_recv() {
                    let mut items = Vec::with_capacity(max_batch);
                    let mut replies = Vec::with_capacity(max_batch);
                    let (item, reply) = first;
                    items.push(item);
                    replies.push(reply);
                    while items.len() < max_batch {
                        match waiting.try_recv() {
                            Ok((item, reply)) => {
                                items.push(item);
                                replies.push(reply);
                            }
                            Err(_) => break,
                        }
                    }
                    let count = items.len();
                    match write(items) {
                        Ok(results) if results.len() == count => {
                            for (reply, result) in replies.into_iter().zip(results) {
                                let _ = reply.send(Ok(result));
                            }
                        }
                        Ok(results) => {
                            let message = format!(
                                "the writer answered {} results for {count} writes",
                                results.len()
                            );
                            for reply in replies {
                                let _ = reply.send(Err(JournalError::Failed(message.clone())));
                            }
                        }
                        Err(e) => {
                            let message = e.to_string();
                            for reply in replies {
                                let _ = reply.send(Err(JournalError::Failed(message.clone())));
                            }
                        }
                    }
                }
            })?;
        Ok(Journal {
            queue: RwLock::new(Some(queue)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stores `item` with whatever else is waiting, and answers once it is stored.
    pub async fn write(&self, item: T) -> Result<R, JournalError> {
        let (reply, answer) = oneshot::channel();
        let queue = self
            .queue
            .read()
            .ok()
            .and_then(|q| q.clone())
            .ok_or(JournalError::Stopped)?;
        queue
            .send((item, reply))
            .await
            .map_err(|_| JournalError::Stopped)?;
        drop(queue);
        answer.await.map_err(|_| JournalError::Stopped)?
    }

    /// Writes waiting now.
    pub fn waiting(&self) -> usize {
        self.queue
            .read()
            .ok()
            .and_then(|q| q.as_ref().map(|q| q.max_capacity() - q.capacity()))
            .unwrap_or(0)
    }
}

impl<T, R> Journal<T, R> {
    /// Takes no more writes, waits until every write already queued is stored, and stops the
    /// writer.
    pub fn close(&self) {
        if let Ok(mut queue) = self.queue.write() {
            queue.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_waiting_together_are_committed_together_and_each_answered() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (started, has_started) = std::sync::mpsc::channel::<()>();
        let seen = batches.clone();
        let journal = Arc::new(
            Journal::start("test-journal", 1000, 64, move |items: Vec<u32>| {
                if items == [0] {
                    // The first batch waits until the test has queued the rest.
                    started.send(()).unwrap();
                    hold.recv().unwrap();
                }
                seen.lock().unwrap().push(items.len());
                Ok::<_, String>(items.into_iter().map(|i| i * 2).collect())
            })
            .unwrap(),
        );
        let first = {
            let journal = journal.clone();
            tokio::spawn(async move { journal.write(0).await })
        };
        tokio::task::spawn_blocking(move || has_started.recv().unwrap())
            .await
            .unwrap();
        let mut rest = Vec::new();
        for i in 1..=50 {
            let journal = journal.clone();
            rest.push(tokio::spawn(async move { journal.write(i).await }));
        }
        while journal.waiting() < 50 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Ok(0));
        for (i, task) in rest.into_iter().enumerate() {
            assert_eq!(task.await.unwrap(), Ok((i as u32 + 1) * 2));
        }
        assert_eq!(*batches.lock().unwrap(), vec![1, 50]);
        journal.close();
        assert_eq!(journal.write(7).await, Err(JournalError::Stopped));
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_write_in_it() {
        let journal = Journal::start("test-journal", 10, 10, |_: Vec<u8>| {
            Err::<Vec<u8>, _>("disk full")
        })
        .unwrap();
        assert_eq!(
            journal.write(1).await,
            Err(JournalError::Failed("disk full".into()))
        );
        let short = Journal::start("test-journal", 10, 10, |_: Vec<u8>| {
            Ok::<Vec<u8>, String>(vec![])
        })
        .unwrap();
        assert!(matches!(short.write(1).await, Err(JournalError::Failed(_))));
        short.close();
    }
}
