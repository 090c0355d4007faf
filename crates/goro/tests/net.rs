//! Socket wrappers: a server and its clients on loopback, with one P.

mod common;

use std::io::{Read, Write};

use common::{LIMIT, watchdog};
use goro::Runtime;
use goro::net::{TcpListener, TcpStream};

#[test]
fn echo_over_loopback_with_one_p() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let replies = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            // The server blocks in accept and read; the clients must still run on the one P.
            let server = goro::spawn(move || {
                let mut handlers = Vec::new();
                for _ in 0..8 {
                    let (mut stream, _) = listener.accept().unwrap();
                    handlers.push(
                        goro::spawn(move || {
                            let mut buf = [0u8; 5];
                            stream.read_exact(&mut buf).unwrap();
                            stream.write_all(&buf).unwrap();
                        })
                        .unwrap(),
                    );
                }
                handlers.into_iter().for_each(|h| h.join().unwrap());
            })
            .unwrap();
            let clients: Vec<_> = (0..8u8)
                .map(|i| {
                    goro::spawn(move || {
                        let mut stream = TcpStream::connect(addr).unwrap();
                        let message = [b'a' + i; 5];
                        stream.write_all(&message).unwrap();
                        let mut reply = [0u8; 5];
                        stream.read_exact(&mut reply).unwrap();
                        reply == message
                    })
                    .unwrap()
                })
                .collect();
            let ok = clients
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|&ok| ok)
                .count();
            server.join().unwrap();
            ok
        })
        .unwrap()
    });
    assert_eq!(replies, 8);
}
