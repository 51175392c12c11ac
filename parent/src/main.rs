//! `parent-proxy`: forwards enclave Recipient requests to KMS.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use std::sync::Arc;

use parent_proxy::kms::{KmsForwarder, KmsOptions, REGION_FORM, RetryMode, is_valid_region};
use parent_proxy::metrics::Metrics;
use parent_proxy::server::{self, ServerConfig};
use recipient_common::protocol::DEFAULT_MAX_FRAME_LEN;
use recipient_common::transport::{Address, DEFAULT_PARENT_LISTEN, Listener};

/// mimalloc in place of the system allocator, because glibc's malloc and free
/// took about 15% of the proxy's CPU under load, most of it for the SDK's
/// many small allocations (profile in docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const OPERATIONS: [&str; 5] =
    ["Decrypt", "DeriveSharedSecret", "GenerateDataKey", "GenerateDataKeyPair", "GenerateRandom"];

/// Forward KMS Recipient requests from a Nitro Enclave to KMS.
///
/// Listens for length-prefixed CBOR frames from enclave-agent and calls KMS
/// through aws-sdk-kms with the standard AWS credential chain (environment,
/// profile, container, instance role). Exit codes: 0 after a clean stop (SIGTERM or
/// SIGINT), 1 when start-up or the listener fails, 2 for invalid arguments.
#[derive(Debug, Parser)]
#[command(name = "parent-proxy", version)]
struct Args {
    /// Address to listen on: vsock://ANY:PORT, tcp://HOST:PORT or unix:///PATH.
    #[arg(long, default_value = DEFAULT_PARENT_LISTEN)]
    listen: Address,

    /// KMS endpoint URL (http://HOST:PORT or https://HOST); defaults to AWS_ENDPOINT_URL_KMS, then the regional endpoint.
    #[arg(long, value_parser = parse_endpoint_url)]
    endpoint_url: Option<String>,

    /// AWS region; defaults to the standard region chain (AWS_REGION, profile, instance metadata).
    /// Only its form is checked: a region that does not exist fails at the first KMS call.
    #[arg(long, value_parser = parse_region)]
    region: Option<String>,

    /// Total KMS attempts per request, the first included, 1 to 10.
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = |text: &str| whole_number(text, 1, 10))]
    max_attempts: u32,

    /// SDK retry mode.
    #[arg(long, value_enum, default_value_t = RetryMode::Standard)]
    retry_mode: RetryMode,

    /// Seconds to wait for a TCP/TLS connection to KMS (more than 0, at most 86400).
    #[arg(long, default_value = "5", allow_negative_numbers = true, value_parser = positive_seconds)]
    connect_timeout: Duration,

    /// Seconds allowed for the whole KMS call of one request, retries included
    /// (more than 0, at most 86400).
    #[arg(long, default_value = "30", allow_negative_numbers = true, value_parser = positive_seconds)]
    request_timeout: Duration,

    /// Seconds an enclave connection may stay silent before it is closed
    /// (more than 0, at most 86400).
    #[arg(long, default_value = "300", allow_negative_numbers = true, value_parser = positive_seconds)]
    idle_timeout: Duration,

    /// Seconds to let requests in flight finish after SIGTERM or SIGINT
    /// (0 to 86400).
    #[arg(long, default_value = "20", allow_negative_numbers = true, value_parser = seconds)]
    shutdown_grace: Duration,

    /// Maximum open enclave connections, 1 or more; further ones get a "busy" error.
    #[arg(long, default_value_t = 1024, allow_negative_numbers = true, value_parser = |text: &str| whole_number(text, 1, u32::MAX))]
    max_connections: u32,

    /// Maximum requests being forwarded at once, 1 or more; further ones get a "busy" error.
    #[arg(long, default_value_t = 256, allow_negative_numbers = true, value_parser = |text: &str| whole_number(text, 1, u32::MAX))]
    max_in_flight: u32,

    /// Maximum frame body in bytes, 16384 to 16777216 (the default fits a 256 KiB
    /// attestation document).
    #[arg(
        long,
        default_value_t = DEFAULT_MAX_FRAME_LEN,
        allow_negative_numbers = true,
        value_parser = |text: &str| whole_number(text, MIN_FRAME_BYTES, MAX_FRAME_BYTES),
    )]
    max_frame_bytes: u32,

    /// Forward only these operations (repeatable), for example DeriveSharedSecret.
    #[arg(long = "allow-operation", value_parser = clap::builder::PossibleValuesParser::new(OPERATIONS))]
    allow_operations: Vec<String>,

    /// Forward only requests naming this key id exactly (repeatable).
    #[arg(long = "allow-key", value_parser = parse_key_id)]
    allow_keys: Vec<String>,

    /// Forward requests that carry no attestation document (no Recipient).
    #[arg(long)]
    allow_unattested: bool,

    /// Serve Prometheus metrics (/metrics) and a health check (/healthz) on this TCP address, IP:PORT
    /// (for example 127.0.0.1:9090) or tcp://IP:PORT.
    #[arg(long, value_parser = parse_metrics_address)]
    metrics_listen: Option<std::net::SocketAddr>,

    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Threads that serve enclave connections and KMS calls, 1 to 256. One
    /// thread forwarded about 3500 requests per second on a 2-core test
    /// machine; raise this if its core is saturated.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = |text: &str| whole_number(text, 1, 256))]
    worker_threads: u32,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Accepts an http or https URL with a host, so that a missing scheme is
