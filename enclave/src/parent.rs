//! The connection from the enclave to `parent-proxy`.
//!
//! One connection carries many requests at once. Each request gets a fresh
//! id, and a reader task hands each response to the caller waiting for that
//! id. A broken connection fails the requests in flight with a transport
//! error and is replaced by a new one on the next call.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use recipient_common::protocol::{self, ErrorFrame, FrameError, Operation, Output, Request, Response};
use recipient_common::transport::{self, Address, Stream, TransportError};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{Mutex, oneshot};
use tracing::{debug, warn};

/// Errors on the way to the parent and back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParentError {
    #[error(transparent)]
    Connect(#[from] TransportError),
    // The frame error is in the message and not a `source`, so the printed
    // chain does not repeat it.
    #[error("connection to the parent at {address} failed: {error}")]
    Frame { address: String, error: FrameError },
    #[error("no response from the parent at {address} within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("the parent at {address} closed the connection before answering")]
    Disconnected { address: String },
    /// Reading responses failed, for example because the peer does not send frames.
    #[error("reading from the parent at {address} failed: {reason}")]
    ReadFailed { address: String, reason: String },
    /// The parent returned a typed error.
    #[error(transparent)]
    Remote(ErrorFrame),
}

/// The outcome of one attempt on one connection.
enum Attempt {
    /// The connection failed; a new one may succeed.
    Retryable(ParentError),
    Failed(ParentError),
}

impl Attempt {
    fn into_error(self) -> ParentError {
        match self {
            Attempt::Retryable(error) | Attempt::Failed(error) => error,
        }
    }
}

type Pending = Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<Result<Output, ErrorFrame>>>>>;
type Failure = Arc<std::sync::Mutex<Option<String>>>;

struct Connection {
    writer: Mutex<WriteHalf<Stream>>,
    pending: Pending,
    alive: Arc<std::sync::atomic::AtomicBool>,
    /// The reason the reader task stopped, unless the connection closed cleanly.
    failure: Failure,
    reader: tokio::task::AbortHandle,
}

impl Drop for Connection {
    /// Stops the reader task, whose read half would otherwise keep the
    /// socket open after the client is gone.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A client of `parent-proxy`.
pub struct ParentClient {
    address: Address,
    timeout: Duration,
    max_frame_len: u32,
    next_id: AtomicU64,
    connection: Mutex<Option<Arc<Connection>>>,
}

impl std::fmt::Debug for ParentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParentClient").field("address", &self.address).field("timeout", &self.timeout).finish()
    }
}

impl ParentClient {
    /// Creates a client; the connection opens on the first call.
    pub fn new(address: Address, timeout: Duration) -> Self {
        // Ids start from the clock so that two processes on one connection
        // log apart; uniqueness within a client is what matters.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 & 0xffff_ffff_0000)
            .unwrap_or(0);
        Self {
            address,
            timeout,
            max_frame_len: protocol::DEFAULT_MAX_FRAME_LEN,
            next_id: AtomicU64::new(seed + 1),
            connection: Mutex::new(None),
        }
    }

    /// Returns the parent's address.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Sends `operation` and waits for its output, at most the client's timeout.
    pub async fn call(&self, operation: Operation) -> Result<Output, ParentError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let address = self.address.to_string();
        match tokio::time::timeout(self.timeout, self.call_inner(id, operation)).await {
            Ok(result) => result,
            Err(_) => {
                if let Some(connection) = self.connection.lock().await.as_ref() {
                    lock_pending(&connection.pending).remove(&id);
                }
                Err(ParentError::Timeout { address, timeout: self.timeout })
            }
        }
    }

    async fn call_inner(&self, id: u64, operation: Operation) -> Result<Output, ParentError> {
        let (connection, reused) = self.connection().await?;
        match self.send(&connection, id, &operation).await {
            // A connection that served earlier calls may have been closed by
            // a parent restart that this client has not noticed yet. The
            // five Recipient operations change no KMS state, so one retry on
            // a new connection is safe even if the parent did see the request.
            Err(Attempt::Retryable(_)) if reused => {
                debug!(address = %self.address, "reconnecting to the parent");
                let (connection, _) = self.connection().await?;
                self.send(&connection, id, &operation).await.map_err(Attempt::into_error)
            }
            result => result.map_err(Attempt::into_error),
        }
    }

    async fn send(&self, connection: &Arc<Connection>, id: u64, operation: &Operation) -> Result<Output, Attempt> {
        let (sender, receiver) = oneshot::channel();
        lock_pending(&connection.pending).insert(id, sender);

        let request = Request::new(id, operation.clone());
        let written = {
            let mut writer = connection.writer.lock().await;
            protocol::write_frame(&mut *writer, &request, self.max_frame_len).await
        };
        if let Err(frame_error) = written {
            lock_pending(&connection.pending).remove(&id);
            let error = ParentError::Frame { address: self.address.to_string(), error: frame_error };
            if matches!(error, ParentError::Frame { error: FrameError::TooLarge { .. }, .. }) {
                return Err(Attempt::Failed(error));
            }
            self.discard(connection).await;
            return Err(Attempt::Retryable(error));
        }

        match receiver.await {
            Ok(result) => result.map_err(|frame| Attempt::Failed(ParentError::Remote(frame))),
            Err(_) => {
                self.discard(connection).await;
                let address = self.address.to_string();
                let failure = connection.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                Err(Attempt::Retryable(match failure {
                    Some(reason) => ParentError::ReadFailed { address, reason },
                    None => ParentError::Disconnected { address },
                }))
            }
        }
    }

    /// Returns the open connection, or opens one; `true` when it is reused.
    async fn connection(&self) -> Result<(Arc<Connection>, bool), ParentError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref()
            && connection.alive.load(Ordering::Acquire)
        {
            return Ok((Arc::clone(connection), true));
        }

        let stream = transport::connect(&self.address).await?;
        debug!(address = %self.address, "connected to the parent");
        let (reader, writer) = tokio::io::split(stream);
        let pending = Pending::default();
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let failure = Failure::default();
        let reader = tokio::spawn(read_responses(
            reader,
            Arc::clone(&pending),
            Arc::clone(&alive),
            Arc::clone(&failure),
            self.max_frame_len,
            self.address.to_string(),
        ));
        let connection =
            Arc::new(Connection { writer: Mutex::new(writer), pending, alive, failure, reader: reader.abort_handle() });
        *slot = Some(Arc::clone(&connection));
        Ok((connection, false))
    }

    async fn discard(&self, connection: &Arc<Connection>) {
        connection.alive.store(false, Ordering::Release);
        let mut slot = self.connection.lock().await;
        if slot.as_ref().is_some_and(|current| Arc::ptr_eq(current, connection)) {
            *slot = None;
        }
    }
}

