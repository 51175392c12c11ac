//! The frame server: accepts enclave connections, applies the parent's
//! limits and allowlists, forwards each request to KMS and writes the
//! response with the request's id.
//!
//! A connection carries many requests. Each request runs in its own task and
//! responses are written as they complete, so a slow KMS call does not hold
//! up the next request on the same connection.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use recipient_common::protocol::{self, ErrorFrame, FrameError, Operation, Request, Response};
use recipient_common::transport::{Listener, Stream};
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::{debug, info, warn};

use crate::kms::{ForwardError, Forwarded, KmsForwarder, Origin};
use crate::metrics::Metrics;

/// Limits and rules of the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub max_frame_len: u32,
    pub max_connections: usize,
    pub max_in_flight: usize,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Operation names that may be forwarded; `None` allows all five.
    pub allow_operations: Option<HashSet<String>>,
    /// Key ids exactly as the enclave sends them; `None` allows any key.
    pub allow_keys: Option<HashSet<String>>,
    /// Forward requests that carry no attestation document.
    pub allow_unattested: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_frame_len: protocol::DEFAULT_MAX_FRAME_LEN,
            max_connections: 1024,
            max_in_flight: 256,
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(20),
            allow_operations: None,
            allow_keys: None,
            allow_unattested: false,
        }
    }
}

struct Shared {
    config: ServerConfig,
    forwarder: KmsForwarder,
    connections: Arc<Semaphore>,
    in_flight: Arc<Semaphore>,
    connection_ids: AtomicU64,
    metrics: Arc<Metrics>,
    /// Set on shutdown: connections stop reading new requests.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Log labels of recent documents, because an enclave that reuses its key
    /// sends the same document with many requests.
    document_labels: DocumentLabels,
}

/// Serves `listener` until `shutdown` completes, then waits up to the grace
/// period for requests in flight to finish.
pub async fn serve(
    listener: Listener,
    forwarder: KmsForwarder,
    config: ServerConfig,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        metrics,
        connections: Arc::new(Semaphore::new(config.max_connections)),
        in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
        config,
        forwarder,
        connection_ids: AtomicU64::new(0),
        stopping: tokio::sync::watch::Sender::new(false),
        document_labels: DocumentLabels::default(),
    });
    let address = listener.local_address();
    info!(%address, "parent-proxy accepting connections");

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => accept_connection(&shared, stream, peer),
                Err(error) => {
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    shared.stopping.send_replace(true);

    let in_flight = shared.config.max_in_flight - shared.in_flight.available_permits();
    info!(in_flight, grace_seconds = shared.config.shutdown_grace.as_secs_f64(), "stopped accepting; draining");
    let all_permits = u32::try_from(shared.config.max_in_flight).unwrap_or(u32::MAX);
    match tokio::time::timeout(shared.config.shutdown_grace, shared.in_flight.acquire_many(all_permits)).await {
        Ok(_) => info!("all requests finished"),
        Err(_) => warn!("grace period over with requests still in flight"),
    }
    Ok(())
}

fn accept_connection(shared: &Arc<Shared>, mut stream: Stream, peer: String) {
    let connection = shared.connection_ids.fetch_add(1, Ordering::Relaxed);
    let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
        warn!(connection, %peer, max = shared.config.max_connections, "connection limit reached; rejecting");
        let message = format!("{} connections open, the maximum", shared.config.max_connections);
        let max_frame_len = shared.config.max_frame_len;
        tokio::spawn(async move {
            let response = Response::new(0, Err(ErrorFrame::Busy { message }));
            let _ = protocol::write_frame(&mut stream, &response, max_frame_len).await;
        });
        return;
    };
    debug!(connection, %peer, "connection opened");
    let shared = Arc::clone(shared);
    shared.metrics.add_connections(1);
    tokio::spawn(async move {
        handle_connection(&shared, stream, connection).await;
        debug!(connection, "connection closed");
        shared.metrics.add_connections(-1);
        drop(permit);
    });
}

