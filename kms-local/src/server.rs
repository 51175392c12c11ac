//! The HTTP side: one route, `POST /`, dispatched on `X-Amz-Target`.
//!
//! Every response carries `x-amzn-RequestId` and the content type
//! `application/x-amz-json-1.1`. A request is read up to
//! [`MAX_REQUEST_BODY`] bytes, authenticated with SigV4, then run: the short
//! operations in `INLINE_OPERATIONS` on the connection's task, the others on
//! the blocking thread pool (the store fsyncs and RSA key generation takes
//! seconds), so slow requests never stall the connection tasks. Each
//! request's log line is written once its response has left.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use crate::error::{ErrorKind, KmsError, KmsResult};
use crate::service::{Caller, Kms, new_uuid};
use crate::sigv4;

/// The largest request body accepted: room for a 256 KiB attestation
/// document in base64 plus the other members.
pub const MAX_REQUEST_BODY: usize = 1024 * 1024;
/// The content type of requests and responses.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The `X-Amz-Target` prefix of KMS operations.
pub const TARGET_PREFIX: &str = "TrentService.";

/// Operations that run on the async worker that read the request. Their work
/// is short (about 0.3 ms for a DeriveSharedSecret with a Recipient), so the
/// two thread hand-offs of the blocking pool would add to it at low load.
/// Everything else, including key generation, RSA private-key parsing and
/// store writes, runs on the blocking pool. NOTE: one write can still happen
/// inline, when a request names a key whose scheduled deletion date has
/// passed and it is deleted.
const INLINE_OPERATIONS: [&str; 3] = ["DeriveSharedSecret", "GenerateDataKey", "GenerateRandom"];

/// Builds the router that serves the KMS API for `kms`.
pub fn router(kms: Arc<Kms>) -> Router {
    router_with_log(kms, Arc::default())
}

fn router_with_log(kms: Arc<Kms>, log: Arc<RequestLog>) -> Router {
    Router::new().fallback(handle).with_state(ServerState { kms, log })
}

#[derive(Clone)]
struct ServerState {
    kms: Arc<Kms>,
    log: Arc<RequestLog>,
}

/// How long [`serve`] waits, after the last connection closed, for request
/// log lines that are still to be written.
const LOG_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The request log. Each line is handed to a task that runs once the
/// connection task has written the response, so formatting and writing the
/// line do not delay the caller.
#[derive(Default)]
struct RequestLog {
    /// Lines handed over and not yet written.
    pending: AtomicUsize,
    written: Notify,
}

impl RequestLog {
    fn write_later(self: &Arc<Self>, line: impl FnOnce() + Send + 'static) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        let log = Arc::clone(self);
        tokio::spawn(async move {
            line();
            if log.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                log.written.notify_waiters();
            }
        });
    }

    /// Waits until every line handed over has been written.
    async fn flush(&self) {
        loop {
            let written = self.written.notified();
            if self.pending.load(Ordering::SeqCst) == 0 {
                return;
            }
            written.await;
        }
    }
}

/// Serves the KMS API on `listener` until `shutdown` completes. Connections
/// are served concurrently.
pub async fn serve(
    listener: TcpListener,
    kms: Arc<Kms>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let log = Arc::new(RequestLog::default());
    let served = axum::serve(listener, router_with_log(kms, Arc::clone(&log))).with_graceful_shutdown(shutdown).await;
    if tokio::time::timeout(LOG_FLUSH_TIMEOUT, log.flush()).await.is_err() {
        tracing::warn!(unwritten = log.pending.load(Ordering::SeqCst), "request log lines still unwritten at shutdown");
    }
    served
}

/// A server running on a tokio task, for tests and embedding.
#[derive(Debug)]
pub struct RunningServer {
    address: SocketAddr,
    kms: Arc<Kms>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

impl RunningServer {
    /// Starts serving `kms` on `listener` in the background.
    pub fn spawn(listener: TcpListener, kms: Kms) -> io::Result<Self> {
        let address = listener.local_addr()?;
        let kms = Arc::new(kms);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, Arc::clone(&kms), async move {
            let _ = stopped.await;
        }));
        Ok(Self { address, kms, stop: Some(stop), task })
    }

    /// Returns the bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Returns the endpoint URL for SDKs, `http://ADDRESS`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Returns the service behind the server.
    pub fn kms(&self) -> &Arc<Kms> {
        &self.kms
    }

    /// Stops accepting connections, lets open requests finish and waits for
    /// the server task.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.map_err(io::Error::other)?
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}

