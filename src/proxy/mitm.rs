//! TLS interception: read the ClientHello, show a leaf for its SNI (or the CONNECT host when
//! there is none, e.g. an IP), then serve HTTP/1.1 or HTTP/2 (by ALPN) inside.

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::LazyConfigAcceptor;
use tracing::debug;

use crate::proxy::{forward, ConnInfo, TunnelInfo};

pub(crate) async fn serve<IO>(io: IO, conn: Arc<ConnInfo>, tunnel: TunnelInfo)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let start = match LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await {
        Ok(start) => start,
        Err(e) => {
            debug!(error = %e, "not a TLS ClientHello");
            return;
        }
    };
    let sni = start.client_hello().server_name().map(str::to_owned);
    let host = sni.unwrap_or_else(|| tunnel.host.clone());
    let config = match conn.shared.leaves.server_config(&host) {
        Ok(config) => config,
        Err(e) => {
            tracing::warn!(error = %e, tls.sni = %host, "could not mint a leaf certificate");
            return;
        }
    };
    let tls = match start.into_stream(config).await {
        Ok(tls) => tls,
        Err(e) => {
            // Usually the client doesn't trust the CA yet: tell the log reader how to fix it.
            debug!(error = %e, tls.sni = %host, "TLS handshake with the client failed (does it trust the wxsandbox CA?)");
            return;
        }
    };
    let inner = Arc::new(ConnInfo {
        shared: conn.shared.clone(),
        client: conn.client,
        tunnel: Some(tunnel),
    });
    let token = inner.shared.shutdown.token.clone();
    let service = service_fn(move |req| forward::handle(req, inner.clone()));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .preserve_header_case(true)
        .title_case_headers(true)
        .timer(TokioTimer::new())
        .header_read_timeout(super::HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                debug!(error = %e, "intercepted connection ended with an error");
            }
        }
        () = token.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