async fn handle_connection(shared: &Arc<Shared>, stream: Stream, connection: u64) {
    let (reader, mut writer) = tokio::io::split(stream);
    let mut reader = protocol::FrameReader::new(reader);
    // A request's in-flight permit travels with its response and is released
    // only once the response is written, so that a shutdown that waits for
    // every permit also waits for the responses to leave.
    let (sender, mut receiver) = mpsc::channel::<(Response, Option<Arc<OwnedSemaphorePermit>>)>(64);
    let max_frame_len = shared.config.max_frame_len;
    let writer_task = tokio::spawn(async move {
        // Responses that are ready together leave in one write.
        let mut batch = Vec::new();
        let mut permits = Vec::new();
        let mut open = true;
        while open && let Some(first) = receiver.recv().await {
            let mut next = Some(first);
            while let Some((response, permit)) = next.take() {
                open &= append_response(&mut batch, &response, max_frame_len, connection);
                permits.extend(permit);
                if open && batch.len() < MAX_WRITE_BATCH {
                    next = receiver.try_recv().ok();
                }
            }
            let written = async {
                writer.write_all(&batch).await?;
                writer.flush().await
            }
            .await;
            permits.clear();
            if let Err(error) = written {
                debug!(connection, %error, "writing a response failed");
                break;
            }
            batch.clear();
            batch.shrink_to(MAX_WRITE_BATCH);
        }
        if !open {
            // Ending the stream lets the enclave stop waiting.
            let _ = writer.shutdown().await;
        }
    });

    let mut stopping = shared.stopping.subscribe();
    loop {
        let read = tokio::time::timeout(shared.config.idle_timeout, reader.read_body(max_frame_len));
        let read = tokio::select! {
            read = read => read,
            _ = stopping.wait_for(|stopping| *stopping) => {
                debug!(connection, "shutting down; no further requests read");
                break;
            }
        };
        let body = match read {
            Err(_) => {
                debug!(connection, "idle timeout");
                break;
            }
            Ok(Err(FrameError::Closed)) => break,
            Ok(Err(error @ (FrameError::TooLarge { .. } | FrameError::NotFrames { .. }))) => {
                // The body was not read, so the stream cannot be resynchronised.
                if matches!(error, FrameError::NotFrames { .. }) {
                    warn!(connection, %error, "client is not enclave-agent; closing the connection");
                } else {
                    warn!(connection, %error, "oversized frame; closing the connection");
                }
                let _ = sender
                    .send((Response::new(0, Err(ErrorFrame::Malformed { message: error.to_string() })), None))
                    .await;
                break;
            }
            Ok(Err(error)) => {
                debug!(connection, %error, "connection ended inside a frame");
                break;
            }
            Ok(Ok(body)) => body,
        };

        let request: Request = match protocol::decode_body(body) {
            Ok(request) => request,
            Err(error) => {
                let id = protocol::peek_request_id(body).unwrap_or(0);
                warn!(connection, request_id = id, %error, "malformed request");
                let _ = sender
                    .send((Response::new(id, Err(ErrorFrame::Malformed { message: error.to_string() })), None))
                    .await;
                continue;
            }
        };

        let Ok(permit) = shared.in_flight.clone().try_acquire_owned() else {
            warn!(connection, request_id = request.id, "in-flight limit reached; rejecting");
            let message = format!("{} requests in flight, the maximum", shared.config.max_in_flight);
            let _ = sender.send((Response::new(request.id, Err(ErrorFrame::Busy { message })), None)).await;
            continue;
        };
        let shared = Arc::clone(shared);
        let sender = sender.clone();
        shared.metrics.add_in_flight(1);
        tokio::spawn(async move {
            let (response, log) = handle_request(&shared, connection, request).await;
            shared.metrics.add_in_flight(-1);
            // The permit is shared with the response, so that it is released
            // once both the response is written and the log line is out.
            let permit = Arc::new(permit);
            let _ = sender.send((response, Some(Arc::clone(&permit)))).await;
            // The writer task runs first, so the log line is not on the
            // enclave's critical path.
            tokio::task::yield_now().await;
            log.write();
            drop(permit);
        });
    }

    drop(sender);
    let _ = writer_task.await;
}

