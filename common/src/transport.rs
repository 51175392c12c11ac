//! Transports between enclave and parent, with one address syntax:
//! `vsock://CID:PORT`, `tcp://HOST:PORT` and `unix:///PATH`.
//!
//! Production uses vsock: the parent listens on `vsock://ANY:PORT` and the
//! enclave dials `vsock://3:PORT` (CID 3 is the parent as seen from an
//! enclave). TCP and Unix sockets serve simulation and tests on machines
//! without a vsock loopback.

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `VMADDR_CID_ANY`: listen on every CID.
pub const VSOCK_CID_ANY: u32 = u32::MAX;
/// The CID of the parent instance as seen from inside an enclave.
pub const VSOCK_CID_PARENT: u32 = 3;
/// The production default listen address of the parent.
pub const DEFAULT_PARENT_LISTEN: &str = "vsock://ANY:5000";
/// The production default address the enclave dials.
pub const DEFAULT_PARENT_ADDRESS: &str = "vsock://3:5000";

/// Errors parsing an address or opening a connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    #[error("invalid address `{address}`: {reason}; expected vsock://CID:PORT, tcp://HOST:PORT or unix:///PATH")]
    InvalidAddress { address: String, reason: String },
    // The I/O error is part of the message and deliberately not a `source`,
    // so that printing the error chain does not repeat it.
    #[error("failed to connect to {address}: {error}{}", connect_hint(error))]
    Connect { address: String, error: std::io::Error },
    #[error("failed to listen on {address}: {error}{}", bind_hint(error))]
    Bind { address: String, error: std::io::Error },
    #[error("failed to accept a connection on {address}: {error}")]
    Accept { address: String, error: std::io::Error },
}

fn connect_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => "; is parent-proxy running and listening on that address?",
        std::io::ErrorKind::NotFound => "; is parent-proxy running and listening on that socket path?",
        _ => "",
    }
}

/// Names the missing directory when binding a Unix socket at `path` failed
/// because its directory does not exist; returns other errors unchanged.
fn missing_directory(path: &std::path::Path, error: std::io::Error) -> std::io::Error {
    match path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        Some(dir) if error.kind() == std::io::ErrorKind::NotFound && !dir.exists() => std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("directory {} does not exist; create it or choose another path", dir.display()),
        ),
        _ => error,
    }
}

/// Returns what to do about a failed bind, as text to append to the error
/// ("; …"), or nothing when there is no usual fix.
pub fn bind_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => "; another process uses it, so stop that process or choose another port",
        std::io::ErrorKind::AddrNotAvailable => "; no interface of this machine has that address",
        _ => "",
    }
}

/// A transport address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A vsock context id and port; [`VSOCK_CID_ANY`] listens on every CID.
    Vsock { cid: u32, port: u32 },
    /// A host name or IP literal and a port, kept as `host:port`.
    Tcp { host: String, port: u16 },
    /// A Unix domain socket path.
    Unix(PathBuf),
}

impl FromStr for Address {
    type Err = TransportError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid =
            |reason: &str| TransportError::InvalidAddress { address: text.to_owned(), reason: reason.to_owned() };

        if let Some(rest) = text.strip_prefix("vsock://") {
            let (cid, port) = rest.rsplit_once(':').ok_or_else(|| invalid("missing `:PORT`"))?;
            let cid = if cid.eq_ignore_ascii_case("ANY") {
                VSOCK_CID_ANY
            } else {
                cid.parse::<u32>().map_err(|_| invalid("the CID is not a number or `ANY`"))?
            };
            let port = port.parse::<u32>().map_err(|_| invalid("the port is not a number from 0 to 4294967295"))?;
            return Ok(Address::Vsock { cid, port });
        }

        if let Some(rest) = text.strip_prefix("tcp://") {
            let (host, port) = rest.rsplit_once(':').ok_or_else(|| invalid("missing `:PORT`"))?;
            let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
            if host.is_empty() {
                return Err(invalid("the host is empty"));
            }
            let port = port.parse::<u16>().map_err(|_| invalid("the port is not a number from 0 to 65535"))?;
            return Ok(Address::Tcp { host: host.to_owned(), port });
        }