fn lock_pending(
    pending: &Pending,
) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Result<Output, ErrorFrame>>>> {
    pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Hands each response to the caller waiting for its id, until the
/// connection ends; then records why in `failure` and fails every request
/// still waiting.
async fn read_responses(
    reader: ReadHalf<Stream>,
    pending: Pending,
    alive: Arc<std::sync::atomic::AtomicBool>,
    failure: Failure,
    max_frame_len: u32,
    address: String,
) {
    let mut reader = protocol::FrameReader::new(reader);
    loop {
        match reader.read::<Response>(max_frame_len).await {
            Ok(response) => {
                let waiter = lock_pending(&pending).remove(&response.id);
                match waiter {
                    Some(waiter) => {
                        let _ = waiter.send(response.result);
                    }
                    None if response.id == 0 => {
                        // Id 0 is a connection-level error (the parent could
                        // not read a request's id); every waiter gets it.
                        if let Err(error) = response.result {
                            warn!(%address, %error, "parent reported a connection error");
                            for (_, waiter) in lock_pending(&pending).drain() {
                                let _ = waiter.send(Err(error.clone()));
                            }
                        }
                    }
                    None => warn!(%address, id = response.id, "response for an unknown request id; ignored"),
                }
            }
            Err(FrameError::Closed) => break,
            Err(error) => {
                // Requests in flight report the error; with none, only this
                // log line does.
                if lock_pending(&pending).is_empty() {
                    warn!(%address, %error, "reading from the parent failed");
                } else {
                    debug!(%address, %error, "reading from the parent failed");
                }
                let mut reason = error.to_string();
                if matches!(error, FrameError::NotFrames { .. }) {
                    reason.push_str(
                        "; check that the parent address is parent-proxy's listener, not kms-local or another HTTP service",
                    );
                }
                *failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason);
                break;
            }
        }
    }
    alive.store(false, Ordering::Release);
    // Dropping the senders wakes every waiter, which reports `ReadFailed`
    // with the recorded reason, or `Disconnected` after a clean close.
    lock_pending(&pending).clear();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use recipient_common::protocol::GenerateRandomRequest;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn http_peer_named_in_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: Address = format!("tcp://{}", listener.local_addr().unwrap()).parse().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 64];
            let _ = stream.read(&mut request).await.unwrap();
            stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await.unwrap();
            // Keep the connection open, as an HTTP server would.
            tokio::time::sleep(Duration::from_secs(5)).await;
        });

        let client = ParentClient::new(address.clone(), Duration::from_secs(10));
        let operation = Operation::GenerateRandom(GenerateRandomRequest {
            number_of_bytes: 8,
            custom_key_store_id: None,
            recipient: None,
        });
        let error = client.call(operation).await.unwrap_err();
        match &error {
            ParentError::ReadFailed { address: named, reason } => {
                assert_eq!(named, &address.to_string());
                assert!(reason.starts_with("the peer sent \"HTTP\" where a frame length belongs"), "{reason}");
                assert!(reason.ends_with("not kms-local or another HTTP service"), "{reason}");
            }
            other => panic!("expected ReadFailed, got {other:?}"),
        }
        server.abort();
    }
}