/// Appends `response` to `batch`, or an `Internal` error that names the
/// frame limit if the response is over it. Returns false if not even that
/// error fits, so the connection must close rather than leave the enclave
/// waiting for a response that cannot come.
fn append_response(batch: &mut Vec<u8>, response: &Response, max_frame_len: u32, connection: u64) -> bool {
    let Err(error) = protocol::append_frame(batch, response, max_frame_len) else {
        return true;
    };
    warn!(connection, request_id = response.id, %error, "response over the frame limit; returning an error in its place");
    let message = format!("the response cannot be sent: {error}; raise the parent's --max-frame-bytes");
    let replacement = Response::new(response.id, Err(ErrorFrame::Internal { message }));
    if let Err(error) = protocol::append_frame(batch, &replacement, max_frame_len) {
        warn!(connection, request_id = response.id, %error, "not even an error fits in a frame; closing the connection");
        return false;
    }
    true
}

/// The request line of one forwarded request, written once its response has
/// left.
struct RequestLog {
    connection: u64,
    request_id: u64,
    operation: &'static str,
    key_id: String,
    outcome: &'static str,
    error: Option<String>,
    latency_ms: f64,
    kms_request_id: Option<String>,
    document: Option<String>,
}

impl RequestLog {
    fn write(self) {
        let Self { connection, request_id, operation, key_id, outcome, error, latency_ms, kms_request_id, document } =
            self;
        let kms_request_id = kms_request_id.as_deref().unwrap_or("-");
        let document = document.as_deref().unwrap_or("none");
        macro_rules! failed {
            ($level:ident, $error:expr) => {
                tracing::$level!(
                    connection,
                    request_id,
                    operation,
                    key_id,
                    outcome,
                    error = %$error,
                    latency_ms,
                    kms_request_id,
                    document,
                    "request failed"
                )
            };
        }
        match error {
            None => info!(
                connection,
                request_id, operation, key_id, outcome, latency_ms, kms_request_id, document, "request forwarded"
            ),
            Some(error) if PARENT_FAILURES.contains(&outcome) => failed!(warn, error),
            Some(error) => failed!(info, error),
        }
    }
}

/// Forwards `request`; returns its response and its log line.
async fn handle_request(shared: &Shared, connection: u64, request: Request) -> (Response, RequestLog) {
    let started = Instant::now();
    let id = request.id;
    let operation_name = request.operation.name();
    let key_id = request.operation.key_id().unwrap_or("-").to_owned();
    let document_label = match request.operation.recipient() {
        Some(recipient) if tracing::enabled!(tracing::Level::INFO) => {
            Some(shared.document_labels.label(&recipient.attestation_document))
        }
        Some(_) => Some("not computed".to_owned()),
        None => None,
    };

    let origin = Origin { connection, request_id: id };
    let result = match check_rules(&shared.config, &request.operation) {
        Err(refusal) => Err(ForwardError { error: refusal, kms_request_id: None }),
        Ok(()) => {
            match tokio::time::timeout(
                shared.config.request_timeout,
                shared.forwarder.forward(origin, request.operation),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(ForwardError {
                    error: ErrorFrame::KmsTimeout {
                        message: format!("no response from KMS within {:?}", shared.config.request_timeout),
                    },
                    kms_request_id: None,
                }),
            }
        }
    };

    let latency = started.elapsed();
    let outcome = match &result {
        Ok(_) => "ok",
        Err(failure) => outcome_name(&failure.error),
    };
    shared.metrics.record_request(operation_name, outcome, latency);
    let mut log = RequestLog {
        connection,
        request_id: id,
        operation: operation_name,
        key_id,
        outcome,
        error: None,
        latency_ms: latency.as_secs_f64() * 1000.0,
        kms_request_id: None,
        document: document_label,
    };
    let response = match result {
        Ok(Forwarded { output, kms_request_id }) => {
            log.kms_request_id = kms_request_id;
            Response::new(id, Ok(output))
        }
        Err(ForwardError { error, kms_request_id }) => {
            log.kms_request_id = kms_request_id;
            log.error = Some(error.to_string());
            Response::new(id, Err(error))
        }
    };
    (response, log)
}

