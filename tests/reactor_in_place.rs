//! The Reactor's in-place path: a handler that passes bytes through (`RawBytes`, `Conn::send_vec`)
//! moves them from socket to socket without allocating per chunk — the buffer a chunk is read into
//! is the one written from, and goes back to the loop's pool for the next read.
//!
//! A file of its own: it counts the process's allocations with a global allocator.

mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use socketserver::{Reactor, Server, Tcp};
use util::{PassThrough, Serving, TIMEOUT};

/// The system allocator, counting allocations.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator, under the same contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_pass_through_handler_does_not_allocate_per_chunk() {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 2_000; // 125 MiB each way
    let server = Server::new(
        Reactor::new().threads(1),
        Tcp::bind("127.0.0.1:0").unwrap(),
        PassThrough,
    )
    .unwrap();
    let serving = Serving::start(server);
    let mut client = std::net::TcpStream::connect(serving.addr).unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut reader = client.try_clone().unwrap();
    let chunk = vec![0x5a; CHUNK];
    // One chunk there and back first: the connection, its first buffers and the pool exist.
    client.write_all(&chunk).unwrap();
    let mut back = vec![0; CHUNK];
    reader.read_exact(&mut back).unwrap();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let receiving = std::thread::scope(|scope| {
        let receiving = scope.spawn(move || {
            let mut total = 0;
            while total < CHUNK * CHUNKS {
                let n = reader.read(&mut back).unwrap();
                assert!(n > 0, "the echo ended early at {total} bytes");
                assert!(back[..n].iter().all(|&b| b == 0x5a));
                total += n;
            }
            total
        });
        for _ in 0..CHUNKS {
            client.write_all(&chunk).unwrap();
        }
        receiving.join().unwrap()
    });
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(receiving, CHUNK * CHUNKS);
    // The reads the loop made are at least the chunks sent; a copy per chunk would allocate two
    // buffers each (one per decoded chunk, one per queued reply): thousands. What is left is the
    // pool settling and the odd partial chunk moving between buffers.
    assert!(
        allocations < CHUNKS / 10,
        "{allocations} allocations for {CHUNKS} chunks of {CHUNK} bytes"
    );
    serving.finish();
}
