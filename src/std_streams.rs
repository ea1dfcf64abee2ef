//! The process's own stdin and stdout for `sentinel stdio`, driven by the reactor (epoll) when
//! they are pipes or sockets, as they are when a client spawns the gateway.
//!
//! Why not `tokio::io::stdin()`/`stdout()`: those do every read and write on tokio's blocking
//! thread pool, because a terminal or a file cannot be polled. Each read of a client's line and
//! each write of an answer was a hand-off to another thread and back; under 16 concurrent calls
//! over stdio, 44% of the gateway's CPU went to switching threads. Pipes and sockets can be
//! polled like the stdio backends' pipes already are. Anything else (a terminal, a file,
//! `/dev/null`) keeps tokio's blocking version.
//!
//! Polling needs `O_NONBLOCK`, a flag of the open file itself, which a terminal shares with
//! the shell; that is why only pipes and sockets are switched, and why the flags are put back
//! when the last of the streams is dropped.

use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What `stdin()` gives: the polled pipe or socket, or tokio's blocking stdin.
pub type Input = Box<dyn AsyncRead + Unpin + Send>;
/// What `stdout()` gives: the polled pipe or socket, or tokio's blocking stdout.
pub type Output = Box<dyn AsyncWrite + Unpin + Send>;

/// stdin as an async reader.
pub fn stdin() -> Input {
    match pollable(libc::STDIN_FILENO) {
        Some(Kind::Pipe(fd, restore)) => match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
            Ok(r) => Box::new(Restoring { inner: r, _restore: restore }),
            Err(_) => Box::new(tokio::io::stdin()),
        },
        Some(Kind::Socket(fd, restore)) => match socket(fd) {
            Ok(s) => Box::new(Restoring { inner: s, _restore: restore }),
            Err(_) => Box::new(tokio::io::stdin()),
        },
        None => Box::new(tokio::io::stdin()),
    }
}

/// stdout as an async writer.
pub fn stdout() -> Output {
    match pollable(libc::STDOUT_FILENO) {
        Some(Kind::Pipe(fd, restore)) => match tokio::net::unix::pipe::Sender::from_owned_fd(fd) {
            Ok(w) => Box::new(Restoring { inner: w, _restore: restore }),
            Err(_) => Box::new(tokio::io::stdout()),
        },
        Some(Kind::Socket(fd, restore)) => match socket(fd) {
            Ok(s) => Box::new(Restoring { inner: s, _restore: restore }),
            Err(_) => Box::new(tokio::io::stdout()),
        },
        None => Box::new(tokio::io::stdout()),
    }
}

enum Kind {
    Pipe(OwnedFd, Restore),
    Socket(OwnedFd, Restore),
}

/// A duplicate of `fd` when it is a pipe or a stream socket (the duplicate shares the open
/// file, so reading it reads stdin; dropping it leaves fd 0 and 1 open for the rest of the
/// process).
#[allow(unsafe_code)]
fn pollable(fd: RawFd) -> Option<Kind> {
    // SAFETY: `stat` is a C struct of integers, for which all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat only writes the struct it is given; fd 0 and 1 are open for the whole process
    // (or fstat fails with EBADF, handled).
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    let kind = st.st_mode & libc::S_IFMT;
    let socket = kind == libc::S_IFSOCK && is_stream_socket(fd);
    if kind != libc::S_IFIFO && !socket {
        return None;
    }
    // With `2>&1` (or one socket for all three) stderr is the same file: non-blocking, a log
    // line written while it is full would be lost, and `eprintln!` would panic.
    // SAFETY: as above.
    let mut err: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(libc::STDERR_FILENO, &mut err) } == 0 && (err.st_dev, err.st_ino) == (st.st_dev, st.st_ino)
    {
        return None;
    }
    // SAFETY: fd 0 and 1 stay open for the whole process (fstat just saw this one open), so
    // the borrow cannot outlive the descriptor; it ends with this statement.
    let dup = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned().ok()?;
    let restore = Restore::new(fd)?;
    Some(if socket { Kind::Socket(dup, restore) } else { Kind::Pipe(dup, restore) })
}

#[allow(unsafe_code)]
fn is_stream_socket(fd: RawFd) -> bool {
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `ty`.
    let r = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE, (&mut ty as *mut libc::c_int).cast(), &mut len)
    };
    r == 0 && ty == libc::SOCK_STREAM
}

fn socket(fd: OwnedFd) -> std::io::Result<tokio::net::UnixStream> {
    // Any stream socket reads and writes like this, whatever its address family.
    let s = std::os::unix::net::UnixStream::from(fd);
    s.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(s)
}

/// The status flags of stdin and stdout as the process was given them, read once before
/// either is switched to non-blocking.
static ORIGINAL_FLAGS: OnceLock<[libc::c_int; 2]> = OnceLock::new();
/// Polled streams alive, and which of fd 0 and 1 were switched. stdin and stdout may be one
/// open file (one socket for both), whose flags one stream must not turn back while the other
/// still uses it: they are put back when the last one goes.
static LIVE: Mutex<(usize, [bool; 2])> = Mutex::new((0, [false; 2]));

/// One polled stream's hold on the original flags of stdin and stdout.
struct Restore;

impl Restore {
    #[allow(unsafe_code)]
    fn new(fd: RawFd) -> Option<Restore> {
        let original = ORIGINAL_FLAGS.get_or_init(|| {
            // SAFETY: F_GETFL takes no pointer; a closed fd gives -1, never restored.
            [libc::STDIN_FILENO, libc::STDOUT_FILENO].map(|fd| unsafe { libc::fcntl(fd, libc::F_GETFL) })
        });
        let which = usize::try_from(fd).ok().filter(|&i| i < 2 && original[i] >= 0)?;
        let mut live = LIVE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        live.0 += 1;
        live.1[which] = true;
        Some(Restore)
    }
}

impl Drop for Restore {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        let mut live = LIVE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        live.0 -= 1;
        if live.0 > 0 {
            return;
        }
        let Some(original) = ORIGINAL_FLAGS.get() else { return };
        for (fd, switched) in live.1.iter_mut().enumerate() {
            if std::mem::take(switched) {
                // SAFETY: F_SETFL takes an int; fd 0 and 1 stay open (only duplicates were closed).
                unsafe { libc::fcntl(fd as RawFd, libc::F_SETFL, original[fd]) };
            }
        }
    }
}

/// A stream that puts its file's flags back when it goes.
struct Restoring<T> {
    inner: T,
    _restore: Restore,
}

impl<T: AsyncRead + Unpin> AsyncRead for Restoring<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Restoring<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