/// Applies the allowlists and the attestation rule.
pub fn check_rules(config: &ServerConfig, operation: &Operation) -> Result<(), ErrorFrame> {
    if let Some(allowed) = &config.allow_operations
        && !allowed.contains(operation.name())
    {
        return Err(ErrorFrame::Refused {
            rule: "allow-operation".to_owned(),
            message: format!("{} is not in the parent's --allow-operation list", operation.name()),
        });
    }
    if let (Some(allowed), Some(key_id)) = (&config.allow_keys, operation.key_id())
        && !allowed.contains(key_id)
    {
        return Err(ErrorFrame::Refused {
            rule: "allow-key".to_owned(),
            message: format!("key {key_id} is not in the parent's --allow-key list"),
        });
    }
    if !config.allow_unattested && operation.recipient().is_none() {
        return Err(ErrorFrame::Refused {
            rule: "allow-unattested".to_owned(),
            message: format!(
                "{} carries no attestation document; the parent forwards only Recipient requests unless started with --allow-unattested",
                operation.name()
            ),
        });
    }
    Ok(())
}

/// Outcomes that point at a problem on the parent's side or between the
/// parent and KMS, logged as warnings. Refusals, KMS errors, busy and
/// malformed requests are decisions about a request, logged as information.
const PARENT_FAILURES: [&str; 3] = ["kms_unreachable", "kms_timeout", "internal"];

fn outcome_name(error: &ErrorFrame) -> &'static str {
    match error {
        ErrorFrame::Refused { .. } => "refused",
        ErrorFrame::Kms { .. } => "kms_error",
        ErrorFrame::KmsUnreachable { .. } => "kms_unreachable",
        ErrorFrame::KmsTimeout { .. } => "kms_timeout",
        ErrorFrame::Busy { .. } => "busy",
        ErrorFrame::Malformed { .. } => "malformed",
        _ => "internal",
    }
}

/// Bytes of responses gathered into one write; also the write buffer
/// capacity a connection keeps between writes.
const MAX_WRITE_BATCH: usize = 64 * 1024;

/// Maximum number of document labels kept; the cache is emptied when it is full.
const MAX_DOCUMENT_LABELS: usize = 256;

/// Labels that identify a document in logs without carrying it: the first 16
/// hex digits of its SHA-256 and of its PCR0. The parent does not verify the
/// document (KMS does), so an unparsable one is labelled as such. Parsing
/// costs more than the digest, so labels are kept by the full digest. An
/// enclave that reuses its key sends the same document again, so the last
/// document is kept too and compared before anything is hashed.
#[derive(Default)]
struct DocumentLabels {
    recent: std::sync::Mutex<std::collections::HashMap<[u8; 32], String>>,
    last: std::sync::Mutex<Option<(Vec<u8>, String)>>,
}

