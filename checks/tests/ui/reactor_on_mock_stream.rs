// `Reactor` over the mock transport: it has no sockets to poll (test a MessageHandler with
// `testing::MessageDriver` instead).
use socketserver::framing::RawBytes;
use socketserver::reactor::{Conn, MessageHandler};
use socketserver::testing::MockStream;
use socketserver::{Reactor, Server};

struct Echo;

impl MessageHandler for Echo {
    type Codec = RawBytes;
    fn codec(&self) -> RawBytes {
        RawBytes
    }
    fn on_message(&self, conn: &mut Conn<'_, RawBytes>, msg: Vec<u8>) -> anyhow::Result<()> {
        Ok(conn.send(&msg)?)
    }
}

fn main() -> std::io::Result<()> {
    let _server = Server::new(Reactor::new(), MockStream::new()?, Echo)?;
    Ok(())
}
