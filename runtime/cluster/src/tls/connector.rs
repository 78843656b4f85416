//! The taskmanager's gRPC connection to the jobmanager over TLS: a connector for tonic's
//! `Endpoint::connect_with_connector` that opens TCP, then TLS with this process's
//! certificate, checking the jobmanager's.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{InternalTls, server_name};

#[derive(Clone)]
pub(crate) struct GrpcConnector {
    tls: TlsConnector,
}

impl GrpcConnector {
    pub fn new(tls: &InternalTls) -> Self {
        GrpcConnector {
            tls: TlsConnector::from(tls.client()),
        }
    }
}

type Connecting =
    Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl tower_service::Service<http::Uri> for GrpcConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
            let host = uri.host().ok_or_else(|| bad("address without a host"))?;
            let port = uri
                .port_u16()
                .ok_or_else(|| bad("address without a port"))?;
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let tcp = TcpStream::connect((bare, port)).await?;
            tcp.set_nodelay(true)?;
            let name = server_name(host).map_err(|e| bad(&e.to_string()))?;
            let stream = tls.connect(name, tcp).await?;
            Ok(TokioIo::new(stream))
        })
    }
}
