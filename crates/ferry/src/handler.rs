//! The event-handler style of server: register what happens on open, message and close.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::handshake::Request;
use ferry_proto::{CloseInfo, Message};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::origin::OriginPolicy;
use crate::server::accept_with_request;
use crate::socket::{Incoming, Sender};

/// Reacts to one connection's events. One handler value is made per connection.
///
/// The [`Sender`] it is given may be cloned and kept (in a chat room's member list, say) to send
/// from anywhere, at any time.
///
/// ```no_run
/// use ferry::{Handler, Message, Sender};
///
/// struct Echo;
///
/// impl Handler for Echo {
///     async fn on_message(&mut self, message: Message, sender: &Sender) {
///         let _ = sender.send(message).await;
///     }
/// }
///
/// # async fn run() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
/// ferry::serve(listener, ferry::Config::default(), || Echo).await
/// # }
/// ```
pub trait Handler: Send + 'static {
    /// The connection is open.
    fn on_open(&mut self, sender: &Sender, request: &Request) -> impl Future<Output = ()> + Send {
        let _ = (sender, request);
        async {}
    }

    /// A whole message arrived. The next one is not delivered until this returns.
    fn on_message(&mut self, message: Message, sender: &Sender) -> impl Future<Output = ()> + Send;

    /// The connection closed; the last event.
    fn on_close(&mut self, close: CloseInfo) -> impl Future<Output = ()> + Send {
        let _ = close;
        async {}
    }
}

/// Accepts WebSocket connections on `listener` forever, each driven by a handler from
/// `make_handler`. Handshake failures are answered and logged; they never stop the loop.
///
/// Browser pages from other origins are refused (403): only the server's own origin and
/// non-browser clients may connect, as [`OriginPolicy::same_origin`] says. Use [`serve_with`]
/// for another policy.
pub async fn serve<F, H>(listener: TcpListener, config: Config, make_handler: F) -> io::Result<()>
where
    F: Fn() -> H + Send + Sync + 'static,
    H: Handler,
{
    serve_with(listener, config, OriginPolicy::same_origin(), make_handler).await
}

/// [`serve`] with an origin policy of your own.
///
/// ```no_run
/// # use ferry::{Handler, Message, Sender, OriginPolicy};
/// # struct Echo;
/// # impl Handler for Echo {
/// #     async fn on_message(&mut self, message: Message, sender: &Sender) {
/// #         let _ = sender.send(message).await;
/// #     }
/// # }
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
/// let origins = OriginPolicy::allow(["https://app.example.com"])?;
/// ferry::serve_with(listener, ferry::Config::default(), origins, || Echo).await?;
/// # Ok(()) }
/// ```
pub async fn serve_with<F, H>(
    listener: TcpListener,
    config: Config,
    origins: OriginPolicy,
    make_handler: F,
) -> io::Result<()>
where
    F: Fn() -> H + Send + Sync + 'static,
    H: Handler,
{
    let config = Arc::new(config);
    let origins = Arc::new(origins);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let config = config.clone();
        let origins = origins.clone();
        let handler = make_handler();
        tokio::spawn(async move {
            match accept_with_request(stream, &config, |request| origins.check(request)).await {
                Ok((sender, mut receiver, request)) => {
                    let mut handler = handler;
                    handler.on_open(&sender, &request).await;
                    while let Some(item) = receiver.recv().await {
                        match item {
                            Incoming::Message(message) => {
                                handler.on_message(message, &sender).await
                            }
                            Incoming::Closed(close) => {
                                handler.on_close(close).await;
                                break;
                            }
                        }
                    }
                }
                Err(err) => tracing::debug!(%peer, error = %err, "handshake failed"),
            }
        });
    }
}
