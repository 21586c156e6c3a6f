// A `MessageHandler` under a blocking strategy, which calls a `StreamHandler`.
use socketserver::framing::Lines;
use socketserver::reactor::{Conn, MessageHandler};
use socketserver::{Server, Tcp, Threading};

struct Upper;

impl MessageHandler for Upper {
    type Codec = Lines;

    fn codec(&self) -> Lines {
        Lines::new()
    }

    fn on_message(&self, conn: &mut Conn<'_, Lines>, line: Vec<u8>) -> anyhow::Result<()> {
        conn.send(&line.to_ascii_uppercase())?;
        Ok(())
    }
}

fn main() -> std::io::Result<()> {
    let _server = Server::new(Threading::new(), Tcp::bind("127.0.0.1:0")?, Upper)?;
    Ok(())
}
