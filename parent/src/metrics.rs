//! Prometheus text metrics and a health check, served on their own listener
//! (`--metrics-listen`): requests by operation and outcome, a latency
//! histogram, and gauges of requests in flight and open connections.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// The proxy's counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    in_flight: AtomicI64,
    connections: AtomicI64,
}

impl Metrics {
    /// Counts one finished request.
    pub fn record_request(&self, operation: &'static str, outcome: &'static str, latency: Duration) {
        {
            let mut requests = self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *requests.entry((operation, outcome)).or_insert(0) += 1;
        }
        let seconds = latency.as_secs_f64();
        for (bucket, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Adds `delta` to the in-flight gauge.
    pub fn add_in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    /// Adds `delta` to the open-connections gauge.
    pub fn add_connections(&self, delta: i64) {
        self.connections.fetch_add(delta, Ordering::Relaxed);
    }

    /// Renders the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut text = String::new();
        text.push_str("# HELP parent_proxy_requests_total Requests handled, by KMS operation and outcome.\n");
        text.push_str("# TYPE parent_proxy_requests_total counter\n");
        {
            let requests = self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for ((operation, outcome), count) in requests.iter() {
                let _ = writeln!(
                    text,
                    "parent_proxy_requests_total{{operation=\"{operation}\",outcome=\"{outcome}\"}} {count}"
                );
            }
        }

        text.push_str("# HELP parent_proxy_request_duration_seconds Time from request frame to response frame.\n");
        text.push_str("# TYPE parent_proxy_request_duration_seconds histogram\n");
        for (bucket, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            let _ = writeln!(
                text,
                "parent_proxy_request_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(text, "parent_proxy_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(text, "parent_proxy_request_duration_seconds_sum {sum}");
        let _ = writeln!(text, "parent_proxy_request_duration_seconds_count {count}");

        text.push_str("# HELP parent_proxy_requests_in_flight Requests being forwarded now.\n");
        text.push_str("# TYPE parent_proxy_requests_in_flight gauge\n");
        let _ = writeln!(text, "parent_proxy_requests_in_flight {}", self.in_flight.load(Ordering::Relaxed));
        text.push_str("# HELP parent_proxy_connections Open enclave connections.\n");
        text.push_str("# TYPE parent_proxy_connections gauge\n");
        let _ = writeln!(text, "parent_proxy_connections {}", self.connections.load(Ordering::Relaxed));
        text
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::header::CONTENT_TYPE;
    use axum::routing::get;

    let router = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&metrics);
                async move { ([(CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_counts_requests_and_buckets() {
        let metrics = Metrics::default();
        metrics.record_request("DeriveSharedSecret", "ok", Duration::from_millis(3));
        metrics.record_request("DeriveSharedSecret", "ok", Duration::from_millis(30));
        metrics.record_request("Decrypt", "kms_error", Duration::from_secs(20));
        metrics.add_in_flight(2);
        metrics.add_connections(5);
        metrics.add_connections(-1);

        let text = metrics.render();
        assert!(
            text.contains("parent_proxy_requests_total{operation=\"DeriveSharedSecret\",outcome=\"ok\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("parent_proxy_requests_total{operation=\"Decrypt\",outcome=\"kms_error\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("parent_proxy_request_duration_seconds_bucket{le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("parent_proxy_request_duration_seconds_bucket{le=\"0.05\"} 2\n"), "{text}");
        assert!(text.contains("parent_proxy_request_duration_seconds_bucket{le=\"10\"} 2\n"), "{text}");
        assert!(text.contains("parent_proxy_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("parent_proxy_request_duration_seconds_count 3\n"), "{text}");
        assert!(text.contains("parent_proxy_requests_in_flight 2\n"), "{text}");
        assert!(text.contains("parent_proxy_connections 4\n"), "{text}");
    }
}
