//! A data-plane connection (blocking sockets, a thread per channel): plain TCP, or TLS over
//! it when internal TLS is on. One value reads and writes, so a channel's single thread can
//! both send frames and read credits (a TLS session cannot be split between threads the way
//! a socket can be cloned).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use rustls::{ClientConnection, ServerConnection, StreamOwned};

use flink_rs_core::error::{Error, Result};

use super::{InternalTls, server_name};

pub(crate) enum DataStream {
    Plain(TcpStream),
    Client(Box<StreamOwned<ClientConnection, TcpStream>>),
    Server(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl DataStream {
    /// The client end of a connection to `addr` (`host:port`) over `tcp`: with `tls`, after a
    /// handshake in which both ends present certificates, bounded by `timeout`.
    pub fn connect(
        tcp: TcpStream,
        addr: &str,
        tls: Option<&InternalTls>,
        timeout: Duration,
    ) -> Result<Self> {
        let Some(tls) = tls else {
            return Ok(DataStream::Plain(tcp));
        };
        let conn = ClientConnection::new(tls.client(), server_name(super::host_of(addr))?)
            .map_err(|e| Error::Network(format!("TLS to {addr}: {e}")))?;
        let mut s = StreamOwned::new(conn, tcp);
        handshake(&mut s.conn, &mut s.sock, timeout)
            .map_err(|e| Error::Network(format!("TLS handshake with {addr}: {e}")))?;
        Ok(DataStream::Client(Box::new(s)))
    }

    /// The server end of an accepted connection: with `tls`, after a handshake that requires
    /// the client's certificate, bounded by `timeout`.
    pub fn accept(tcp: TcpStream, tls: Option<&InternalTls>, timeout: Duration) -> Result<Self> {
        let Some(tls) = tls else {
            return Ok(DataStream::Plain(tcp));
        };
        let peer = tcp
            .peer_addr()
            .map_or_else(|_| "a peer".to_string(), |a| a.to_string());
        let conn = ServerConnection::new(tls.server())
            .map_err(|e| Error::Network(format!("TLS from {peer}: {e}")))?;
        let mut s = StreamOwned::new(conn, tcp);
        handshake(&mut s.conn, &mut s.sock, timeout)
            .map_err(|e| Error::Network(format!("TLS handshake from {peer}: {e}")))?;
        Ok(DataStream::Server(Box::new(s)))
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            DataStream::Plain(s) => s,
            DataStream::Client(s) => &s.sock,
            DataStream::Server(s) => &s.sock,
        }
    }

    /// Ends this side's writing (a TLS close_notify first), keeping the reading side open.
    pub fn shutdown_write(&mut self) {
        match self {
            DataStream::Plain(_) => {}
            DataStream::Client(s) => {
                s.conn.send_close_notify();
                let _ = s.flush();
            }
            DataStream::Server(s) => {
                s.conn.send_close_notify();
                let _ = s.flush();
            }
        }
        let _ = self.tcp().shutdown(Shutdown::Write);
    }
}

/// Drives a handshake to its end on a blocking socket, with `timeout` on each read.
fn handshake<C, D>(conn: &mut C, sock: &mut TcpStream, timeout: Duration) -> std::io::Result<()>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<D>>,
    D: rustls::SideData,
{
    let before = sock.read_timeout()?;
    sock.set_read_timeout(Some(timeout))?;
    while conn.is_handshaking() {
        conn.complete_io(sock)?;
    }
    // What the handshake left to send (a client's Finished, a server's session tickets).
    while conn.wants_write() {
        conn.write_tls(sock)?;
    }
    sock.set_read_timeout(before)
}

impl Read for DataStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            DataStream::Plain(s) => s.read(buf),
            DataStream::Client(s) => s.read(buf),
            DataStream::Server(s) => s.read(buf),
        }
    }
}

impl Write for DataStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            DataStream::Plain(s) => s.write(buf),
            DataStream::Client(s) => s.write(buf),
            DataStream::Server(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            DataStream::Plain(s) => s.flush(),
            DataStream::Client(s) => s.flush(),
            DataStream::Server(s) => s.flush(),
        }
    }
}
