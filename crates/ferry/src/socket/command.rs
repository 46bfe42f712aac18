//! What the sending handles ask of a connection's driver, in order.

use bytes::Bytes;
use ferry_proto::{CloseCode, Message, PreparedFrame};

/// What the handles ask of the driver, in order.
#[derive(Debug)]
pub(crate) enum Command {
    /// A message, and whether it must go out uncompressed.
    Message(Message, bool),
    /// A message prepared for many connections (`Sender::try_send_prepared`).
    Prepared(PreparedFrame),
    /// The droppable messages of this marker in `Shared::droppable` (see `DropQueue`), those a
    /// sender did not drop meanwhile.
    Droppable(u64),
    Ping(Bytes),
    Close(CloseCode, String),
}
