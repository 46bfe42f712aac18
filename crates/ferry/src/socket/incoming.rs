//! What a connection hands its application: whole messages, then how it closed.

use ferry_proto::{CloseInfo, Message};

/// What a [`Receiver`](super::Receiver) yields: whole messages, then the close as the last item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A whole message.
    Message(Message),
    /// The connection closed. Always the last item; `recv` returns `None` after it.
    Closed(CloseInfo),
}