/// reported at start-up rather than on every request.
fn parse_endpoint_url(value: &str) -> Result<String, String> {
    let rest = value.strip_prefix("https://").or_else(|| value.strip_prefix("http://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(value.to_owned()),
        Some(_) => Err(format!("`{value}` has no host; write for example http://127.0.0.1:4566")),
        None if value.contains(":/") => Err(format!("`{value}` is not an http:// or https:// URL")),
        None => Err(format!("`{value}` has no http:// or https:// scheme; write for example http://{value}")),
    }
}

/// The smallest `--max-frame-bytes`. Real attestation documents are 4.4 to
/// 7.5 KB, the largest with each optional field at its 1024-byte maximum, so
/// a request carrying one fits, and so does every error frame.
const MIN_FRAME_BYTES: u32 = 16 * 1024;
/// The largest `--max-frame-bytes`, which bounds the buffer of each request.
const MAX_FRAME_BYTES: u32 = 16 * 1024 * 1024;

/// The largest value of a seconds option: one day.
const MAX_SECONDS: f64 = 86_400.0;

/// Parses a number of seconds from 0 to [`MAX_SECONDS`], fractions allowed.
fn seconds(value: &str) -> Result<Duration, String> {
    parse_seconds(value, "from 0 to")
}

/// Parses a number of seconds as [`seconds`] does, 0 excluded.
fn positive_seconds(value: &str) -> Result<Duration, String> {
    let duration = parse_seconds(value, "above 0 and at most")?;
    if duration.is_zero() {
        return Err(format!("`{value}` would make every call time out; write a number of seconds above 0"));
    }
    Ok(duration)
}

/// Parses seconds; `range` starts the description of the accepted values.
fn parse_seconds(value: &str, range: &str) -> Result<Duration, String> {
    let number: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not a number of seconds; write for example 30 or 0.5"))?;
    if !number.is_finite() || !(0.0..=MAX_SECONDS).contains(&number) {
        return Err(format!("`{value}` is out of range; write a number of seconds {range} {MAX_SECONDS}"));
    }
    Ok(Duration::from_secs_f64(number))
}

/// Parses a whole number from `min` to `max`.
fn whole_number(value: &str, min: u32, max: u32) -> Result<u32, String> {
    match value.trim().parse::<i128>() {
        Ok(number) if (i128::from(min)..=i128::from(max)).contains(&number) => Ok(number as u32),
        Ok(_) => Err(format!("`{value}` is out of range; write a whole number from {min} to {max}")),
        Err(_) => Err(format!("`{value}` is not a whole number; write one from {min} to {max}")),
    }
}

/// Accepts a region that can name a regional endpoint.
fn parse_region(value: &str) -> Result<String, String> {
    if is_valid_region(value) {
        Ok(value.to_owned())
    } else {
        Err(format!("`{value}` is not an AWS region; {REGION_FORM}"))
    }
}

/// Accepts a key id, alias or ARN for `--allow-key`; it cannot be empty.
fn parse_key_id(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        return Err("an empty key id matches no request; pass a key id, alias or key ARN".to_owned());
    }
    Ok(value.to_owned())
}

/// Accepts IP:PORT, with or without `tcp://` in front.
fn parse_metrics_address(value: &str) -> Result<std::net::SocketAddr, String> {
    let address = value.strip_prefix("tcp://").unwrap_or(value);
    address.parse().map_err(|_| {
        format!(
            "`{value}` is not IP:PORT; write for example 127.0.0.1:9090 or [::1]:9090 (host names are not resolved)"
        )
    })
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,aws_config=warn,aws_smithy_runtime=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = ServerConfig {
        max_frame_len: args.max_frame_bytes,
        max_connections: args.max_connections as usize,
        max_in_flight: args.max_in_flight as usize,
        request_timeout: args.request_timeout,
        idle_timeout: args.idle_timeout,
        shutdown_grace: args.shutdown_grace,
        allow_operations: (!args.allow_operations.is_empty()).then(|| args.allow_operations.into_iter().collect()),
        allow_keys: (!args.allow_keys.is_empty()).then(|| args.allow_keys.into_iter().collect::<HashSet<_>>()),
        allow_unattested: args.allow_unattested,
    };
    let options = KmsOptions {
        endpoint_url: args.endpoint_url,
        region: args.region,
        max_attempts: args.max_attempts,
        retry_mode: args.retry_mode,
        connect_timeout: args.connect_timeout,
        attempt_timeout: config.request_timeout,
    };

    let forwarder = KmsForwarder::new(&options).await?;
    let metrics = Arc::new(Metrics::default());
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(address) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(address).await.map_err(|error| {
            let hint = recipient_common::transport::bind_hint(&error);
            anyhow::anyhow!("cannot listen for metrics on {address}: {error}{hint}")
        })?;
        let bound = listener.local_addr().context("metrics listener has no address")?;
        println!("parent-proxy metrics on http://{bound}/metrics");
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let stopped = async {
                let _ = metrics_stopped.await;
            };
            if let Err(error) = parent_proxy::metrics::serve(listener, metrics, stopped).await {
                tracing::error!(%error, "metrics listener failed");
            }
        });
    }
    let listener = Listener::bind(&args.listen).await.context("cannot start the listener")?;
    println!("parent-proxy listening on {}", listener.local_address());
    server::serve(listener, forwarder, config, metrics, shutdown_signal()).await.context("server failed")?;
    let _ = stop_metrics.send(());
    tracing::info!("parent-proxy stopped");
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    // One worker by default, so that requests do not wait on wake-ups of a
    // second worker and, on a small parent instance, the proxy does not
    // compete with itself for cores (measurements in docs/benchmarks.md).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads as usize)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("parent-proxy: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("parent-proxy: {error:#}");
            ExitCode::FAILURE
        }
    }
}
