//! A deadline for every phase of a connection that actix-web leaves open.
//!
//! actix-web times the first request head (`HTTP_HEADER_TIMEOUT_MS`, 408) and an idle
//! kept-alive connection (`HTTP_KEEP_ALIVE_MS`), but not the head of a later request on the
//! same connection (once its first byte arrives the keep-alive timer stops and nothing else
//! starts), nor a request whose answer the client does not read. So each connection is
//! watched here too, in one of two phases:
//!
//! - waiting for a request: at most keep-alive + header timeout (actix-web closes an idle
//!   connection at the keep-alive time, so only a client dribbling a head gets this far);
//! - a request in progress, from its head to the last byte of its answer handed to the
//!   socket: at most `HTTP_REQUEST_TIMEOUT_MS` (the body alone has its own, shorter deadline
//!   with a 408 answer: [`super::edges`]).
//!
//! Past its deadline a connection is shut down (no answer is possible any more). A sweeper
//! per HTTP worker looks once a second. The watch holds a duplicate of the socket's file
//! descriptor, so it can never shut down a descriptor that has since been reused: a watched
//! connection costs two descriptors.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use actix_web::dev::Extensions;

/// How often each worker's sweeper looks at its connections.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The two phase deadlines.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Waiting for a request head.
    pub idle: Duration,
    /// From a request's head to the end of its answer.
    pub request: Duration,
}

struct Watched {
    socket: std::net::TcpStream,
    requests_in_progress: Cell<u32>,
    /// When the current phase began.
    since: Cell<Instant>,
    deadlines: Deadlines,
}

impl Watched {
    fn overdue(&self, now: Instant) -> bool {
        let allowed = if self.requests_in_progress.get() > 0 {
            self.deadlines.request
        } else {
            self.deadlines.idle
        };
        now.saturating_duration_since(self.since.get()) > allowed
    }
}

/// The connection data that marks a connection as watched; dropped with the connection.
pub struct ConnWatch(Rc<Watched>);

/// Marks a request in progress on its connection until dropped (with the answer's body).
pub struct RequestPhase(Rc<Watched>);

impl ConnWatch {
    pub fn begin_request(&self) -> RequestPhase {
        let w = &self.0;
        w.requests_in_progress.set(w.requests_in_progress.get() + 1);
        w.since.set(Instant::now());
        RequestPhase(w.clone())
    }
}

impl Drop for RequestPhase {
    fn drop(&mut self) {
        let w = &self.0;
        w.requests_in_progress
            .set(w.requests_in_progress.get().saturating_sub(1));
        w.since.set(Instant::now());
    }
}

thread_local! {
    /// This worker's watched connections; `None` until its sweeper runs.
    static WATCHED: RefCell<Option<Vec<Weak<Watched>>>> = const { RefCell::new(None) };
}

/// `HttpServer::on_connect`: starts watching a new plain TCP connection.
pub fn on_connect(conn: &dyn Any, data: &mut Extensions, deadlines: Deadlines) {
    let Some(stream) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else {
        return;
    };
    let socket = match stream.as_fd().try_clone_to_owned() {
        Ok(fd) => std::net::TcpStream::from(fd),
        Err(e) => {
            log::warn!("connection not watched: cannot duplicate its descriptor: {e}");
            return;
        }
    };
    let watched = Rc::new(Watched {
        socket,
        requests_in_progress: Cell::new(0),
        since: Cell::new(Instant::now()),
        deadlines,
    });
    WATCHED.with_borrow_mut(|list| {
        let list = list.get_or_insert_with(|| {
            actix_web::rt::spawn(sweep());
            Vec::new()
        });
        list.push(Rc::downgrade(&watched));
    });
    data.insert(ConnWatch(watched));
}

/// Warns when the process may not open the descriptors its connections can take: two per
/// watched connection, plus a margin for pools, clients and files.
pub fn check_descriptor_budget(workers: usize, max_connections: usize) {
    let Some(limit) = open_files_limit() else {
        return;
    };
    let needed = 2 * workers * max_connections + 1024;
    if limit < needed {
        log::warn!(
            "the open-file limit is {limit}, but {workers} workers × HTTP_MAX_CONNECTIONS={max_connections} \
             can take {needed} descriptors (two per connection); raise the limit or lower the setting"
        );
    }
}

/// The soft limit on open files, from `/proc/self/limits` (Linux).
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Shuts down this worker's overdue connections, once a second, for the worker's life.
async fn sweep() {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        let cut = sweep_once(Instant::now());
        if cut > 0 {
            log::info!("closed {cut} connection(s) past their phase deadline");
        }
    }
}

fn sweep_once(now: Instant) -> usize {
    WATCHED.with_borrow_mut(|list| {
        let Some(list) = list else { return 0 };
        let mut cut = 0;
        list.retain(|weak| {
            let Some(watched) = weak.upgrade() else {
                return false;
            };
            if !watched.overdue(now) {
                return true;
            }
            // The connection's own reads and writes now fail, and actix-web drops it.
            if let Err(e) = watched.socket.shutdown(Shutdown::Both) {
                log::debug!("shutting down an overdue connection: {e}");
            }
            cut += 1;
            false
        });
        cut
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn watched(socket: std::net::TcpStream) -> Rc<Watched> {
        Rc::new(Watched {
            socket,
            requests_in_progress: Cell::new(0),
            since: Cell::new(Instant::now()),
            deadlines: Deadlines {
                idle: Duration::from_secs(10),
                request: Duration::from_secs(30),
            },
        })
    }

    #[test]
    fn the_open_files_limit_is_read() {
        assert!(open_files_limit().is_some_and(|n| n > 0));
    }

    #[test]
    fn each_phase_has_its_own_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let w = watched(client);
        let start = w.since.get();
        assert!(!w.overdue(start + Duration::from_secs(10)));
        assert!(
            w.overdue(start + Duration::from_secs(11)),
            "waiting for a head"
        );

        let phase = ConnWatch(w.clone()).begin_request();
        let begun = w.since.get();
        assert!(
            !w.overdue(begun + Duration::from_secs(29)),
            "a request may take longer"
        );
        assert!(w.overdue(begun + Duration::from_secs(31)));
        drop(phase);
        let ended = w.since.get();
        assert!(
            !w.overdue(ended + Duration::from_secs(10)),
            "a new idle phase"
        );
    }

    #[test]
    fn an_overdue_connection_is_shut_down_and_forgotten() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let w = watched(server);
        WATCHED.with_borrow_mut(|list| *list = Some(vec![Rc::downgrade(&w)]));
        assert_eq!(sweep_once(Instant::now()), 0);
        assert_eq!(sweep_once(Instant::now() + Duration::from_secs(11)), 1);
        // The client sees the connection end.
        let mut buf = [0u8; 1];
        assert_eq!(client.read(&mut buf).unwrap(), 0);
        assert_eq!(sweep_once(Instant::now() + Duration::from_secs(60)), 0);
        // A connection that ended by itself is forgotten.
        let gone = watched(client);
        WATCHED.with_borrow_mut(|list| *list = Some(vec![Rc::downgrade(&gone)]));
        drop(gone);
        assert_eq!(sweep_once(Instant::now() + Duration::from_secs(60)), 0);
        WATCHED.with_borrow(|list| assert!(list.as_ref().unwrap().is_empty()));
    }
}