async fn handle(State(ServerState { kms, log }): State<ServerState>, request: Request) -> Response {
    let started = Instant::now();
    let request_id = new_uuid();
    let (parts, body) = request.into_parts();
    let operation = parts
        .headers
        .get("x-amz-target")
        .and_then(|value| value.to_str().ok())
        .map(|target| target.strip_prefix(TARGET_PREFIX).unwrap_or(target).to_owned())
        .unwrap_or_default();

    let outcome = process(&kms, &parts, body, &request_id, &operation).await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (status, body, line) = match outcome {
        Ok((principal, value)) => (StatusCode::OK, value, Outcome::Handled { principal }),
        Err(error) => {
            let status = error.kind.status();
            let body = json!({ "__type": error.kind.name(), "message": error.message });
            (status, body, Outcome::Failed { error })
        }
    };
    let response = respond(status, &body, &request_id);
    let status = status.as_u16();
    let write = move || line.write(&request_id, &operation, status, elapsed_ms);
    if tracing::enabled!(tracing::Level::INFO) {
        log.write_later(write);
    } else {
        write();
    }
    response
}

/// The outcome that a request's log line reports.
enum Outcome {
    Handled { principal: String },
    Failed { error: KmsError },
}

impl Outcome {
    fn write(self, request_id: &str, operation: &str, status: u16, elapsed_ms: f64) {
        match self {
            Outcome::Handled { principal } => {
                tracing::info!(request_id, operation, principal, status, elapsed_ms, "request handled");
            }
            Outcome::Failed { error } if error.kind == ErrorKind::Internal => {
                tracing::error!(request_id, operation, status, error = %error, elapsed_ms, "request failed");
            }
            Outcome::Failed { error } => {
                tracing::info!(request_id, operation, status, error = %error, elapsed_ms, "request rejected");
            }
        }
    }
}

fn respond(status: StatusCode, body: &Value, request_id: &str) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| br#"{"__type":"KMSInternalException"}"#.to_vec());
    let mut response = (status, Body::from(bytes)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-RequestId", value);
    }
    response
}

/// Returns whether reading a body failed because it exceeded the length limit.
fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if current.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = current.source();
    }
    false
}

/// Reads, authenticates and runs one request; returns the caller's ARN and
/// the response body.
async fn process(
    kms: &Arc<Kms>,
    parts: &Parts,
    body: Body,
    request_id: &str,
    operation: &str,
) -> KmsResult<(String, Value)> {
    let body: Bytes = axum::body::to_bytes(body, MAX_REQUEST_BODY).await.map_err(|error| {
        if is_length_limit(&error) {
            KmsError::validation(format!(
                "request body is larger than {MAX_REQUEST_BODY} bytes; KMS requests are far smaller, so check what the client sends"
            ))
        } else {
            KmsError::validation(format!("request body could not be read: {error}"))
        }
    })?;

    if parts.method != Method::POST || parts.uri.path() != "/" {
        return Err(KmsError::new(
            ErrorKind::UnknownOperation,
            format!(
                "{} {} is not a KMS request; send POST / with X-Amz-Target: TrentService.<Operation>",
                parts.method,
                parts.uri.path()
            ),
        ));
    }

    let principal =
        sigv4::verify(kms.credentials(), &parts.method, &parts.uri, &parts.headers, &body, SystemTime::now())?;
    let access_key_id = principal.access_key_id.clone();
    let principal_arn = principal.arn.clone();

    let target = parts.headers.get("x-amz-target").and_then(|value| value.to_str().ok());
    if !target.is_some_and(|target| target.starts_with(TARGET_PREFIX)) {
        return Err(KmsError::new(
            ErrorKind::UnknownOperation,
            format!("X-Amz-Target is {target:?}; expected TrentService.<Operation>, e.g. TrentService.DescribeKey"),
        ));
    }
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
    if !content_type.is_some_and(|value| value.starts_with(CONTENT_TYPE)) {
        return Err(KmsError::new(
            ErrorKind::Serialization,
            format!("Content-Type is {content_type:?}; expected {CONTENT_TYPE}"),
        ));
    }

    let run = move |kms: &Kms, operation: &str, request_id: &str| {
        let principal = kms
            .credentials()
            .principal(&access_key_id)
            .ok_or_else(|| KmsError::internal("authenticated principal disappeared"))?;
        kms.handle(operation, &body, Caller { principal, request_id })
    };
    let value = if INLINE_OPERATIONS.contains(&operation) {
        run(kms, operation, request_id)?
    } else {
        let kms = Arc::clone(kms);
        let operation = operation.to_owned();
        let request_id = request_id.to_owned();
        tokio::task::spawn_blocking(move || run(&kms, &operation, &request_id))
            .await
            .map_err(|error| KmsError::internal(format!("request task failed: {error}")))??
    };
    Ok((principal_arn, value))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flush_waits_for_pending_lines() {
        let log = Arc::new(RequestLog::default());
        let written = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let written = Arc::clone(&written);
            log.write_later(move || {
                std::thread::sleep(Duration::from_millis(30));
                written.fetch_add(1, Ordering::SeqCst);
            });
        }
        tokio::time::timeout(Duration::from_secs(5), log.flush()).await.unwrap();
        assert_eq!(written.load(Ordering::SeqCst), 3);
        assert_eq!(log.pending.load(Ordering::SeqCst), 0);
        // With nothing pending, flush returns at once.
        tokio::time::timeout(Duration::from_millis(100), log.flush()).await.unwrap();
    }
}
