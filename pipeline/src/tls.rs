//! TLS for Custody's HTTP: the API served over HTTPS (`[serve] tls_cert_file`/`tls_key_file`,
//! rustls), and HTTPS clients (Alertmanager, the witness, `custody export --server`) that trust
//! the system's roots plus, where one is given, a private CA.
//!
//! The server hands axum connections whose handshake is done: handshakes run on their own
//! tasks (each within [`HANDSHAKE_TIMEOUT`]), so a client that connects and says nothing holds
//! up no one; a failed handshake is logged at debug and dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections whose handshake is done, waiting for axum.
const READY: usize = 64;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing, unreadable or holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the certificate and key (they do not match, say).
    #[error("the certificate and key are not usable together: {0}")]
    Config(#[from] rustls::Error),
    /// Only one of the certificate and the key is configured.
    #[error("serve.tls_cert_file and serve.tls_key_file go together")]
    Half,
    /// The HTTP client could not be built.
    #[error("HTTPS client: {0}")]
    Client(#[from] reqwest::Error),
}

fn pem_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::Pem {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The server configuration of `cert` (PEM chain, leaf first) and `key` (PEM private key);
/// `None` when neither is set.
pub fn server_config(cert: &str, key: &str) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    match (cert.is_empty(), key.is_empty()) {
        (true, true) => return Ok(None),
        (false, false) => {}
        _ => return Err(TlsError::Half),
    }
    let (cert, key) = (Path::new(cert), Path::new(key));
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_error(cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert, e))?;
    if chain.is_empty() {
        return Err(pem_error(cert, "no certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// An HTTPS client trusting the system's roots and, if given, the CA in the PEM file
/// `ca_file`.
pub fn http_client(ca_file: Option<&Path>, timeout: Duration) -> Result<reqwest::Client, TlsError> {
    let mut builder = reqwest::Client::builder().timeout(timeout);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| pem_error(path, e))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| pem_error(path, e))? {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder.build()?)
}

/// The CA file command-line clients trust besides the system's roots: `CUSTODY_CA_FILE`.
pub fn cli_ca_file() -> Option<std::path::PathBuf> {
    std::env::var_os("CUSTODY_CA_FILE")
        .filter(|v| !v.is_empty())
        .map(Into::into)
}

/// A listener whose connections are TLS streams with the handshake done.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `listener` and runs each handshake with `config` on a task of its own, on
    /// `runtime` (the server's).
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        runtime: &tokio::runtime::Handle,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(READY);
        let tasks = runtime.clone();
        runtime.spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tasks.spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop never ends while this listener exists.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