impl DocumentLabels {
    /// Returns the label of `document`, parsing it only if it was not seen recently.
    fn label(&self, document: &[u8]) -> String {
        if let Some((last, label)) = &*lock(&self.last)
            && last.as_slice() == document
        {
            return label.clone();
        }

        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, document);
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        let cached = lock(&self.recent).get(&key).cloned();
        let label = cached.unwrap_or_else(|| {
            let sha256 = hex::encode(key.get(..8).unwrap_or_default());
            let pcr0 = match recipient_common::attestation::parse(document) {
                Ok(parsed) => parsed
                    .pcrs
                    .get(&0)
                    .map_or_else(|| "none".to_owned(), |pcr0| hex::encode(pcr0.get(..8).unwrap_or_default())),
                Err(_) => "unparsable".to_owned(),
            };
            let label = format!("sha256:{sha256} pcr0:{pcr0}");
            let mut recent = lock(&self.recent);
            if recent.len() >= MAX_DOCUMENT_LABELS {
                recent.clear();
            }
            recent.insert(key, label.clone());
            label
        });
        *lock(&self.last) = Some((document.to_vec(), label.clone()));
        label
    }
}

/// Locks a mutex whose data a panic cannot leave inconsistent, so a poisoned
/// lock is usable.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors").join(name);
        std::fs::read(&path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
    }

    #[test]
    fn document_label_names_digest_and_pcr0() {
        let labels = DocumentLabels::default();
        // A debug-mode document: its PCR0 is all zero.
        let document = vector("attestation-2022-10-12-debug.cbor");
        assert_eq!(labels.label(&document), "sha256:46591b92f9abefaa pcr0:0000000000000000");
        assert_eq!(labels.label(&document), "sha256:46591b92f9abefaa pcr0:0000000000000000");
        assert_eq!(lock(&labels.recent).len(), 1);

        let label = labels.label(b"not a document");
        assert!(label.ends_with(" pcr0:unparsable"), "{label}");
        assert_eq!(lock(&labels.recent).len(), 2);
    }

    #[test]
    fn document_label_alternating_documents() {
        let labels = DocumentLabels::default();
        let document = vector("attestation-2022-10-12-debug.cbor");
        let other = b"not a document".to_vec();
        let other_label = format!(
            "sha256:{} pcr0:unparsable",
            hex::encode(&aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &other).as_ref()[..8])
        );
        for _ in 0..2 {
            assert_eq!(labels.label(&document), "sha256:46591b92f9abefaa pcr0:0000000000000000");
            assert_eq!(labels.label(&other), other_label);
        }
        // A document that differs from the last one only in its final byte gets its own label.
        let mut changed = document.clone();
        if let Some(last) = changed.last_mut() {
            *last ^= 1;
        }
        labels.label(&document);
        assert_ne!(labels.label(&changed), labels.label(&document));
    }

    #[test]
    fn oversized_response_replaced_or_connection_closed() {
        let output =
            recipient_common::protocol::Output::GenerateRandom(recipient_common::protocol::GenerateRandomOutput {
                plaintext: None,
                ciphertext_for_recipient: Some(serde_bytes::ByteBuf::from(vec![7; 20_000])),
            });
        let response = Response::new(9, Ok(output));

        // Over the limit: an error naming the limit takes the response's place.
        let mut batch = Vec::new();
        assert!(append_response(&mut batch, &response, 16_384, 1));
        let replacement: Response = protocol::decode_body(&batch[4..]).unwrap();
        assert_eq!(replacement.id, 9);
        match replacement.result {
            Err(ErrorFrame::Internal { message }) => {
                assert!(message.contains("exceeds the maximum of 16384 bytes"), "{message}");
                assert!(message.contains("raise the parent's --max-frame-bytes"), "{message}");
            }
            other => panic!("expected an Internal error, got {other:?}"),
        }

        // A limit that not even the error fits: nothing is appended, and the
        // caller must close the connection.
        let mut batch = Vec::new();
        assert!(!append_response(&mut batch, &response, 64, 1));
        assert!(batch.is_empty());
    }

    #[test]
    fn document_labels_stay_bounded() {
        let labels = DocumentLabels::default();
        for index in 0..MAX_DOCUMENT_LABELS + 10 {
            labels.label(&index.to_be_bytes());
        }
        assert_eq!(lock(&labels.recent).len(), 10);
    }
}