        if let Some(path) = text.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(invalid("the path must be absolute, as in unix:///run/parent.sock"));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }

        if text.contains("://") {
            return Err(invalid("unknown scheme"));
        }
        Err(invalid(&format!("missing scheme; for TCP write tcp://{text}")))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Vsock { cid: VSOCK_CID_ANY, port } => write!(f, "vsock://ANY:{port}"),
            Address::Vsock { cid, port } => write!(f, "vsock://{cid}:{port}"),
            Address::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Address::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Address::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

/// A connected byte stream over any of the transports.
#[derive(Debug)]
pub enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
    Vsock(tokio_vsock::VsockStream),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Vsock(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Vsock(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Vsock(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Vsock(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Opens a connection to `address`.
pub async fn connect(address: &Address) -> Result<Stream, TransportError> {
    let failed = |error| TransportError::Connect { address: address.to_string(), error };
    match address {
        Address::Tcp { host, port } => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await.map_err(failed)?;
            stream.set_nodelay(true).map_err(failed)?;
            Ok(Stream::Tcp(stream))
        }
        Address::Unix(path) => Ok(Stream::Unix(tokio::net::UnixStream::connect(path).await.map_err(failed)?)),
        Address::Vsock { cid, port } => {
            let target = tokio_vsock::VsockAddr::new(*cid, *port);
            Ok(Stream::Vsock(tokio_vsock::VsockStream::connect(target).await.map_err(failed)?))
        }
    }
}

/// A listening socket on any of the transports.
#[derive(Debug)]
pub enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, PathBuf),
    Vsock(tokio_vsock::VsockListener),
}

impl Listener {
    /// Binds `address`. A Unix socket path that exists and is a socket with
    /// no listener behind it is replaced; any other existing file is an error.
    pub async fn bind(address: &Address) -> Result<Self, TransportError> {
        let failed = |error| TransportError::Bind { address: address.to_string(), error };
        match address {
            Address::Tcp { host, port } => {
                Ok(Listener::Tcp(tokio::net::TcpListener::bind((host.as_str(), *port)).await.map_err(failed)?))
            }
            Address::Unix(path) => {
                remove_stale_socket(path).await.map_err(failed)?;
                let listener =
                    tokio::net::UnixListener::bind(path).map_err(|error| failed(missing_directory(path, error)))?;
                Ok(Listener::Unix(listener, path.clone()))
            }
            Address::Vsock { cid, port } => {
                let listener =
                    tokio_vsock::VsockListener::bind(tokio_vsock::VsockAddr::new(*cid, *port)).map_err(failed)?;
                Ok(Listener::Vsock(listener))
            }
        }
    }

    /// The bound address, with the port the system chose for port 0.
    pub fn local_address(&self) -> Address {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(addr) => Address::Tcp { host: addr.ip().to_string(), port: addr.port() },
                Err(_) => Address::Tcp { host: "unknown".to_owned(), port: 0 },
            },
            Listener::Unix(_, path) => Address::Unix(path.clone()),
            Listener::Vsock(l) => match l.local_addr() {
                Ok(addr) => Address::Vsock { cid: addr.cid(), port: addr.port() },
                Err(_) => Address::Vsock { cid: VSOCK_CID_ANY, port: 0 },
            },
        }
    }

    /// Accepts one connection and returns it with a printable peer name.
    pub async fn accept(&self) -> Result<(Stream, String), TransportError> {
        let failed = |error| TransportError::Accept { address: self.local_address().to_string(), error };
        match self {
            Listener::Tcp(l) => {
                let (stream, peer) = l.accept().await.map_err(failed)?;
                stream.set_nodelay(true).map_err(failed)?;
                Ok((Stream::Tcp(stream), format!("tcp://{peer}")))
            }
            Listener::Unix(l, path) => {
                let (stream, _) = l.accept().await.map_err(failed)?;
                Ok((Stream::Unix(stream), format!("unix://{}", path.display())))
            }
            Listener::Vsock(l) => {
                let (stream, peer) = l.accept().await.map_err(failed)?;
                Ok((Stream::Vsock(stream), format!("vsock://{}:{}", peer.cid(), peer.port())))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn remove_stale_socket(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;

    let Ok(metadata) = tokio::fs::symlink_metadata(path).await else {
        return Ok(());
    };
    if !metadata.file_type().is_socket() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket; remove it or choose another path", path.display()),
        ));
    }
    if tokio::net::UnixStream::connect(path).await.is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("another process is listening on {}", path.display()),
        ));
    }
    tokio::fs::remove_file(path).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn parse_every_scheme() {
        assert_eq!("vsock://3:5000".parse::<Address>().unwrap(), Address::Vsock { cid: 3, port: 5000 });
        assert_eq!("vsock://ANY:5000".parse::<Address>().unwrap(), Address::Vsock { cid: VSOCK_CID_ANY, port: 5000 });
        assert_eq!(
            "tcp://127.0.0.1:8000".parse::<Address>().unwrap(),
            Address::Tcp { host: "127.0.0.1".to_owned(), port: 8000 }
        );
        assert_eq!("tcp://[::1]:8000".parse::<Address>().unwrap(), Address::Tcp { host: "::1".to_owned(), port: 8000 });
        assert_eq!(
            "unix:///run/parent.sock".parse::<Address>().unwrap(),
            Address::Unix(PathBuf::from("/run/parent.sock"))
        );
    }

    #[test]
    fn display_round_trips() {
        for text in ["vsock://ANY:5000", "vsock://3:5000", "tcp://127.0.0.1:1", "tcp://[::1]:2", "unix:///tmp/a.sock"] {
            assert_eq!(text.parse::<Address>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn parse_rejects_bad_addresses() {
        for (text, reason) in [
            ("127.0.0.1:5000", "missing scheme; for TCP write tcp://127.0.0.1:5000"),
            ("http://127.0.0.1:5000", "unknown scheme"),
            ("vsock://3", "missing `:PORT`"),
            ("vsock://parent:5000", "CID"),
            ("vsock://3:-1", "port"),
            ("tcp://127.0.0.1:70000", "port"),
            ("tcp://:80", "host is empty"),
            ("unix://relative.sock", "absolute"),
        ] {
            let error = text.parse::<Address>().unwrap_err().to_string();
            assert!(error.contains(text), "{error}");
            assert!(error.contains(reason), "{text}: {error}");
        }
    }

    #[tokio::test]
    async fn tcp_connect_and_echo() {
        let listener = Listener::bind(&"tcp://127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = listener.local_address();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buffer = [0u8; 5];
            stream.read_exact(&mut buffer).await.unwrap();
            stream.write_all(&buffer).await.unwrap();
        });
        let mut client = connect(&address).await.unwrap();
        client.write_all(b"hello").await.unwrap();
        let mut echoed = [0u8; 5];
        client.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"hello");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn unix_bind_replaces_stale_socket_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parent.sock");
        let address = Address::Unix(path.clone());

        let first = Listener::bind(&address).await.unwrap();
        let busy = Listener::bind(&address).await.unwrap_err().to_string();
        assert!(busy.contains("another process is listening"), "{busy}");
        drop(first);

        // A socket file left behind without a listener is replaced.
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        let second = Listener::bind(&address).await.unwrap();
        drop(second);

        std::fs::write(&path, b"not a socket").unwrap();
        let error = Listener::bind(&address).await.unwrap_err().to_string();
        assert!(error.contains("is not a socket"), "{error}");
    }

    #[tokio::test]
    async fn unix_bind_names_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let address = Address::Unix(missing.join("parent.sock"));
        let error = Listener::bind(&address).await.unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "failed to listen on {address}: directory {} does not exist; create it or choose another path",
                missing.display()
            )
        );
    }

    #[tokio::test]
    async fn connect_refused_names_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let error = connect(&Address::Tcp { host: "127.0.0.1".to_owned(), port }).await.unwrap_err().to_string();
        assert!(error.contains(&format!("tcp://127.0.0.1:{port}")), "{error}");
    }

    #[test]
    fn vsock_bind_any_port() {
        // Binding needs the vsock module; where it is missing the error must
        // name the address instead of panicking.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let result = runtime.block_on(Listener::bind(&"vsock://ANY:0".parse().unwrap()));
        match result {
            Ok(listener) => assert!(matches!(listener.local_address(), Address::Vsock { .. })),
            Err(error) => assert!(error.to_string().contains("vsock://ANY:0"), "{error}"),
        }
    }
}
